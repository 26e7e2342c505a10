# .venv/bin/python benchmarks/rl_sims.py [--learner small|sim-sized] [--train-steps 4] [--inference rollout|env] [--out DIR] [--record]
# .venv/bin/python benchmarks/rl_sims.py --eval DIR [--episodes 50] [--record]   (closed loop, not timed)
"""RL-VLA3's throughput claim on a real rendered simulator: ss vs as vs aa on LIBERO, no modelled latency.

The three runs use ``configs/sims/libero_rl.yaml`` and differ only in ``mode``: the same env workers x envs
(LIBERO ``libero_object/3``, both 64x64 cameras rendered every step by the adapter's fast settings), the same
learner (policy, batch, micro-batches, epochs, versions), the same lake writer. Each run is timed from the
first action request to the last published version (Ray start-up, actor creation and the LIBERO builds are
the same for all modes and not in it). ``--learner``:

- ``small``: the config as written: a 64-unit actor-critic with a small CNN on agentview; 2 env workers (one
  per core) x 2 envs. The learner costs far less than the simulator.
- ``sim-sized``: RL-VLA3's regime on 2 cores: the simulator holds one core (1 env worker x 2 envs, software
  rendering on one thread), the learner the other (one torch thread), and the learner is sized so that one
  update costs about what the simulator spends on its batch (the same policy 4096 units wide, 10 PPO epochs over
  a batch of 2 trajectories = 80 env steps; lr 3e-5, a tenth of the 64-wide config's: Adam's step moves a
  layer's output in proportion to its width, and at 3e-4 aa's 1-2-version-old data was far off-policy): as
  rendered simulators on CPUs and a VLA learner on GPUs there, two resources of comparable cost. ``ss`` then
  runs them one after the other, ``aa`` overlaps them.

**Why each side slows down beside the other (session 10, issue 16).** In aa the simulator (8.8 -> 10.0 s) and the
learner (9.0 -> 10.1 s busy per version, run 7) each slow 11-13% against ss. Measured:
(1) ``benchmarks/contend.py`` pins two processes to their own cores and compares CPU-ms per unit of work alone and
side by side: two rendered LIBERO envs beside the sim-sized learner's update loop (4096 wide, weights + Adam state
4x the 32 MiB L3) cost the same CPU per step as alone (0.92-1.12x over rounds, median 0.97x), the learner beside
them 1.01-1.04x; a 256 MiB memory copy, L2-resident matmuls or a pure-Python loop beside the simulator: medians
1.00-1.08x, round-to-round noise +-10%: no measurable shared-core (SMT) or memory-bandwidth effect on the simulator
alone. But the simulator plus the rollout's 4096-wide inference in one process (what a core does when both sit on
it) costs 5-9% more CPU per step beside the learner, both parts (presumably the inference evicts the simulator's
L2, whose refill then comes from an L3 the learner keeps flushing).
(2) In the pipeline, aa must also fit the small stages on the two busy cores: per version the rollout's inference
~1.1 CPU-s, the lake writer 0.15-0.2, this driver 0.1-0.2 and Ray's own processes 0.3-0.5 (columns "driver" and
"Ray's own" of the cores-used table): ~1.7 CPU-s that ss runs on its idle core for free. In aa the stage they
preempt waits (its busy wall exceeds its CPU), and the simulator's CPU per step rises too (run 7: simulator CPU
9.3 -> 10.0 s, busy wall 8.8 -> 10.0 s per version: the inference on its core, above; migrations between cores
not measured separately). Simulator + learner + these, ~20.5 CPU-s per version on 2 cores, bound aa at ~1.9x
at steady state here.
(3) Pinning (``--pin`` / ``placement.<actor>.cpus``, the same in every mode) did not help in the runs made
(8-version locked runs under other engineers' nice-19 load 5-11): unpinned 1.69x whole / 1.91x steady; simulator
+ inference on core 0 with learner + lake writer + driver on core 1: 1.57x / 1.75x (the simulator's CPU per
version 9.1 -> 10.7 s in aa: the effect in (1)); simulator + lake writer + driver on core 0 with learner +
inference on core 1: 1.31x / 1.54x (the env worker waits 2.6 s per version, not 1.2, for actions computed on the
learner's busy core). One run each, and a second unpinned run under heavier load gave 1.99x / 2.23x (its ss slowed
more than its aa): loaded runs differ by +-0.3x, so only the last layout's loss is clear. The benchmark keeps the
OS placement. A cache-friendlier learner (narrower, more rows per weight read) was not tried: the learner's memory
traffic does not slow the simulator by itself, and a new shape would need its own lr / equal-learning check.
(4) Session 11 (branch aaquiet) cut the small stages, in every mode: the rollout acts without the critic (the
behaviour critic's values were never used: the trainer recomputes them) and gets only the acting weights (68 MB per
publish, not 136; one ``ray.put`` for all rollout workers); a rollout batch is capped at the rows its env workers can
send (aa waited out the 2 ms batch timeout every step for a second request that could never come); Ray's log
monitor re-globs every 5 s, not 0.1 s; this driver samples every 1 s. Per version (run of 07:30 UTC, load 1.3-4.2):
inference 1.1 -> 0.6 CPU-s, waiting for actions 25 / 30 -> 16 / 17 ms per vector step (ss / aa), driver 0.1-0.2 ->
0.04-0.08, Ray's own 0.3-0.5 -> 0.18-0.27; both modes ran ~10% faster (ss 4.26 -> 4.70, aa 7.27 -> 7.92 env
steps/s against the base commit locked right after it, same load) but the ratio did not move: aa / ss 1.69x whole,
1.74x steady vs the base's 1.70x / 1.74x (the learner shrank with its publish, 8.8 -> 7.8 s per version, which ss
pays in full); a second run of this branch (08:19 UTC, load 2-4) gave 1.78x / 1.85x, its paired base run was
disturbed by other jobs (aa got 1.52 cores: 1.45x), so the spread, not a gain, is what is shown. Mesa's ``LP_NUM_THREADS=0``
(rasterize in the calling thread) gave the same pixels (bitwise) and the same CPU per step as 1, alone and beside a
busy core, so it stays 1. What is left in aa: each side still slows beside the other (simulator 204 -> 225 ms per
vector step, learner 7.8 -> 9.3 s busy per version at +7% CPU: the rest is time preempted by the small stages).
(5) Session 12 (branch colo): ``--inference env`` (``workers.inference: env``, ``training.rl.acting``) runs the
acting policy inside the env worker process: no rollout actor, no Ray call per step (the weights, ``as``'s pause
and the end of a run come through a long poll of the trainer, checked with ``ray.wait(timeout=0)``, ~0.04 ms of
CPU per step); the same forward code, so ss reproduces the rollout path (tests). Paired locked runs (same command,
``--inference env`` then ``--inference rollout`` = main's path, 24 versions, 10 epochs), all under other helpers'
nice-19 load 3-15 (autogroup off): pair 1 (12:47 / 13:04 UTC): env ss 3.91 / aa 6.90 env steps/s = **1.76x whole,
1.82x steady** against rollout ss 3.77 / aa 5.96 = 1.58x / 1.64x. Per vector step, waiting for actions (env: the
forward itself) 20 / 25 -> 12.5 / 14 ms (ss / aa); per version the rollout's 0.8 CPU-s is gone and the env
worker's CPU rose 0.3 (the forward moved there), Ray's own 0.40 -> 0.36 (ss). But rollout1's aa got only 1.62 of
the 2 cores (load 11.8 -> 13.4) against env1's 1.80, and its simulator slowed to 298 ms per vector step (env1:
255): most of that pair's ratio gap is load, not code. A second pair (12 versions, so
its whole-run ratio has more pipeline fill) ran only its env half (ended 13:36 UTC, load 3-11): ss 3.91 / aa 7.04 =
1.80x whole, 1.98x steady; its rollout half could not run before the session's deadline. Reading: the hop is gone
(7.7 ms less per vector step in ss, ss ~4% faster) and the env runs gave 1.76-1.80x whole / 1.82-1.98x steady
(session 11's rollout runs: 1.69-1.78x / 1.74-1.85x), but with one clean-load pair missing, a ratio gain from
this option is suggested, not shown; ss reward per step (0.0509, second half of 24 versions) equals the rollout
path's (0.0509-0.0511 over sessions 11-12), aa 0.0485 vs rollout 0.0476 (equal within noise). The default stays
``rollout`` (the env option is not shown strictly better in every mode: ``as`` was not timed). With it, the
column "rollout" of the cores table is 0: the forward is in the env worker's CPU.
The quiet pair the lead ran after (14:00-14:17 UTC, 12 versions, load 0.3-2.3, env first) measured env 1.69x /
1.78x and rollout 1.80x / 1.95x: aa equal (6.50 vs 6.49 steps/s), ss faster with env (3.84 vs 3.60: no hop to wait
for), so the option lowers the ratio while speeding ss; the loaded runs' reading was load.

Every process of the runs (env workers, rollout, trainer, lake writer, this driver) gets one thread for math and
for rendering (``OMP_NUM_THREADS=1``, ``LP_NUM_THREADS=1``: Mesa's llvmpipe otherwise starts a rasterizer thread
per core), in all modes; the trainer and rollout workers also call ``torch.set_num_threads(1)``. Each actor
process's CPU time is sampled during the runs, so the table shows the cores each stage really used.

Reported per mode: learner-consumed env steps/s and the ratio to ``ss``, also at steady state (after the first
published version: aa's pipeline fill, one simulator batch with nothing to overlap, left out); the breakdown (per vector step of an
env worker: simulating+rendering, waiting for actions; the trainer's busy seconds per version; CPU-seconds of
work per wall second across stages = the overlap, at most 2 on 2 cores); a render-vs-physics split of one
LIBERO step measured in-process before the runs; and the learning curve (dense reward per env step of each
consumed batch vs consumed env steps). ``--eval DIR`` then runs the closed-loop evaluation of the initial and
the final policies (``lake eval``'s code, success over N episodes, recorded in a lake with its lineage).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _report import Sampler, machine, record  # noqa: E402

CONFIG = HERE.parent / "configs" / "sims" / "libero_rl.yaml"
SECTION = "Async RL on LIBERO (rendered)"
EVAL_SECTION = "LIBERO in the loop"
GOAL = 1.8
MODES = ("ss", "as", "aa")
# --pin (sim-sized, the same in every mode; off by default, see the module doc): the simulator and the inference
# serving it on core 0 (they take turns: the env worker waits while its actions are computed), the learner and the
# lake writer on core 1, with this driver and the Ray processes it starts (they inherit its CPUs)
PIN = {"placement.env_worker.cpus": [0], "placement.rollout.cpus": [0], "placement.trainer.cpus": [1],
       "placement.lake_writer.cpus": [1]}
DRIVER_CPUS = [1]
LEARNERS = {
    "small": {},
    # learner CPU per version ~ simulator CPU per batch (80 rendered steps, ~9 CPU-s): a 4096-wide actor-critic
    # (34M parameters) costs ~0.7 CPU-s per epoch over the batch on one thread, plus ~1.5 s to publish its weights
    # (a smoke run with 12 epochs measured 10.6 CPU-s of learner per version against 8.6 of simulator).
    # lr 3e-5, not the 64-wide config's 3e-4 (Adam moves each weight ~lr per step whatever the gradient's scale, so
    # one lr is a larger step for a wider layer): at 3e-4 the 4096-wide policy drifted 0.5-3.7 nats per step within 2 versions and aa's stale data
    # went off-policy (aa's reward per step 0.005 vs ss's 0.037 over versions 9-16); at 3e-5 ss learns no slower and
    # aa's behaviour gap stays 0.2-0.4 (0.042 vs 0.051, seed 0; seed 1, 12 versions: 0.051 vs 0.052). Same compute
    # per version: same regime
    "sim-sized": {"policy.hidden": 4096, "algo.epochs": 10, "algo.lr": 3e-5, "workers.env_workers": 1,
                  "workers.envs_per_worker": 2, "algo.batch_trajectories": 2, "algo.micro_batch_trajectories": 1,
                  "algo.train_steps": 10},
}
REGIME = (
    "**The regime, and why it is RL-VLA3's.** RL-VLA3 runs rendered simulators on CPU cores and the VLA (learner "
    "and inference) on GPUs: two separate resources whose costs per batch are of the same order, so a synchronous "
    "loop leaves each idle while the other works, and full asynchrony overlaps them (its +59...+127%). This "
    "machine has 2 CPU cores and no GPU, so the regime is rebuilt with one core for each side: one env worker (2 "
    "LIBERO envs stepped in one process, both cameras rendered by Mesa's llvmpipe on one thread) and one learner "
    "(one torch thread), sized so that an update costs about the simulator's batch; inference (batch of 2) and the "
    "lake writer are small. `ss`: simulate a batch, then learn on it (each side waits for the other); `as`: the "
    "same here (one env worker: no per-step barrier to remove; rollouts pause while the learner trains); `aa`: "
    "the simulator keeps stepping with the newest published weights while the learner trains (staleness <= 2). "
    "The most overlap can give is 2x, less aa's pipeline fill (its first batch has nothing to overlap). The "
    "small-learner run above is the other regime: a learner costing ~1% of the simulator, where asynchrony can "
    "only remove the per-step barrier.")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LP_NUM_THREADS": "1"}
STAGES = ("EnvWorker", "RolloutWorker", "Trainer", "LakeWriter")
OTHERS = ("Driver", "Ray")  # this process; the rest of what Ray started (raylet, GCS, dashboard, idle workers)


class StageCPU(Sampler):
    """Samples the CPU time (user + system, all threads) and thread count of every process of this run, every
    ``interval`` s: the Ray actors by class (``ray::EnvWorker...``), this driver (``Driver``: the run loop and
    this sampler) and everything else Ray started for it (``Ray``: raylet, GCS, dashboard, idle workers);
    ``window(t0, t1)`` gives each stage's CPU-seconds per wall second over [t0, t1] (1.0 = one core busy all the
    time). A process is classified once (its command line and ancestry are the costly reads)."""

    def __init__(self, interval: float = 1.0):
        super().__init__(interval)
        self.series, self.threads, self.nice = {}, {}, {}
        self._stage: dict = {}  # pid -> stage, or None for a process that is not this run's

    def _classify(self, p, me: int) -> str | None:
        import psutil

        if p.pid == me:
            return "Driver"
        try:
            # only this run's processes (descendants of the Ray node this process started), not another Ray
            # session's on the same machine (a test suite running beside the timing); checked once per process
            if p.pid not in self._stage and me not in {q.pid for q in p.parents()}:
                return None
            cmd = " ".join(p.cmdline() or [])
        except psutil.Error:
            return None
        stage = cmd[5:].split(".")[0].split(" ")[0] if cmd.startswith("ray::") else None
        return stage if stage in STAGES else "Ray"

    def _sample(self):
        import psutil

        me = os.getpid()
        while not self._stop.is_set():
            now = time.time()
            for p in psutil.process_iter():
                if p.pid not in self._stage or self._stage[p.pid] == "Ray":  # an idle worker may become an actor
                    self._stage[p.pid] = self._classify(p, me)
                stage = self._stage[p.pid]
                if stage is None:
                    continue
                try:
                    c, n, nice = p.cpu_times(), p.num_threads(), p.nice()
                except psutil.Error:
                    continue
                key = (p.pid, stage)
                self.series.setdefault(key, (stage, []))[1].append((now, c.user + c.system))
                self.threads[stage] = max(self.threads.get(stage, 0), n)
                self.nice[stage] = max(self.nice.get(stage, -20), nice)
            self._stop.wait(self.interval)

    def window(self, t0: float, t1: float) -> dict:
        out = {s: 0.0 for s in STAGES + OTHERS}
        for stage, pts in self.series.values():
            ts, cs = np.array([t for t, _ in pts]), np.array([c for _, c in pts])
            if len(ts) > 1 and ts[0] <= t1 and ts[-1] >= t0:
                out[stage] += float(np.interp(t1, ts, cs) - np.interp(t0, ts, cs)) / max(t1 - t0, 1e-9)
        return out


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def config(learner: str, train_steps: int | None, seed: int | None = None, epochs: int | None = None,
           lr: float | None = None, pin: bool = False, inference: str | None = None):
    from training.rl import load_config

    over = dict(LEARNERS[learner])
    if inference:  # where the acting policy runs (workers.inference), the same in every mode
        over["workers.inference"] = inference
    if pin:  # every actor on a fixed core (PIN), in every mode
        over.update(PIN)
    if train_steps:
        over["algo.train_steps"] = train_steps
    if epochs:  # the learner's cost per version (sim-sized: match the env worker's time per batch)
        over["algo.epochs"] = epochs
    if lr is not None:  # the learner's step size (the same in every mode)
        over["algo.lr"] = lr
    if seed is not None:  # run seed: env init states, policy init and sampling
        over["seed"] = seed
    return load_config(CONFIG, over)


def step_split(env_id: str, steps: int = 20) -> dict:
    """ms per LIBERO step with both cameras rendered vs state only (random actions, same sim settings), wall and
    this process's CPU; and ms per reset (rendered)."""
    from training.rl.envs import make_env

    out = {}
    rng = np.random.default_rng(0)
    for label, image in (("rendered", True), ("physics", False)):
        env = make_env(env_id, image=image)
        try:
            env.reset(seed=0)
            env.step(np.zeros(7, np.float32))  # the first render makes the GL context
            t, c = time.perf_counter(), time.process_time()
            for _ in range(steps):
                env.step(rng.uniform(-1, 1, 7).astype(np.float32))
            out[label] = 1000 * (time.perf_counter() - t) / steps
            out[f"{label}_cpu"] = 1000 * (time.process_time() - c) / steps
            if image:
                t = time.perf_counter()
                for s in range(1, 4):
                    env.reset(seed=s)
                out["reset"] = 1000 * (time.perf_counter() - t) / 3
        finally:
            env.close()
    out["render"] = out["rendered"] - out["physics"]
    return out


