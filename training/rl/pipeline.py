"""The driver: env workers -> rollout workers -> trainer (-> lake writer) as Ray actors, in one of three modes.

- ``ss`` synchronous baseline: rounds in which every env runs one episode, all envs stepping in lockstep
  (one batched forward per global step); then the trainer trains on the round(s); repeat.
- ``as`` asynchronous rollout: env workers run free (dynamic batching, no per-step barrier); the trainer
  pauses them while it trains on each global batch (episodes in flight wait, they are not drained).
- ``aa`` fully asynchronous: rollouts never pause; the trainer consumes micro-batches as they stream in and
  publishes a version after each global batch; data beyond ``max_staleness`` versions is dropped (counted).

With ``workers.inference: env`` the env workers run the acting policy themselves (no rollout worker actors;
weights, pause and stop come from the trainer's board: ``training.rl.acting``), with the same semantics per mode.

A dead env worker is restarted by Ray (``max_restarts``); the driver starts it again as a new incarnation
and the run goes on. The run ends after ``algo.train_steps`` published versions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from .config import RLConfig, to_dict, validate
from .env_worker import WorkerReport
from .lake_writer import WriterReport
from .ledger import Ledger
from .rollout import RolloutStats


@dataclass(frozen=True)
class RunReport:
    run_id: str
    mode: str
    seed: int
    versions: int  # published versions (global batches trained on)
    wall_s: float  # first env step requested -> last version published
    consumed_steps: int  # env steps in trajectories the learner used
    consumed_trajectories: int
    steps_per_s: float  # learner-consumed env steps per second of wall_s
    produced: int  # trajectories the trainer received
    dropped_stale: int
    dropped_unused: int
    staleness_mean: float  # over consumed trajectories, in versions
    staleness_max: int
    idle: dict  # stage -> fraction of wall_s it was not working (env workers: averaged over workers); also
    #             env_waiting_for_actions and rollouts_paused (``as``), as fractions of wall_s
    restarts: int  # env worker deaths survived
    weights_sha256: str
    history: tuple[dict, ...]  # one row per version: time, consumed steps, reward per step, staleness, losses
    ledger: Ledger
    trajectories: dict  # traj_id -> (return, length, oldest policy version) of every trajectory received
    workers: tuple[WorkerReport, ...]
    rollouts: tuple[RolloutStats, ...]
    lake: WriterReport | None
    checkpoint: str | None
    affinity: dict | None = None  # actor ("env_worker.0", "rollout.0", "trainer", "lake_writer") -> CPUs its threads may use


@dataclass
class _Actors:
    trainer: object
    rollouts: list
    workers: list
    writer: object | None

    def rollout_of(self, w: int):
        """The rollout worker (or, ``inference: env``, the ``ss`` barrier) serving env worker ``w``; None: none."""
        return self.rollouts[w % len(self.rollouts)] if self.rollouts else None

    def all(self) -> list:
        return [self.trainer, *self.rollouts, *self.workers] + ([self.writer] if self.writer is not None else [])


def rollout_actors(cfg: RLConfig) -> int:
    """Rollout worker actors started: ``workers.rollout_workers``; with ``inference: env`` none, except one
    barrier actor for ``ss`` with several env workers (its per-step lockstep)."""
    w = cfg.workers
    if w.inference == "env":
        return 1 if cfg.mode == "ss" and w.env_workers > 1 else 0
    return w.rollout_workers


def required_cpus(cfg: RLConfig) -> float:
    p, w = cfg.placement, cfg.workers
    return (w.env_workers * p.env_worker.num_cpus + rollout_actors(cfg) * p.rollout.num_cpus + p.trainer.num_cpus
            + (p.lake_writer.num_cpus if cfg.lake.uri else 0.0))


def batch_rows(cfg: RLConfig, rollout: int) -> int:
    """Rollout worker ``rollout``'s batch size: ``batching.max_batch_size``, capped at the rows its env workers
    can have waiting at once (their envs): a batch that could never fill would otherwise wait out
    ``batch_timeout_ms`` every step (with one env worker of 2 envs: 2 ms per step for nothing)."""
    w = cfg.workers
    served = sum(1 for i in range(w.env_workers) if i % w.rollout_workers == rollout)
    return max(1, min(cfg.batching.max_batch_size, served * w.envs_per_worker))


def _check_resources(cfg: RLConfig, wait_s: float = 15.0) -> None:
    """Raise RuntimeError if the placement cannot fit; waits a little for a previous run's actors to go."""
    import ray

    need, total = required_cpus(cfg), ray.cluster_resources().get("CPU", 0.0)
    if need > total + 1e-9:
        raise RuntimeError(f"the placement needs {need:g} CPUs but the Ray cluster has {total:g}: lower "
                           f"placement.*.num_cpus or the worker counts (actors would wait forever)")
    deadline = time.time() + wait_s
    while ray.available_resources().get("CPU", 0.0) < need - 1e-9:
        if time.time() > deadline:
            have = ray.available_resources().get("CPU", 0.0)
            raise RuntimeError(f"the placement needs {need:g} CPUs but only {have:g} of {total:g} are free "
                               f"(other Ray work is running)")
        time.sleep(0.2)


