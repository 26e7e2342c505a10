"""Trainer (a Ray threaded actor): consumes trajectories as they stream in, publishes versioned weights.

``submit`` (called by env workers, concurrently) only files a trajectory: as its own unit, or into its GRPO
group until the group is complete. ``run`` is the training loop:

- an optimizer step uses exactly ``batch_trajectories`` trajectories (strict global batch), taken as
  ``micro_batch_trajectories`` micro-batches whose gradients accumulate; in ``aa`` each micro-batch is
  processed as soon as it has arrived, while rollouts go on;
- ``ss`` / ``as`` wait for a whole batch first (``as`` then pauses the rollout workers while it trains);
- a unit whose oldest step is more than ``max_staleness`` versions behind is dropped and counted when its
  turn comes, never used;
- after the batch (``epochs`` optimizer steps over it) the version goes up by one and the weights are
  published to every rollout worker (with ``workers.inference: env``: on the trainer's ``ControlBoard``, which
  the env workers long-poll with ``control``; ``as``'s pause / resume go there too).

The loss of a micro-batch is the configured objective (``algo.loss``, ``training.rl.losses.OBJECTIVES``): the
corrected policy gradient, or advantage-weighted flow matching for flow policies. With ``demo_coef`` > 0 every
optimizer step also fits the SFT loss on one pack of demos (``training.rl.demos``).

Every trajectory is also forwarded to the lake writer, so the lake holds exactly what the trainer received.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .ledger import Ledger
from .trajectory import Trajectory


MAX_HALVINGS = 5  # target_kl: a step still outside the trust region after this many halvings is undone
LR_FACTOR, LR_RANGE = 1.5, 10.0  # target_kl: lr's change per version, and its bounds around the configured lr


@dataclass(frozen=True)
class TrainerReport:
    version: int
    ledger: Ledger
    history: tuple[dict, ...]  # one row per published version
    busy_s: float  # computing (forward/backward/step/publish)
    started_at: float  # wall clock when run() began
    paused_s: float  # ``as``: rollouts held while training
    weights_sha256: str
    duplicates: int  # submissions of an id already received (ignored)
    received: dict  # traj_id -> (return, length, policy version of its oldest step) of every received trajectory


def _order(t: Trajectory) -> tuple:
    return (t.worker, t.incarnation, t.env_index, t.episode)


def _composition(trajs: list[Trajectory], version: int) -> dict:
    """What a batch trained at ``version`` was made of: the fraction of its steps chosen by an older version,
    its GRPO groups' spread of versions (max over members of the newest step's version minus min of the
    oldest's), and the fraction of groups whose members did not all start under one version."""
    steps = sum(t.length for t in trajs)
    groups: dict[str, list[Trajectory]] = {}
    for t in trajs:
        groups.setdefault(t.group, []).append(t)
    spread = [max(t.max_version for t in g) - min(t.min_version for t in g) for g in groups.values()]
    mixed = [len({int(t.versions[0]) for t in g}) > 1 for g in groups.values()]
    return {"stale_step_frac": float(sum(int((t.versions < version).sum()) for t in trajs) / max(steps, 1)),
            "group_version_spread": float(np.mean(spread)), "groups_mixed_start": float(np.mean(mixed))}