def summarize(rep, cfg, cpu: StageCPU | None = None) -> dict:
    """The JSON-able parts of a RunReport, plus the breakdown."""
    w = rep.workers
    vsteps, esteps = max(sum(x.vector_steps for x in w), 1), max(sum(x.env_steps for x in w), 1)
    busy_env = sum(x.busy_s for x in w)
    # the forward passes: a rollout worker's batches, or the env workers' own (workers.inference: env)
    busy_roll = sum(r.batcher.busy_s for r in rep.rollouts) + sum(x.infer_s for x in w)
    busy_tr = (1 - rep.idle["trainer"]) * rep.wall_s
    busy_lake = (1 - rep.idle.get("lake_writer", 1.0)) * rep.wall_s
    return {
        "mode": rep.mode, "run_id": rep.run_id, "steps_per_s": rep.steps_per_s, "wall_s": rep.wall_s,
        "versions": rep.versions, "consumed_steps": rep.consumed_steps, "produced": rep.produced,
        "dropped_stale": rep.dropped_stale, "dropped_unused": rep.dropped_unused,
        "staleness_mean": rep.staleness_mean, "staleness_max": rep.staleness_max, "idle": rep.idle,
        "history": [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in rep.history],
        "start": rep.history[-1]["time"] - rep.wall_s if rep.history else 0.0,
        "env_ms_per_vector_step": 1000 * busy_env / vsteps, "env_ms_per_env_step": 1000 * busy_env / esteps,
        "wait_act_ms_per_vector_step": 1000 * sum(x.wait_act_s for x in w) / vsteps,
        "wait_submit_s": sum(x.wait_submit_s for x in w),
        "trainer_s_per_version": busy_tr / max(rep.versions, 1), "rollout_busy_s": busy_roll,
        "overlap": (busy_env + busy_roll + busy_tr + busy_lake) / max(rep.wall_s, 1e-9),
        "lake_version": rep.lake.lake_version if rep.lake else None, "checkpoint": rep.checkpoint,
        "envs": cfg.workers.env_workers * cfg.workers.envs_per_worker,
        **steady(rep.history),
        **({"cpu": cpu.window(rep.history[-1]["time"] - rep.wall_s, rep.history[-1]["time"]),
            "threads": dict(cpu.threads), "nice": dict(cpu.nice)} if cpu is not None and rep.history else {}),
    }