def _create(cfg: RLConfig, spec, run_id: str, fps: float, robot_type: str, storage_options) -> _Actors:
    import ray

    from .acting import Lockstep
    from .affinity import pinned
    from .env_worker import EnvWorker
    from .lake_writer import LakeWriter
    from .rollout import RolloutWorker
    from .trainer import Trainer

    def opts(r):
        return {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "resources": dict(r.resources) or None}

    p = cfg.placement
    # each actor pins its process to placement.<actor>.cpus first thing (nothing pinned when empty)
    LakeWriter, RolloutWorker = pinned(LakeWriter, p.lake_writer.cpus), pinned(RolloutWorker, p.rollout.cpus)
    Trainer, EnvWorker = pinned(Trainer, p.trainer.cpus), pinned(EnvWorker, p.env_worker.cpus)
    writer = None
    if cfg.lake.uri:
        writer = ray.remote(LakeWriter).options(**opts(p.lake_writer), max_concurrency=1).remote(
            cfg.lake.uri, cfg.lake, cfg.env.id, run_id, fps, robot_type, storage_options)
    w = cfg.workers
    local = w.inference == "env"
    if local:  # env workers act themselves; ss with several of them keeps its per-step barrier
        rollouts = [ray.remote(pinned(Lockstep, p.rollout.cpus)).options(**opts(p.rollout)).remote()
                    for _ in range(rollout_actors(cfg))]
    else:
        rollouts = [ray.remote(RolloutWorker).options(**opts(p.rollout)).remote(
            spec, batch_rows(cfg, r), cfg.batching.batch_timeout_ms, lockstep=cfg.mode == "ss")
            for r in range(w.rollout_workers)]
    # inference: env: each env worker (and a dead one's, until it times out) keeps one long poll of the trainer
    concurrency = 8 + (2 * w.env_workers if local else 0)
    trainer = ray.remote(Trainer).options(**opts(p.trainer), max_concurrency=concurrency).remote(
        cfg, spec, [] if local else rollouts, writer)
    workers = [ray.remote(EnvWorker).options(**opts(p.env_worker), max_restarts=w.max_restarts,
                                             max_task_retries=0).remote(
        i, cfg, rollouts[i % len(rollouts)] if rollouts else None, trainer, spec if local else None)
               for i in range(w.env_workers)]
    return _Actors(trainer, rollouts, workers, writer)


class _Fleet:
    """The env workers' ``run`` calls, and their restarts: a worker whose call fails with a dead actor is a new
    incarnation once Ray has restarted it (probed with ``ready``), and gets the same call again."""

    def __init__(self, workers: list, max_restarts: int, on_death=None, on_start=None):
        self.workers, self.max = workers, max_restarts
        self.version = 0  # the policy version a synchronous round acts with (passed to run)
        self.incarnation, self.deaths = [0] * len(workers), [0] * len(workers)
        self.on_death, self.on_start = on_death or (lambda w: None), on_start or (lambda w: None)
        self.calls: dict = {}  # ObjectRef -> (worker, "run" | "probe", episodes_per_env)

    def start(self, w: int, episodes: int | None) -> None:
        self.calls[self.workers[w].run.remote(self.incarnation[w], episodes, self.version)] = (w, "run", episodes)

    @property
    def total_deaths(self) -> int:
        return sum(self.deaths)

    def handle(self, ref, restart: bool = True) -> WorkerReport | None:
        """Settle one finished call: a report, or None (a death handled, a probe answered)."""
        import ray

        w, kind, episodes = self.calls.pop(ref)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            if kind == "run":
                self.deaths[w] += 1
                if self.deaths[w] > self.max:
                    raise RuntimeError(f"env worker {w} died {self.deaths[w]} times (max_restarts={self.max})") from e
                self.incarnation[w] += 1
                self.on_death(w)
            elif not isinstance(e, ray.exceptions.ActorUnavailableError):
                raise RuntimeError(f"env worker {w} could not be restarted: {e}") from e
            else:
                time.sleep(0.1)  # still restarting
            if restart:
                self.calls[self.workers[w].ready.remote()] = (w, "probe", episodes)
            return None
        if kind == "probe":
            if restart:
                self.on_start(w)
                self.start(w, episodes)
            return None
        return out


