"""Env worker (a Ray actor): one Gymnasium vector env, its own loop, no global barrier.

Each step it sends the observations of its running envs to its rollout worker (or, with ``workers.inference:
env``, runs the acting policy itself: ``training.rl.acting``), steps the vector env with the actions (after a
long-tail latency draw, see ``latency``), and ships every finished trajectory to the trainer, waiting for the acknowledgement: once ``submit`` returns, the trajectory is the trainer's to
consume or to count as dropped, even if this process dies the next instant.

Seeds: env ``i``'s ``j``-th episode is episode ``n = j * envs + i`` of the worker; its env seed is a pure
function of (run seed, worker, incarnation, n // group_size), so ``group_size`` consecutive episodes share
a seed (a GRPO group). A restarted worker is a new incarnation: new seeds, new trajectory ids.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from .batcher import ActRequest
from .trajectory import Trajectory


@dataclass(frozen=True)
class WorkerReport:
    worker: int
    incarnation: int
    produced: tuple[str, ...]  # trajectory ids handed to the trainer by this run() call
    vector_steps: int
    env_steps: int  # rows stepped for running episodes
    busy_s: float  # stepping the simulator (latency included) and bookkeeping
    wait_act_s: float  # waiting for actions (inference: env: acting in this process, and its waits)
    wait_submit_s: float  # waiting for the trainer's acknowledgement
    slept_s: float  # modelled simulator latency (part of busy_s)
    wall_s: float
    infer_s: float = 0.0  # inference: env: this process's forward passes (part of wait_act_s)


def env_seed(seed: int, worker: int, incarnation: int, group: int) -> int:
    return int(np.random.SeedSequence([seed, worker, incarnation, group, 7]).generate_state(1)[0] % (2**31 - 1))


class EnvWorker:
    def __init__(self, worker_id: int, cfg, rollout, trainer, spec=None):
        """``rollout``: the rollout worker serving this worker, or with ``workers.inference: env`` the ``ss``
        barrier (``acting.Lockstep``) or None; ``spec``: the policy to act with (``inference: env``)."""
        from .envs import get_family, make_vector_env
        from .latency import LatencyWrapper

        self.id, self.cfg, self.rollout, self.trainer = worker_id, cfg, rollout, trainer
        self.local = None
        if cfg.workers.inference == "env":
            from .acting import LocalActor

            self.local = LocalActor(spec, trainer, barrier=rollout)
        self.family = get_family(cfg.env.id)
        self.k = cfg.workers.envs_per_worker
        self.task = cfg.env.task or self.family.default_task
        vec = make_vector_env(cfg.env.id, self.k, image=cfg.policy.image, max_episode_steps=cfg.env.max_episode_steps,
                              kwargs=cfg.env.kwargs)
        self.env = LatencyWrapper(vec, lambda: 0.0)  # the sampler is per incarnation (see _start_incarnation)
        space = self.env.single_action_space
        self._idle_action = ((space.low + space.high) / 2).astype(np.float32)  # for envs done with their round
        self.incarnation: int | None = None
        self.steps_total = 0

    def ready(self) -> int:
        return os.getpid()

    def _start_incarnation(self, incarnation: int) -> None:
        from .latency import make_sampler

        cfg = self.cfg
        self.incarnation = incarnation
        self.episodes = [0] * self.k  # per env, across run() calls of this incarnation
        self.row_rng = np.random.default_rng([cfg.seed, self.id, incarnation, 1])
        self.env.sampler = make_sampler(cfg.latency.dist, cfg.latency.params, seed=[cfg.seed, self.id, incarnation, 2],
                                        cap_ms=cfg.latency.cap_ms)

    def _episode_seed(self, i: int) -> tuple[int, str]:
        n = self.episodes[i] * self.k + i
        g = n // self.cfg.algo.group_size
        return env_seed(self.cfg.seed, self.id, self.incarnation, g), f"w{self.id}.i{self.incarnation}.g{g}"

    def run(self, incarnation: int, episodes_per_env: int | None = None, version: int = 0) -> WorkerReport:
        """Run episodes until the rollout worker says stop (``episodes_per_env=None``) or until every env has
        finished ``episodes_per_env`` more episodes (a synchronous round). ``version``: the policy version the
        round must act with (``inference: env``; a rollout worker has it already when the round starts)."""
        import ray

        from .envs import to_features

        if incarnation != self.incarnation:
            self._start_incarnation(incarnation)
        k, t_start = self.k, time.perf_counter()
        busy = wait_act = wait_submit = 0.0
        infer0 = self.local.infer_s if self.local is not None else 0.0
        if self.local is not None and episodes_per_env is not None:
            self.local.require(version)
        slept0 = self.env.slept_s
        produced, vsteps, esteps = [], 0, 0
        todo = [episodes_per_env] * k if episodes_per_env is not None else None
        seeds_groups = [self._episode_seed(i) for i in range(k)]
        obs, _ = self.env.reset(seed=[s for s, _ in seeds_groups])
        obs = to_features(obs, self.family)
        bufs = [self._new_buffer(*seeds_groups[i]) for i in range(k)]
        active = np.ones(k, bool)
        while active.any():
            idx = np.flatnonzero(active)
            seeds = self.row_rng.integers(0, 2**62, size=k)  # drawn for all envs: the stream stays aligned
            req = ActRequest(self.id, {n: x[idx] for n, x in obs.items()}, seeds[idx])
            t = time.perf_counter()
            reply = self.local.act(req) if self.local is not None else ray.get(self.rollout.act.remote(req))
            t1 = time.perf_counter()
            wait_act += t1 - t
            if reply.stop:
                break
            actions = np.repeat(self._idle_action[None], k, axis=0)
            actions[idx] = reply.actions
            nxt, reward, term, trunc, info = self.env.step(actions)
            vsteps, esteps, self.steps_total = vsteps + 1, esteps + len(idx), self.steps_total + 1
            self._maybe_die(incarnation)
            nxt = to_features(nxt, self.family)
            now = time.time()
            success = np.asarray(info["is_success"], bool) if "is_success" in info else None  # unknown: not a success
            finished = []
            for j, i in enumerate(idx):
                b = bufs[i]
                b["started_at"] = b["started_at"] or now
                b["obs"].append({n: x[i] for n, x in obs.items()})
                for key, val in (("actions", reply.actions[j]), ("raw", reply.raw[j]), ("logprob", reply.logprob[j]),
                                 ("value", reply.value[j]), ("reward", reward[i]), ("version", reply.version)):
                    b[key].append(val)
                if term[i] or trunc[i]:
                    finished.append(i)
            t2 = time.perf_counter()
            busy += t2 - t1
            restart = np.zeros(k, bool)
            for i in finished:
                t_fin = time.perf_counter()
                traj = self._finish(bufs[i], i, {n: x[i] for n, x in nxt.items()}, bool(term[i]), bool(trunc[i]),
                                    bool(success[i]) if success is not None else False)
                t3 = time.perf_counter()
                busy += t3 - t_fin
                ray.get(self.trainer.submit.remote(traj))
                wait_submit += time.perf_counter() - t3
                produced.append(traj.traj_id)
                self.episodes[i] += 1
                if todo is not None:
                    todo[i] -= 1
                if todo is None or todo[i] > 0:
                    restart[i] = True
                else:
                    active[i] = False
            t4 = time.perf_counter()
            obs = nxt
            # a synchronous round's env that is done (its last episode over, or its idle steps ended one) is
            # still stepped with the idle action until the round ends: autoreset is off, so stepping a finished
            # env is an error; reset it unseeded (what it does until the next round is never used)
            rearm = ~active & (np.asarray(term, bool) | np.asarray(trunc, bool)) & active.any()
            if restart.any() or rearm.any():
                sg = {i: self._episode_seed(i) for i in np.flatnonzero(restart)}
                fresh, _ = self.env.reset(seed=[sg[i][0] if i in sg else None for i in range(k)],
                                          options={"reset_mask": restart | rearm})
                fresh = to_features(fresh, self.family)
                for i, (s, g) in sg.items():
                    bufs[i] = self._new_buffer(s, g)
                    for n in obs:
                        obs[n][i] = fresh[n][i]
            busy += time.perf_counter() - t4
        if todo is not None and self.cfg.mode == "ss" and self.rollout is not None:
            ray.get(self.rollout.leave.remote(self.id))  # lockstep: this worker's round is over
        return WorkerReport(self.id, incarnation, tuple(produced), vsteps, esteps, busy, wait_act, wait_submit,
                            self.env.slept_s - slept0, time.perf_counter() - t_start,
                            (self.local.infer_s - infer0) if self.local is not None else 0.0)

    def _maybe_die(self, incarnation: int) -> None:
        f = self.cfg.fault
        if f.worker == self.id and incarnation == 0 and self.steps_total >= f.after_steps:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash, as a segfaulting simulator would: no cleanup

    @staticmethod
    def _new_buffer(seed: int, group: str) -> dict:
        return {"seed": seed, "group": group, "started_at": 0.0, "obs": [], "actions": [], "raw": [], "logprob": [],
                "value": [], "reward": [], "version": []}

    def _finish(self, b: dict, i: int, final_obs: dict, terminated: bool, truncated: bool, success: bool) -> Trajectory:
        obs = {n: np.stack([o[n] for o in b["obs"]]) for n in b["obs"][0]}
        return Trajectory(
            traj_id=f"w{self.id}.i{self.incarnation}.e{i}.n{self.episodes[i]}", worker=self.id,
            incarnation=self.incarnation, env_index=i, episode=self.episodes[i], group=b["group"], env_seed=b["seed"],
            task=self.task, obs=obs, final_obs={n: np.asarray(x).copy() for n, x in final_obs.items()},
            actions=np.asarray(b["actions"], np.float32), raw_actions=np.asarray(b["raw"], np.float32),
            logprobs=np.asarray(b["logprob"], np.float32), values=np.asarray(b["value"], np.float32),
            rewards=np.asarray(b["reward"], np.float32), versions=np.asarray(b["version"], np.int64),
            terminated=terminated, truncated=truncated, success=success, started_at=b["started_at"],
            finished_at=time.time())