def steady(history) -> dict:
    """Consumed env steps/s from the first published version to the last (the pipeline fill left out)."""
    if len(history) < 2:
        return {"steady_steps_per_s": None}
    a, b = history[0], history[-1]
    return {"steady_steps_per_s": (b["consumed_steps"] - a["consumed_steps"]) / max(b["time"] - a["time"], 1e-9)}


def run_all(args) -> Path:
    import ray

    from lake._ray import ensure_ray
    from training.rl import run, summary, with_overrides

    cfg = config(args.learner, args.train_steps, args.seed, args.epochs, args.lr, pin=args.pin,
                 inference=args.inference)
    pinned = any(getattr(cfg.placement, a).cpus for a in ("env_worker", "rollout", "trainer", "lake_writer"))
    if pinned:  # before Ray starts: its raylet and GCS inherit this process's CPUs
        from training.rl.affinity import pin

        pin(DRIVER_CPUS)
    out = Path(args.out or f"/tmp/bench-rl-sims-{args.learner}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0, before = time.perf_counter(), load()
    split = step_split(cfg.env.id)
    print(f"LIBERO step: {split['rendered']:.0f} ms rendered, {split['physics']:.0f} ms physics only", flush=True)
    for attempt in range(3):  # Ray's raylet start-up wait is hard-coded (30 s): a busy machine can miss it
        try:
            ensure_ray(num_cpus=2)
            break
        except Exception as e:  # noqa: BLE001 - ray raises a bare Exception for this
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
            print(f"Ray start-up timed out (load {load()}); retrying", flush=True)
            ray.shutdown()
    runs = {}
    for mode in args.modes.split(","):
        before_mode = load()
        print(f"--- {mode} (load {before_mode}) ...", flush=True)
        c = with_overrides(cfg, {"mode": mode, "lake.uri": str(out / f"lake-{mode}"), "checkpoint": str(out / f"{mode}.pt"),
                                 **({"algo.max_staleness": 0} if mode == "ss" else {})})
        with StageCPU() as cpu:
            rep = run(c)
        rep.ledger.check()
        print(summary(rep), flush=True)
        runs[mode] = {**summarize(rep, c, cpu), "load": f"{before_mode} -> {load()}", "affinity": rep.affinity}
        print(breakdown(runs[mode]), flush=True)
        (out / "runs.partial.json").write_text(json.dumps(runs, indent=1))  # a later failure keeps these
    ray.shutdown()
    meta = {"learner": args.learner, "overrides": LEARNERS[args.learner], "train_steps": cfg.algo.train_steps,
            "epochs": cfg.algo.epochs, "lr": cfg.algo.lr, "inference": cfg.workers.inference,
            "pinned": ({a: list(getattr(cfg.placement, a).cpus) for a in ("env_worker", "rollout", "trainer",
                                                                          "lake_writer")} | {"driver": DRIVER_CPUS}
                       if pinned else None),
            "load_before": before, "load_after": load(), "seconds": time.perf_counter() - t0, "split": split,
            "machine": machine(), "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "backend": os.environ.get("MUJOCO_GL", ""), "config": _cfg_line(cfg),
            "threads_env": {k: os.environ.get(k) for k in ONE_THREAD}, "autogroup": autogroup(),
            "command": ("flock /work/notes/bench.lock " if bench_locked() else "")
            + ".venv/bin/python benchmarks/rl_sims.py " + " ".join(sys.argv[1:])}
    (out / "runs.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    print(f"wrote {out / 'runs.json'}")
    return out


def breakdown(r: dict) -> str:
    """One line of where a mode's time went (printed after each run)."""
    versions = max(r["versions"], 1)
    cpu = r.get("cpu", {})
    return (f"{r['mode']}: {r['steps_per_s']:.2f} env steps/s ({r['steady_steps_per_s'] or 0:.2f} at steady state); "
            f"per version: simulator {r['env_ms_per_env_step'] * r['consumed_steps'] / versions / 1000:.1f} s busy, "
            f"learner {r['trainer_s_per_version']:.1f} s busy; CPU-s per version: "
            + ", ".join(f"{k} {v * r['wall_s'] / versions:.1f}" for k, v in cpu.items()) + "; cores used: "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + f" (threads {r.get('threads', {})}, nice "
            f"{r.get('nice', {})})")


def autogroup() -> str:
    """``kernel.sched_autogroup_enabled`` (1: CPU is shared per session first, ``nice`` acts within a session)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "?"


def bench_locked(path: str = "/work/notes/bench.lock") -> bool:
    """True when the shared benchmark lock is held (by the ``flock`` this run was started under)."""
    import fcntl

    try:
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def _cfg_line(cfg) -> str:
    w, a, p = cfg.workers, cfg.algo, cfg.policy
    return (f"{cfg.env.id} (reward {cfg.env.kwargs.get('reward', 'sparse')}, {cfg.env.max_episode_steps} steps), "
            f"{w.env_workers} env workers x {w.envs_per_worker} envs, "
            f"{'inference in the env workers' if w.inference == 'env' else f'{w.rollout_workers} rollout workers'}, "
            f"policy hidden {p.hidden}"
            f"{' + CNN on agentview ' + str(p.image_size) + 'x' + str(p.image_size) if p.image else ''}, "
            f"PPO-{a.advantage} ({a.correction}, lr {a.lr:g}), global batch {a.batch_trajectories} trajectories, "
            f"micro-batch {a.micro_batch_trajectories}, {a.epochs} epochs, {a.train_steps} versions, max staleness "
            f"{a.max_staleness} (ss: 0), seed {cfg.seed}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False)
    for row, (learner, res) in zip(axes, results.items()):
        for mode, r in res["runs"].items():
            steps = [h["consumed_steps"] for h in r["history"]]
            row[0].plot(steps, [h["reward_per_step"] for h in r["history"]], marker="o", ms=3, label=mode)
            row[1].plot([0.0] + [h["time"] - r["start"] for h in r["history"]], [0] + steps, marker="o", ms=3,
                        label=f"{mode}: {r['steps_per_s']:.1f} steps/s")
        row[0].set(xlabel="learner-consumed env steps", ylabel="dense reward per env step",
                   title=f"{learner}: sample efficiency")
        row[1].set(xlabel="wall time (s)", ylabel="learner-consumed env steps", title=f"{learner}: throughput")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(res: dict) -> list[str]:
    runs = res["runs"]
    ss = runs["ss"]["steps_per_s"]
    has_cpu = all("cpu" in r for r in runs.values())
    head = ("| mode | consumed env steps/s | vs ss | " + ("steady state: steps/s, vs ss | " if has_cpu else "")
            + "wall s | steps | dropped stale / unused | staleness mean / max | "
            "env worker ms per vector step: sim+render / waiting for actions | trainer s per version | "
            "CPU-s of work per wall s | " + ("cores used (process CPU-s per wall s): env worker / rollout / trainer / "
                                             "lake writer / driver / Ray's own | " if has_cpu else "")
            + "idle env / trainer | reward/step, first / last batch | load average before -> after |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    sss = runs["ss"].get("steady_steps_per_s") or 1e-9
    for mode, r in runs.items():
        h = r["history"]
        extra = (f"{r['steady_steps_per_s']:.2f}, {r['steady_steps_per_s'] / sss:.2f}x | " if has_cpu else "")
        cores = (" / ".join(f"{r['cpu'].get(k, 0):.2f}" for k in STAGES + OTHERS) + " | " if has_cpu else "")
        rows.append(f"| {mode} | {r['steps_per_s']:.2f} | {r['steps_per_s'] / ss:.2f}x | {extra}{r['wall_s']:.0f} | "
                    f"{r['consumed_steps']} | {r['dropped_stale']} / {r['dropped_unused']} | "
                    f"{r['staleness_mean']:.2f} / {r['staleness_max']} | {r['env_ms_per_vector_step']:.0f} / "
                    f"{r['wait_act_ms_per_vector_step']:.0f} | {r['trainer_s_per_version']:.1f} | {r['overlap']:.2f} | {cores}"
                    f"{r['idle']['env_workers']:.0%} / {r['idle']['trainer']:.0%} | "
                    f"{h[0]['reward_per_step']:.4f} / {h[-1]['reward_per_step']:.4f} | {r.get('load', '')} |")
    return rows


def bound(res: dict) -> str:
    """What perfect overlap could give: ss serializes (simulate on the env workers' cores) then (train)."""
    runs, m = res["runs"], res["meta"]
    ss = runs["ss"]
    n_workers = 1 if m["overrides"].get("workers.env_workers") == 1 else 2
    versions = max(ss["versions"], 1)
    sim = ss["env_ms_per_env_step"] / 1000 * ss["consumed_steps"] / versions  # one core's sim seconds per version
    learn = ss["trainer_s_per_version"]
    t_ss = sim / n_workers + learn
    t_aa = max(sim / n_workers, learn, (sim + learn) / 2)
    return (f"Per version, `ss` measured {sim:.1f} s of simulator time (spread over {n_workers} env worker"
            f"{'s' if n_workers > 1 else ''}) and {learn:.1f} s of learner; overlapping the learner with the "
            f"simulators can then give at most {t_ss / t_aa:.2f}x on 2 cores ((sim / workers + learn) / max(sim / "
            f"workers, learn, (sim + learn) / 2)); the rest of what aa gains is the per-step barrier and the wait "
            f"for actions it removes (the env workers' idle time under ss).")


def record_results(dirs: list[Path], args) -> None:
    """Print (and with ``--record`` write) one ``### <learner> learner[, <label>]`` subsection per run folder
    (``label``: an optional field of its runs.json meta); other subsections already in RESULTS.md are kept."""
    blocks = {}
    for d in dirs:
        res = json.loads((d / "runs.json").read_text())
        learner, label = res["meta"]["learner"], res["meta"].get("label")
        heading = f"{learner} learner" + (f", {label}" if label else "")
        slug = "" if learner == "small" else "_" + re.sub(r"[^a-z0-9]+", "-", f"{learner} {label or ''}".lower()).strip("-")
        png = HERE / f"rl_sims{slug}.png"
        plot({heading: res}, png)
        m, runs = res["meta"], res["runs"]
        sp = m["split"]
        command = m.get("command") or (f".venv/bin/python benchmarks/rl_sims.py --learner {learner} --train-steps "
                                       f"{m['train_steps']} --out DIR` (timed runs), then `--from DIR --record")
        lines = [f"Command: `{command}`",
                 f"Machine: {m['machine']}, MUJOCO_GL={m['backend'] or 'default'}; load average before / after: "
                 f"{m['load_before']} / {m['load_after']} (machine shared with other engineers); {m['date']}; "
                 f"{m['seconds']:.0f} s in all"
                 + (f"; every process one thread ({', '.join(f'{k}={v}' for k, v in m['threads_env'].items())})"
                    if m.get("threads_env") else ""),
                 f"Setup: {m['config']}. Every trajectory lands in a lake (states, actions, rewards; no video).",
                 f"One LIBERO step in-process: {sp['rendered']:.0f} ms with both cameras rendered, {sp['physics']:.0f} "
                 f"ms physics only: rendering is {sp['render'] / sp['rendered']:.0%} of a step"
                 + (f"; {sp['rendered_cpu']:.0f} ms of CPU per rendered step; a reset {sp['reset']:.0f} ms"
                    if "reset" in sp else "") + ".", ""]
        if learner == "sim-sized":
            lines += [REGIME, ""]
        lines += table(res)
        lines += ["", sim_sized_text(res) if learner == "sim-sized" else small_text(res), "",
                  f"![reward per step vs env steps, and throughput]({png.name})"]
        blocks[heading] = "\n".join(lines)
    body = merge_subsections(blocks)
    print(body)
    if args.record:
        record(SECTION, body)


def small_text(res: dict) -> str:
    runs = res["runs"]
    aa = runs["aa"]["steps_per_s"] / runs["ss"]["steps_per_s"]
    busy = {mode: 1 - r["idle"]["env_workers"] for mode, r in runs.items()}
    sim = {mode: r["env_ms_per_env_step"] for mode, r in runs.items()}
    return (f"Measured: aa / ss {aa:.2f}x, as / ss {runs['as']['steps_per_s'] / runs['ss']['steps_per_s']:.2f}x "
            f"in consumed env steps/s. But the simulator itself ran at " + ", ".join(
                f"{m} {v:.0f}" for m, v in sim.items()) + " ms per env step (wall, stepping+rendering; "
            f"~90 ms of CPU each), so most of that ratio is the background load changing between the runs, "
            f"not asynchrony. What asynchrony itself buys is the env workers' busy fraction: " + ", ".join(
                f"{m} {v:.0%}" for m, v in busy.items()) + f", i.e. aa / ss {busy['aa'] / busy['ss']:.2f}x and "
            f"as / ss {busy['as'] / busy['ss']:.2f}x at equal simulator speed (goal >= {GOAL}x: "
            f"{'met' if busy['aa'] / busy['ss'] >= GOAL else 'NOT met'}). " + bound(res))


def sim_sized_text(res: dict) -> str:
    """The measured ratios, the costs they come from, what perfect overlap would give, and the learning curves."""
    runs = res["runs"]
    ss = runs["ss"]
    n = max(ss["versions"], 1)
    sim = ss["env_ms_per_env_step"] * ss["consumed_steps"] / n / 1000  # simulator s per version (one core)
    learn = ss["trainer_s_per_version"]
    cpu_v = {k: v * ss["wall_s"] / n for k, v in ss.get("cpu", {}).items()}  # CPU-s per version, by stage
    ideal_steady = (sim + learn) / max(sim, learn)
    ideal_all = n * (sim + learn) / (sim + (n - 1) * max(sim, learn) + learn)  # aa fills, then overlaps
    ratio = {m: r["steps_per_s"] / ss["steps_per_s"] for m, r in runs.items()}
    steady_ratio = {m: (r["steady_steps_per_s"] or 0) / (ss["steady_steps_per_s"] or 1e-9) for m, r in runs.items()}
    cores = {m: r.get("cpu", {}) for m, r in runs.items()}
    curve = "; ".join(f"{m}: " + ", ".join(f"{h['consumed_steps']}: {h['reward_per_step']:.4f}" for h in r["history"])
                      for m, r in runs.items())
    met = ratio.get("aa", 0) >= GOAL
    got = sum(cores.get("aa", {}).values())
    shared = (
        f" **Why aa did not overlap here:** during aa the run's four stages together got {got:.2f} of the 2 cores, "
        "so the simulator and the learner time-shared about one core instead of holding one each. This kernel "
        f"schedules by session first (`kernel.sched_autogroup_enabled` = {res['meta'].get('autogroup', '?')}): CPU "
        "is split fairly between sessions, and `nice` only orders processes within a session, so the other "
        "engineers' `nice -n 15/19` background jobs, each in its own session, still took an equal share per "
        "session. The ratio measured is that of the share this run got, not of asynchrony; the CPU costs above say "
        "what two free cores would give." if got < 1.5 else "")
    return (
        f"Measured: **aa / ss {ratio.get('aa', 0):.2f}x**" + (f", as / ss {ratio['as']:.2f}x" if "as" in ratio else "")
        + " in consumed env steps/s over the whole run; at steady state (after the first published version) aa / ss "
        f"{steady_ratio.get('aa', 0):.2f}x" + (f", as / ss {steady_ratio['as']:.2f}x" if "as" in ratio else "")
        + f" (goal >= {GOAL}x: "
        f"{'met' if met else 'NOT met'} on the whole run"
        + ("" if met else f", {'met' if steady_ratio.get('aa', 0) >= GOAL else 'not met'} at steady state") + "). "
        f"Where the time goes (ss): per version the simulator is busy {sim:.1f} s (one core) and the learner "
        f"{learn:.1f} s (one core), learner / simulator = {learn / max(sim, 1e-9):.2f} (in process CPU: simulator "
        f"{cpu_v.get('EnvWorker', 0):.1f} CPU-s, learner {cpu_v.get('Trainer', 0):.1f}, inference "
        f"{cpu_v.get('RolloutWorker', 0):.1f}, lake writer {cpu_v.get('LakeWriter', 0):.1f}, driver "
        f"{cpu_v.get('Driver', 0):.1f}, Ray's own processes {cpu_v.get('Ray', 0):.1f} per version); ss runs them one after the "
        f"other, aa overlaps them, so perfect overlap gives {ideal_steady:.2f}x at steady state and "
        f"{ideal_all:.2f}x over {n} versions (aa's first batch has nothing to overlap with). Cores each stage really "
        "used during the timed window (process CPU-s per wall s; env worker / rollout / trainer / lake writer / "
        "driver / Ray's own): "
        + "; ".join(f"{m} " + " / ".join(f"{c.get(k, 0):.2f}" for k in STAGES + OTHERS) for m, c in cores.items())
        + " — the simulator never used more than one core (rendering on one llvmpipe thread; threads per "
        f"process, Ray's own I/O threads included: {ss.get('threads', {})}; actors' nice: {ss.get('nice', {})}). Learning: the same env seeds and learner in every mode; dense "
        f"reward per env step of each consumed batch vs consumed env steps — {curve} (ss has staleness 0, aa "
        f"mean {runs.get('aa', ss)['staleness_mean']:.2f}, max {runs.get('aa', ss)['staleness_max']}). Mean over the "
        "second half of the versions: " + ", ".join(
            f"{m} {np.mean([h['reward_per_step'] for h in r['history'][len(r['history']) // 2:]]):.4f}"
            for m, r in runs.items())
        + f"; batch-to-batch std over that half: " + ", ".join(
            f"{m} {np.std([h['reward_per_step'] for h in r['history'][len(r['history']) // 2:]]):.4f}"
            for m, r in runs.items())
        + f". With 2 trajectories per batch these curves are noisy and {n} versions are too few for any mode to "
        "learn the task (success 0); read a difference between the modes against the other runs of this section "
        "(same seeds), not as asynchrony's effect from one run." + shared)


def merge_subsections(blocks: dict) -> str:
    """The section body: the ``### <heading>`` subsections already in RESULTS.md, those in ``blocks`` (heading ->
    text) replaced or added, in a stable order (the small learner first)."""
    from _report import RESULTS

    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(rf"^## {re.escape(SECTION)}[ \t]*$", text, flags=re.M)
    current = {}
    if m:
        nxt = re.search(r"^## ", text[m.end():], flags=re.M)
        body = text[m.end():m.end() + nxt.start()] if nxt else text[m.end():]
        for part in re.split(r"^### ", body, flags=re.M)[1:]:
            head, _, rest = part.partition("\n")
            current[head.strip()] = rest.strip()
    current.update(blocks)
    order = sorted(current, key=lambda k: (not k.startswith("small"), k))
    return "\n\n".join(f"### {k}\n\n{current[k]}" for k in order)


def evaluate_all(d: Path, args) -> None:
    """Closed loop (``lake eval``'s code path) of the initial policy and each mode's final policy."""
    sys.path.insert(0, str(HERE))
    from rl import initial_checkpoint  # noqa: E402

    from training.evaluate import evaluate

    res = json.loads((d / "runs.json").read_text())
    cfg = config(res["meta"]["learner"], res["meta"]["train_steps"], epochs=res["meta"].get("epochs"),
                 lr=res["meta"].get("lr"))
    lake_uri = str(d / "eval-lake")
    ckpts = {"untrained": initial_checkpoint(cfg, str(d / "initial.pt"))}
    ckpts.update({m: res["runs"][m]["checkpoint"] for m in args.eval_modes.split(",")})
    rows = ["| policy | checkpoint (lineage) | episodes | success | 95% interval | mean length | eval lake version |",
            "|---|---|---:|---:|---|---:|---:|"]
    for name, path in ckpts.items():
        t = time.perf_counter()
        ev = evaluate(path, cfg.env.id, args.episodes, lake_uri=lake_uri, seed=1000, record_video=False,
                      max_steps=cfg.env.max_episode_steps, batch_size=2)
        k = round(ev.success_rate * ev.episodes)
        lo, hi = wilson(k, ev.episodes)
        src = ("step 0, the runs' seed" if name == "untrained" else
               f"{res['runs'][name]['versions']} versions, run {res['runs'][name]['run_id']}, RL lake version "
               f"{res['runs'][name]['lake_version']}")
        rows.append(f"| {name} | `{Path(path).name}` ({src}) | {ev.episodes} | {ev.success_rate:.0%} | "
                    f"{lo:.0%}-{hi:.0%} | {ev.mean_length:.1f} | {ev.lake_version} |")
        print(ev.summary(), f"({time.perf_counter() - t:.0f} s)", flush=True)
    body = "\n".join([
        f"Command: `.venv/bin/python benchmarks/rl_sims.py --eval DIR --episodes {args.episodes}` (after the "
        f"`--learner {res['meta']['learner']}` runs above); closed loop through `training.evaluate.evaluate` (what "
        f"`lake eval` runs), deterministic actions, held-out seeds from 1000 (init state = seed % 50), "
        f"{cfg.env.max_episode_steps} steps per episode (the RL episode length), both cameras rendered; every episode "
        f"and the evals row recorded in the eval lake (the version in the table). Load average after: {load()}.",
        "", *rows, ""])
    print(body)
    (d / "eval.md").write_text(body)
    if args.record:
        record(EVAL_SECTION, body)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, c - h), min(1.0, c + h)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learner", choices=sorted(LEARNERS), default="small")
    ap.add_argument("--train-steps", type=int, default=None, help="versions per run (default: the learner's)")
    ap.add_argument("--seed", type=int, default=None, help="run seed (default: the config's)")
    ap.add_argument("--epochs", type=int, default=None, help="PPO epochs per version (default: the learner's)")
    ap.add_argument("--lr", type=float, default=None, help="learner step size (default: the config's)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, run in this order (ss first)")
    ap.add_argument("--inference", choices=("rollout", "env"), default=None,
                    help="where the acting policy runs (workers.inference; default: the config's, rollout workers)")
    ap.add_argument("--pin", action="store_true",
                    help="pin the actors and this driver to cores (PIN; all modes); default: where the OS puts them")
    ap.add_argument("--out", default=None, help="folder for the runs' lakes, checkpoints and runs.json")
    ap.add_argument("--from", dest="from_dirs", default=None,
                    help="comma-separated run folders: only write the table / plot from their runs.json")
    ap.add_argument("--eval", default=None, help="a run folder: closed-loop evaluation of its policies")
    ap.add_argument("--eval-modes", default="aa")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--record", action="store_true", help=f'replace the "{SECTION}" (or "{EVAL_SECTION}") section')
    args = ap.parse_args()
    if not args.modes.startswith("ss"):
        ap.error("--modes must start with ss (the ratios are to it)")
    # Ray's workers import this checkout too, and run one thread each (they inherit the environment of the Ray
    # node this process starts); set before torch or a GL library is loaded here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p)
    os.environ.update(ONE_THREAD)
    # Ray starts its workers at nice 15 (RAY_worker_niceness): the timed actors would then run at the priority of
    # the other engineers' background jobs (nice 15) instead of this run's own; the timing runs at normal priority
    os.environ["RAY_worker_niceness"] = "0"
    from training.sims import configure_libero, configure_rendering

    configure_rendering()
    configure_libero()
    if args.eval:
        evaluate_all(Path(args.eval), args)
    elif args.from_dirs:
        record_results([Path(p) for p in args.from_dirs.split(",")], args)
    else:
        record_results([run_all(args)], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