class Trainer:
    def __init__(self, cfg, spec, rollouts: list, writer=None):
        import torch

        from .advantages import get_advantage
        from .losses import get_correction, get_objective

        torch.manual_seed(cfg.seed)
        torch.set_num_threads(1)
        self.cfg, self.algo, self.spec = cfg, cfg.algo, spec
        self.rollouts, self.writer = rollouts, writer
        self.policy = spec.build()
        self.policy.train()
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.algo.lr, eps=1e-5)
        self.estimator, self.correction = get_advantage(cfg.algo.advantage), get_correction(cfg.algo.correction)
        self.objective = get_objective(cfg.algo.loss)
        if self.objective.requires and not hasattr(self.policy, self.objective.requires):
            raise ValueError(f"algo.loss {cfg.algo.loss!r} needs the policy's {self.objective.requires}: policy "
                             f"factory {spec.factory!r} has none")
        self._gen = torch.Generator().manual_seed(cfg.seed)  # the flow objectives' noise and times
        self._demos = None
        if cfg.algo.demo_coef > 0:
            from .demos import DemoStream

            if not hasattr(self.policy, "loss"):
                raise ValueError(f"algo.demo_coef needs the policy's SFT loss: policy factory {spec.factory!r} has none")
            a = cfg.algo
            self._demos = DemoStream(a.demo_lake, a.demo_recipe, a.demo_version, cfg.seed)
        self.version = self._published = 0
        self._cv = threading.Condition()
        self._units: deque[list[Trajectory]] = deque()
        self._groups: dict[str, list[Trajectory]] = {}
        self._received, self._seen, self._summaries = [], set(), {}
        self._consumed, self._stale, self._unused, self._staleness = [], [], [], []
        self._duplicates, self._stop, self._busy, self._started, self._paused = 0, False, 0.0, 0.0, 0.0
        self._history: list[dict] = []
        self._writer_refs: list = []
        self._error: BaseException | None = None
        self._local = cfg.workers.inference == "env"
        if self._local:
            from .acting import ControlBoard

            self.board = ControlBoard()

    def ready(self) -> bool:
        return True

    # --- intake -------------------------------------------------------------------------------------------

    def submit(self, traj: Trajectory) -> None:
        """File one finished trajectory (returns once it is accounted for)."""
        with self._cv:
            if traj.traj_id in self._seen:
                self._duplicates += 1
                return
            self._seen.add(traj.traj_id)
            self._received.append(traj.traj_id)
            self._summaries[traj.traj_id] = (traj.episode_return, traj.length, traj.min_version)
            g = self.algo.group_size
            if g == 1:
                self._units.append([traj])
            else:
                grp = self._groups.setdefault(traj.group, [])
                grp.append(traj)
                if len(grp) == g:
                    self._units.append(self._groups.pop(traj.group))
            self._cv.notify_all()
        if self.writer is not None:
            self._writer_refs.append(self.writer.submit.remote(traj))

    def _drop_stale_locked(self) -> None:
        keep = deque()
        for unit in self._units:
            if self.version - min(t.min_version for t in unit) > self.algo.max_staleness:
                self._stale.extend(t.traj_id for t in unit)
            else:
                keep.append(unit)
        self._units = keep

    def _available_locked(self) -> int:
        self._drop_stale_locked()
        return sum(len(u) for u in self._units)

    def _wait_for(self, n: int) -> bool:
        """Block until ``n`` fresh trajectories are filed (False if stopped first)."""
        with self._cv:
            while self._available_locked() < n:
                if self._stop:
                    return False
                self._cv.wait(0.1)
            return True

    def _take(self, n: int, ordered: bool) -> list[Trajectory] | None:
        """The next ``n`` fresh trajectories, whole units; ``ordered``: oldest policy version first, then by id
        (reproducible), else arrival order. Oldest first matters in ``as``: its surplus carries over a version,
        and ordering by id alone (worker first) let a newer unit of worker 0 go before an older one of worker 1,
        which then aged towards the staleness bound and could be dropped."""
        if not self._wait_for(n):
            return None
        with self._cv:
            if ordered:
                self._units = deque(sorted(self._units, key=lambda u: (min(t.min_version for t in u), _order(u[0]))))
            out = []
            while len(out) < n:
                out.extend(self._units.popleft())
            return out

    def _settle(self, trajs: list[Trajectory], used: bool) -> None:
        """Book a batch's trajectories: consumed once its optimizer step happened, else unused."""
        with self._cv:
            if used:
                self._consumed.extend(t.traj_id for t in trajs)
                self._staleness.extend(self.version - t.min_version for t in trajs)
            else:
                self._unused.extend(t.traj_id for t in trajs)

    # --- training -----------------------------------------------------------------------------------------

    def publish(self) -> int:
        """Send the current weights and version to every rollout worker (they swap between batches): only the
        acting weights when the policy can act without its critic (``policy.acting_keys``), put in Ray's object
        store once for all the rollout workers."""
        import ray

        from .policy import acting_keys

        keys = acting_keys(self.policy)
        ref = ray.put(self.policy.get_weights() if keys is None else self.policy.get_weights(keys))
        if self._local:  # env workers act themselves: they read it off the board at their next step
            self.board.publish(self.version, [ref])
        else:
            ray.get([r.set_weights.remote(self.version, ref) for r in self.rollouts])
        return self.version

    def control(self, seen: int, timeout_s: float = 10.0) -> tuple:
        """``inference: env``: the acting state once it is newer than ``seen`` (a long poll; see ``acting``)."""
        return self.board.control(seen, timeout_s)

    def halt_acting(self) -> None:
        """``inference: env``: the env workers stop at their next step (what ``rollout.stop`` does otherwise)."""
        self.board.halt()

    def _pause(self, paused: bool) -> None:
        import ray

        if self._local:
            self.board.pause(paused)
        else:
            ray.get([(r.pause if paused else r.resume).remote() for r in self.rollouts])

    def run(self) -> int:
        """Train until ``train_steps`` versions are published or ``stop()``; returns the version."""
        self._started = time.time()
        a, mode = self.algo, self.cfg.mode
        try:
            while self.version < a.train_steps and not self._stop:
                if mode != "aa" and not self._wait_for(a.batch_trajectories):
                    break
                if mode == "as":
                    paused = time.perf_counter()
                    self._pause(True)
                if not self._train_batch(ordered=mode != "aa"):
                    break
                t = time.perf_counter()
                self.publish()
                if mode == "as":
                    self._pause(False)
                    self._paused += time.perf_counter() - paused
                self._busy += time.perf_counter() - t
                with self._cv:
                    self._published = self.version
                    self._history[-1]["time"] = time.time()  # when this version reached the rollouts
                    self._cv.notify_all()
        except BaseException as e:
            self._error = e
            raise
        return self.version

    def _train_batch(self, ordered: bool) -> bool:
        a = self.algo
        n_micro = a.batch_trajectories // a.micro_batch_trajectories
        weight = a.micro_batch_trajectories / a.batch_trajectories
        self.opt.zero_grad()
        stored, metrics, trajs = [], [], []
        for _ in range(n_micro):
            mb_trajs = self._take(a.micro_batch_trajectories, ordered)
            if mb_trajs is None:  # stopped mid-batch: what was taken never reached an optimizer step
                self._settle(trajs, used=False)
                return False
            t = time.perf_counter()
            mb = self._prepare(mb_trajs)
            loss, info = self._loss(mb, first=True)
            (loss * weight).backward()
            stored.append(mb)
            metrics.append(info)
            trajs.extend(mb_trajs)
            self._busy += time.perf_counter() - t
        t = time.perf_counter()
        self._settle(trajs, used=True)  # staleness is measured against the version these gradients start from
        lr = self.opt.param_groups[0]["lr"]
        demo = [self._demo_backward()]
        halvings, kl = self._step(stored, 0.0)  # the proximal weights: KL 0
        kls = []
        for _ in range(a.epochs - 1):
            self.opt.zero_grad()
            kls = []
            for mb in stored:
                loss, info = self._loss(mb, first=False)
                (loss * weight).backward()
                if self.objective.kl:
                    kls.append(info["kl_prox"])
            demo.append(self._demo_backward())
            n, kl = self._step(stored, kl)
            halvings += n
        # how far this version's update moved the policy on its own batch: KL(proximal || current) after all but
        # the last optimizer step, read off the last pass's forward (no extra compute); what the next versions'
        # data will be off-policy by, per version of staleness (0 with one epoch). Objectives without log-probs
        # (flow_rwr) do not measure it.
        if self.objective.kl:
            for m in metrics:
                m["update_kl"] = float(np.mean(kls)) if kls else 0.0
        if self._demos is not None:
            for m in metrics:
                m["demo_loss"] = float(np.mean(demo))
        if a.target_kl > 0:
            for m in metrics:
                m.update(lr=lr, version_kl=kl, kl_halvings=float(halvings))
            self._adapt_lr(lr, backtracked=halvings > 0, version_kl=kl)
        with self._cv:
            self.version += 1
            self._record(trajs, metrics)
        self._busy += time.perf_counter() - t
        return True

    def _demo_backward(self) -> float | None:
        """With ``demo_coef`` > 0: add the SFT loss of the next demo pack (times the coefficient) to this optimizer
        step's gradient; returns that loss (None without demos)."""
        if self._demos is None:
            return None
        loss = self.policy.loss(self._demos.next(), self._gen)
        (self.algo.demo_coef * loss).backward()
        return float(loss.detach())

    def _step(self, stored: list[dict], kl_before: float) -> tuple[int, float]:
        """One optimizer step; with ``target_kl``, then held within the trust region on the batch ``stored``:
        halved back towards the weights before it while KL(proximal || current) > target_kl, undone after
        ``MAX_HALVINGS`` (the weights before it, at ``kl_before``, were within the region). Returns the halvings
        (undone: one more) and the KL of the weights it leaves (0.0 without ``target_kl``: not measured)."""
        import torch

        params = list(self.policy.parameters())
        torch.nn.utils.clip_grad_norm_(params, self.algo.max_grad_norm)
        target = self.algo.target_kl
        before = [p.detach().clone() for p in params] if target > 0 else None
        self.opt.step()
        if before is None:
            return 0, 0.0
        n = 0
        while (kl := self._kl_on(stored)) > target:
            n += 1
            with torch.no_grad():
                for p, b in zip(params, before):
                    p.copy_(b if n > MAX_HALVINGS else b + 0.5 * (p - b))
            if n > MAX_HALVINGS:
                return n, kl_before
        return n, kl

    def _kl_on(self, stored: list[dict]) -> float:
        """KL(proximal || current) on a batch's micro-batches, no gradient: the k3 estimate the objective's
        ``kl_prox`` reports, the mean of the micro-batches' means (as ``update_kl``)."""
        import torch

        kls = []
        with torch.no_grad():
            for mb in stored:
                log_r = self.policy.evaluate_actions(mb["obs"], mb["raw"])[0] - mb["logp_prox"]
                kls.append(float((log_r.exp() - 1 - log_r).mean()))
        return float(np.mean(kls))

    def _adapt_lr(self, lr: float, backtracked: bool, version_kl: float) -> None:
        """``target_kl``: the next version's lr (see ``AlgoConfig.target_kl``)."""
        a = self.algo
        if backtracked:
            lr /= LR_FACTOR
        elif version_kl < a.target_kl / 2:
            lr *= LR_FACTOR
        lr = min(max(lr, a.lr / LR_RANGE), a.lr * LR_RANGE)
        for g in self.opt.param_groups:
            g["lr"] = lr

    def _prepare(self, trajs: list[Trajectory]) -> dict:
        """Tensors of a micro-batch, with advantages (critic values under the current weights)."""
        import torch

        names = self.policy.input_features
        obs = {n: torch.as_tensor(np.concatenate([t.obs[n] for t in trajs])) for n in names}
        mb = {"obs": obs, "raw": torch.as_tensor(np.concatenate([t.raw_actions for t in trajs])),
              "logp_behav": torch.as_tensor(np.concatenate([t.logprobs for t in trajs])), "trajs": trajs}
        values = None
        if self.estimator.uses_critic:
            with torch.no_grad():
                v = self.policy.value(obs)
                v_last = self.policy.value({n: torch.as_tensor(np.stack([t.final_obs[n] for t in trajs])) for n in names})
            splits = np.cumsum([t.length for t in trajs])[:-1]
            values = [np.append(x, last) for x, last in zip(np.split(v.numpy(), splits), v_last.numpy())]
        adv, ret = self.estimator.fn(trajs, values, self.algo.gamma, self.algo.lam)
        adv = np.concatenate(adv)
        if self.estimator.uses_critic and len(adv) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        mb["adv"] = torch.as_tensor(adv, dtype=torch.float32)
        mb["ret"] = torch.as_tensor(np.concatenate(ret), dtype=torch.float32) if ret is not None else None
        mb["episode_return"] = torch.as_tensor(np.concatenate([np.full(t.length, t.episode_return) for t in trajs]),
                                               dtype=torch.float32)  # per row: its whole trajectory's return
        return mb

    def _loss(self, mb: dict, first: bool):
        """The configured objective (``algo.loss``) on one micro-batch."""
        return self.objective.fn(self.policy, mb, self.algo, correction=self.correction, first=first,
                                 generator=self._gen)

    def _record(self, trajs: list[Trajectory], metrics: list[dict]) -> None:
        steps = sum(t.length for t in trajs)
        prev = self._history[-1] if self._history else {"consumed_steps": 0, "consumed_trajectories": 0}
        st = self._staleness[-len(trajs):]
        self._history.append({
            "version": self.version, "time": time.time(),
            "consumed_steps": prev["consumed_steps"] + steps,
            "consumed_trajectories": prev["consumed_trajectories"] + len(trajs),
            "reward_per_step": float(sum(t.rewards.sum() for t in trajs) / max(steps, 1)),
            "mean_return": float(np.mean([t.episode_return for t in trajs])),
            "success_rate": float(np.mean([t.success for t in trajs])),
            "staleness_mean": float(np.mean(st)), "staleness_max": int(max(st)),
            "dropped_stale": len(self._stale),
            **_composition(trajs, self.version - 1),
            **{k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]},
        })

    # --- control ------------------------------------------------------------------------------------------

    def wait_version(self, version: int, timeout_s: float = 600.0) -> int:
        """Block until ``version`` is published (or the trainer stopped / failed); returns the version."""
        deadline = time.time() + timeout_s
        with self._cv:
            while self._published < version:
                if self._stop or self._error is not None or time.time() > deadline:
                    break
                self._cv.wait(0.1)
            return self._published

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def finish(self) -> TrainerReport:
        """Stop, count what is still buffered as dropped-unused, wait for the lake writer to have everything."""
        import ray

        self.stop()
        with self._cv:
            for unit in self._units:
                self._unused.extend(t.traj_id for t in unit)
            for grp in self._groups.values():  # incomplete GRPO groups (e.g. a worker died mid-group)
                self._unused.extend(t.traj_id for t in grp)
            self._units.clear()
            self._groups.clear()
        ray.get(self._writer_refs)
        ledger = Ledger(tuple(self._received), tuple(self._consumed), tuple(self._stale), tuple(self._unused),
                        tuple(self._staleness))
        return TrainerReport(self.version, ledger, tuple(self._history), self._busy, self._started, self._paused,
                             self.weights_sha256(), self._duplicates, dict(self._summaries))

    def weights_sha256(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.policy.get_weights().items()):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()

    def save(self, path: str, lineage: dict) -> str:
        from training.checkpoint import save

        return save(path, self.policy, factory=self.spec.factory, config=self.spec.config, step=self.version,
                    lineage=lineage)