def _remaining(deadline: float) -> float:
    left = deadline - time.time()
    if left <= 0:
        raise TimeoutError("RL run exceeded timeout_s")
    return left


def _run_ss(cfg: RLConfig, a: _Actors, deadline: float) -> tuple[list[WorkerReport], int]:
    import ray

    envs = cfg.workers.env_workers * cfg.workers.envs_per_worker
    rounds = cfg.algo.batch_trajectories // envs
    reports: list[WorkerReport] = []
    # lockstep bookkeeping: a dead worker leaves the barrier; its restarted incarnation joins it again
    fleet = _Fleet(a.workers, cfg.workers.max_restarts,
                   on_death=lambda w: a.rollout_of(w) and ray.get(a.rollout_of(w).leave.remote(w)),
                   on_start=lambda w: a.rollout_of(w) and ray.get(a.rollout_of(w).join.remote(w)))
    trainer_ref = a.trainer.run.remote()
    for step in range(cfg.algo.train_steps):
        fleet.version = step  # published before this round (version 0 by run, then each step's)
        for _ in range(rounds):
            ray.get([r.expect.remote([w for w in range(len(a.workers)) if a.rollout_of(w) is r]) for r in a.rollouts])
            for w in range(len(a.workers)):
                fleet.start(w, 1)
            while fleet.calls:
                done, _ = ray.wait(list(fleet.calls), num_returns=1, timeout=min(_remaining(deadline), 5.0))
                for ref in done:
                    rep = fleet.handle(ref)
                    if rep is not None:
                        reports.append(rep)
        while ray.get(a.trainer.wait_version.remote(step + 1, min(_remaining(deadline), 5.0))) < step + 1:
            done, _ = ray.wait([trainer_ref], timeout=0)
            if done:
                ray.get(trainer_ref)  # raises the trainer's error, if any
                raise RuntimeError(f"trainer stopped at version {ray.get(a.trainer.wait_version.remote(0))}")
    ray.get(trainer_ref)
    return reports, fleet.total_deaths


def _run_async(cfg: RLConfig, a: _Actors, deadline: float) -> tuple[list[WorkerReport], int]:
    import ray

    reports: list[WorkerReport] = []
    fleet = _Fleet(a.workers, cfg.workers.max_restarts)
    trainer_ref = a.trainer.run.remote()
    for w in range(len(a.workers)):
        fleet.start(w, None)
    while True:
        done, _ = ray.wait([trainer_ref, *fleet.calls], num_returns=1, timeout=min(_remaining(deadline), 1.0))
        if trainer_ref in done:
            ray.get(trainer_ref)
            break
        for ref in done:
            rep = fleet.handle(ref)
            if rep is not None:
                reports.append(rep)  # a loop only ends on stop; keep its report anyway
    ray.get([r.stop.remote() for r in a.rollouts])  # workers see stop at their next request
    if cfg.workers.inference == "env":
        ray.get(a.trainer.halt_acting.remote())  # ... or at their next step
    for ref in list(fleet.calls):
        rep = fleet.handle(ref, restart=False)
        if rep is not None:
            reports.append(rep)
    return reports, fleet.total_deaths


def run(cfg: RLConfig, *, storage_options: dict | None = None) -> RunReport:
    """Run the pipeline described by ``cfg``; returns a RunReport. Starts Ray in-process if needed.

    Raises RuntimeError if the placement does not fit the Ray cluster or an env worker dies more than
    ``workers.max_restarts`` times, TimeoutError past ``timeout_s``.
    """
    import ray

    from lake._ray import ensure_ray

    from .envs import env_fps, get_family, make_env
    from .policy import policy_spec

    validate(cfg)
    ensure_ray()
    _check_resources(cfg)
    spec = policy_spec(cfg)
    spec.build()  # fail here, with the reason, rather than in every actor
    env = make_env(cfg.env.id, image=cfg.policy.image, kwargs=cfg.env.kwargs)
    fps = env_fps(env)
    env.close()
    run_id = f"{cfg.mode}-s{cfg.seed}-{uuid.uuid4().hex[:8]}"
    a = _create(cfg, spec, run_id, fps, get_family(cfg.env.id).robot_type, storage_options)
    deadline = time.time() + cfg.timeout_s
    try:
        ray.get([x.ready.remote() for x in a.all()], timeout=_remaining(deadline))
        ray.get(a.trainer.publish.remote())  # version 0 everywhere before the first request
        t_start = time.time()
        workers, deaths = (_run_ss if cfg.mode == "ss" else _run_async)(cfg, a, deadline)
        affinity = _affinity(a)
        rollout_stats = tuple(ray.get([r.stats.remote() for r in a.rollouts]))
        tr = ray.get(a.trainer.finish.remote())
        lake_rep = ray.get(a.writer.flush.remote()) if a.writer is not None else None
        ckpt = None
        if cfg.checkpoint:
            lineage = {"lake_uri": cfg.lake.uri or "", "lake_version": lake_rep.lake_version if lake_rep else None,
                       "lake_tag": None, "recipe_hash": None, "packed_table": None,
                       "extra": {"source": "rl", "run_id": run_id, "mode": cfg.mode, "env_id": cfg.env.id,
                                 "max_episode_steps": cfg.env.max_episode_steps,
                                 "task": cfg.env.task or get_family(cfg.env.id).default_task, "config": to_dict(cfg)}}
            ckpt = ray.get(a.trainer.save.remote(cfg.checkpoint, lineage))
    finally:
        for x in a.all():
            ray.kill(x, no_restart=True)
    tr.ledger.check()
    return _report(cfg, run_id, t_start, tr, workers, rollout_stats, lake_rep, deaths, ckpt, affinity)


