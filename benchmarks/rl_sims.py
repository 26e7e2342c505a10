# .venv/bin/python benchmarks/rl_sims.py [--learner small|sim-sized] [--train-steps 4] [--out DIR] [--record]
# .venv/bin/python benchmarks/rl_sims.py --eval DIR [--episodes 50] [--record]   (closed loop, not timed)
"""RL-VLA3's throughput claim on a real rendered simulator: ss vs as vs aa on LIBERO, no modelled latency.

The three runs use ``configs/sims/libero_rl.yaml`` and differ only in ``mode``: the same env workers x envs
(LIBERO ``libero_object/3``, both 64x64 cameras rendered every step by the adapter's fast settings), the same
learner (policy, batch, micro-batches, epochs, versions), the same lake writer. Each run is timed from the
first action request to the last published version (Ray start-up, actor creation and the LIBERO builds are
the same for all modes and not in it). ``--learner``:

- ``small``: the config as written: a 64-unit actor-critic with a small CNN on agentview; 2 env workers (one
  per core) x 2 envs. The learner costs far less than the simulator.
- ``sim-sized``: the same policy 2048 units wide with 8 PPO epochs, so that a learner update costs about what
  the simulator spends on its batch (RL-VLA3's regime: a VLA learner and rendered simulators of comparable
  cost), and 1 env worker x 2 envs with a batch of 2 trajectories, so the simulator holds one core and the
  model the other (as simulators hold CPUs and the model GPUs there).

Reported per mode: learner-consumed env steps/s and the ratio to ``ss``; the breakdown (per vector step of an
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
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _report import machine, record  # noqa: E402

CONFIG = HERE.parent / "configs" / "sims" / "libero_rl.yaml"
SECTION = "Async RL on LIBERO (rendered)"
EVAL_SECTION = "LIBERO in the loop"
GOAL = 1.8
MODES = ("ss", "as", "aa")
LEARNERS = {
    "small": {},
    "sim-sized": {"policy.hidden": 2048, "algo.epochs": 8, "workers.env_workers": 1, "workers.envs_per_worker": 2,
                  "algo.batch_trajectories": 2, "algo.micro_batch_trajectories": 1},
}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def config(learner: str, train_steps: int | None):
    from training.rl import load_config

    over = dict(LEARNERS[learner])
    if train_steps:
        over["algo.train_steps"] = train_steps
    return load_config(CONFIG, over)


def step_split(env_id: str, steps: int = 20) -> dict:
    """ms per LIBERO step with both cameras rendered vs state only (random actions, same sim settings)."""
    from training.rl.envs import make_env

    out = {}
    rng = np.random.default_rng(0)
    for label, image in (("rendered", True), ("physics", False)):
        env = make_env(env_id, image=image)
        try:
            env.reset(seed=0)
            env.step(np.zeros(7, np.float32))  # the first render makes the GL context
            t = time.perf_counter()
            for _ in range(steps):
                env.step(rng.uniform(-1, 1, 7).astype(np.float32))
            out[label] = 1000 * (time.perf_counter() - t) / steps
        finally:
            env.close()
    out["render"] = out["rendered"] - out["physics"]
    return out


def summarize(rep, cfg) -> dict:
    """The JSON-able parts of a RunReport, plus the breakdown."""
    w = rep.workers
    vsteps, esteps = max(sum(x.vector_steps for x in w), 1), max(sum(x.env_steps for x in w), 1)
    busy_env = sum(x.busy_s for x in w)
    busy_roll = sum(r.batcher.busy_s for r in rep.rollouts)
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
    }


def run_all(args) -> Path:
    import ray

    from lake._ray import ensure_ray
    from training.rl import run, summary, with_overrides

    cfg = config(args.learner, args.train_steps)
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
    for mode in MODES:
        before_mode = load()
        print(f"--- {mode} (load {before_mode}) ...", flush=True)
        c = with_overrides(cfg, {"mode": mode, "lake.uri": str(out / f"lake-{mode}"), "checkpoint": str(out / f"{mode}.pt"),
                                 **({"algo.max_staleness": 0} if mode == "ss" else {})})
        rep = run(c)
        rep.ledger.check()
        print(summary(rep), flush=True)
        runs[mode] = {**summarize(rep, c), "load": f"{before_mode} -> {load()}"}
        (out / "runs.partial.json").write_text(json.dumps(runs, indent=1))  # a later failure keeps these
    ray.shutdown()
    meta = {"learner": args.learner, "overrides": LEARNERS[args.learner], "train_steps": cfg.algo.train_steps,
            "load_before": before, "load_after": load(), "seconds": time.perf_counter() - t0, "split": split,
            "machine": machine(), "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "backend": os.environ.get("MUJOCO_GL", ""), "config": _cfg_line(cfg)}
    (out / "runs.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    print(f"wrote {out / 'runs.json'}")
    return out


def _cfg_line(cfg) -> str:
    w, a, p = cfg.workers, cfg.algo, cfg.policy
    return (f"{cfg.env.id} (reward {cfg.env.kwargs.get('reward', 'sparse')}, {cfg.env.max_episode_steps} steps), "
            f"{w.env_workers} env workers x {w.envs_per_worker} envs, policy hidden {p.hidden}"
            f"{' + CNN on agentview ' + str(p.image_size) + 'x' + str(p.image_size) if p.image else ''}, "
            f"PPO-{a.advantage} ({a.correction}), global batch {a.batch_trajectories} trajectories, micro-batch "
            f"{a.micro_batch_trajectories}, {a.epochs} epochs, {a.train_steps} versions, max staleness "
            f"{a.max_staleness} (ss: 0)")


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
                   title=f"{learner} learner: sample efficiency")
        row[1].set(xlabel="wall time (s)", ylabel="learner-consumed env steps", title=f"{learner} learner: throughput")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(res: dict) -> list[str]:
    runs = res["runs"]
    ss = runs["ss"]["steps_per_s"]
    head = ("| mode | consumed env steps/s | vs ss | wall s | steps | dropped stale / unused | staleness mean / max | "
            "env worker ms per vector step: sim+render / waiting for actions | trainer s per version | "
            "CPU-s of work per wall s | idle env / trainer | reward/step, first / last batch | load average before -> after |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for mode, r in runs.items():
        h = r["history"]
        rows.append(f"| {mode} | {r['steps_per_s']:.1f} | {r['steps_per_s'] / ss:.2f}x | {r['wall_s']:.0f} | "
                    f"{r['consumed_steps']} | {r['dropped_stale']} / {r['dropped_unused']} | "
                    f"{r['staleness_mean']:.2f} / {r['staleness_max']} | {r['env_ms_per_vector_step']:.0f} / "
                    f"{r['wait_act_ms_per_vector_step']:.0f} | {r['trainer_s_per_version']:.1f} | {r['overlap']:.2f} | "
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
    results = {}
    for d in dirs:
        res = json.loads((d / "runs.json").read_text())
        results[res["meta"]["learner"]] = res
    png = HERE / "rl_sims.png"
    plot(results, png)
    lines = []
    for learner, res in results.items():
        m, runs = res["meta"], res["runs"]
        sp = m["split"]
        lines += [f"### {learner} learner", "",
                  f"Command: `.venv/bin/python benchmarks/rl_sims.py --learner {learner} --train-steps "
                  f"{m['train_steps']} --out DIR` (timed runs), then `--from DIR --record`",
                  f"Machine: {m['machine']}, MUJOCO_GL={m['backend'] or 'default'}; load average before / after: "
                  f"{m['load_before']} / {m['load_after']} (machine shared with other engineers); {m['date']}; "
                  f"{m['seconds']:.0f} s in all",
                  f"Setup: {m['config']}. Every trajectory lands in a lake (states, actions, rewards; no video).",
                  f"One LIBERO step in-process: {sp['rendered']:.0f} ms with both cameras rendered, {sp['physics']:.0f} "
                  f"ms physics only: rendering is {sp['render'] / sp['rendered']:.0%} of a step.", ""]
        lines += table(res)
        aa = runs["aa"]["steps_per_s"] / runs["ss"]["steps_per_s"]
        busy = {mode: 1 - r["idle"]["env_workers"] for mode, r in runs.items()}
        sim = {mode: r["env_ms_per_env_step"] for mode, r in runs.items()}
        lines += ["", f"Measured: aa / ss {aa:.2f}x, as / ss {runs['as']['steps_per_s'] / runs['ss']['steps_per_s']:.2f}x "
                      f"in consumed env steps/s. But the simulator itself ran at " + ", ".join(
                          f"{m} {v:.0f}" for m, v in sim.items()) + " ms per env step (wall, stepping+rendering; "
                      f"~90 ms of CPU each), so most of that ratio is the background load changing between the runs, "
                      f"not asynchrony. What asynchrony itself buys is the env workers' busy fraction: " + ", ".join(
                          f"{m} {v:.0%}" for m, v in busy.items()) + f", i.e. aa / ss {busy['aa'] / busy['ss']:.2f}x and "
                      f"as / ss {busy['as'] / busy['ss']:.2f}x at equal simulator speed (goal >= {GOAL}x: "
                      f"{'met' if busy['aa'] / busy['ss'] >= GOAL else 'NOT met'}). " + bound(res), ""]
    lines += [f"![reward per step vs env steps, and throughput]({png.name})", ""]
    body = "\n".join(lines)
    print(body)
    if args.record:
        record(SECTION, body)


def evaluate_all(d: Path, args) -> None:
    """Closed loop (``lake eval``'s code path) of the initial policy and each mode's final policy."""
    sys.path.insert(0, str(HERE))
    from rl import initial_checkpoint  # noqa: E402

    from training.evaluate import evaluate

    res = json.loads((d / "runs.json").read_text())
    cfg = config(res["meta"]["learner"], res["meta"]["train_steps"])
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
    ap.add_argument("--train-steps", type=int, default=None, help="versions per run (default: the config's)")
    ap.add_argument("--out", default=None, help="folder for the runs' lakes, checkpoints and runs.json")
    ap.add_argument("--from", dest="from_dirs", default=None,
                    help="comma-separated run folders: only write the table / plot from their runs.json")
    ap.add_argument("--eval", default=None, help="a run folder: closed-loop evaluation of its policies")
    ap.add_argument("--eval-modes", default="aa")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--record", action="store_true", help=f'replace the "{SECTION}" (or "{EVAL_SECTION}") section')
    args = ap.parse_args()
    # Ray's workers import this checkout too (they inherit the environment of the Ray node this process starts)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p)
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