def _affinity(a: _Actors) -> dict:
    """Each live actor's CPUs, read at the end of the run (every thread it started by then counted)."""
    import ray

    named = {"trainer": a.trainer, **{f"rollout.{i}": r for i, r in enumerate(a.rollouts)},
             **{f"env_worker.{i}": w for i, w in enumerate(a.workers)},
             **({"lake_writer": a.writer} if a.writer is not None else {})}
    out = {}
    for name, actor in named.items():
        try:
            out[name] = ray.get(actor.cpu_affinity.remote(), timeout=30)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):  # a worker killed by a fault test
            pass
    return out


def _report(cfg, run_id, t_start, tr, workers, rollout_stats, lake_rep, deaths, ckpt, affinity=None) -> RunReport:
    wall = max(tr.history[-1]["time"] - t_start, 1e-9) if tr.history else 0.0
    steps = tr.history[-1]["consumed_steps"] if tr.history else 0
    st, n = tr.ledger.staleness, cfg.workers.env_workers

    def frac(busy: float, actors: int = 1) -> float:
        return min(busy / max(actors * wall, 1e-9), 1.0)

    idle = {"env_workers": 1 - frac(sum(r.busy_s for r in workers), n),
            "env_waiting_for_actions": frac(sum(r.wait_act_s for r in workers), n),
            "rollout": 1 - frac(sum(r.batcher.busy_s for r in rollout_stats), max(len(rollout_stats), 1)),
            "trainer": 1 - frac(tr.busy_s), "rollouts_paused": frac(tr.paused_s)}
    if lake_rep is not None:
        idle["lake_writer"] = 1 - frac(lake_rep.busy_s)
    led = tr.ledger
    return RunReport(
        run_id=run_id, mode=cfg.mode, seed=cfg.seed, versions=tr.version, wall_s=wall, consumed_steps=steps,
        consumed_trajectories=len(led.consumed), steps_per_s=steps / wall if wall else 0.0, produced=len(led.received),
        dropped_stale=len(led.dropped_stale), dropped_unused=len(led.dropped_unused),
        staleness_mean=float(sum(st) / len(st)) if st else 0.0, staleness_max=max(st) if st else 0, idle=idle,
        restarts=deaths, weights_sha256=tr.weights_sha256, history=tr.history, ledger=led, trajectories=tr.received,
        workers=tuple(workers), rollouts=rollout_stats, lake=lake_rep, checkpoint=ckpt, affinity=affinity or {})


def summary(rep: RunReport) -> str:
    """A few human-readable lines."""
    idle = ", ".join(f"{k} {v:.0%}" for k, v in rep.idle.items())
    lines = [f"run {rep.run_id}: {rep.versions} versions, {rep.consumed_steps} env steps consumed in {rep.wall_s:.1f} s "
             f"= {rep.steps_per_s:.0f} steps/s",
             f"trajectories: {rep.produced} produced, {rep.consumed_trajectories} consumed, {rep.dropped_stale} "
             f"dropped stale, {rep.dropped_unused} unused at the end; staleness mean {rep.staleness_mean:.2f} "
             f"max {rep.staleness_max}; env worker restarts {rep.restarts}",
             f"idle: {idle}"]
    if rep.history:
        h = rep.history[-1]
        lines.append(f"last batch: reward/step {h['reward_per_step']:.4f}, return {h['mean_return']:.3f}, "
                     f"success {h['success_rate']:.0%}")
    if rep.lake is not None:
        lines.append(f"lake: {len(rep.lake.trajectories)} trajectories in {rep.lake.commits} commits, "
                     f"{rep.lake.compactions} compactions, version {rep.lake.lake_version}")
    if rep.checkpoint:
        lines.append(f"checkpoint: {rep.checkpoint}")
    return "\n".join(lines)

