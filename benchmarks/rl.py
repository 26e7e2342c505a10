# .venv/bin/python benchmarks/rl.py [--config configs/rl/pusht_aa.yaml] [--train-steps 12] [--record]
"""Asynchronous RL throughput: learner-consumed env steps per second, ``aa`` and ``as`` vs the ``ss`` baseline.

The three runs use one config (``configs/rl/pusht_aa.yaml``) and differ only in ``mode``: the same env
workers x envs, the same strict global batch (trajectories per optimizer step), micro-batches, epochs and
number of versions (so the same number of consumed env steps), the same long-tail simulator latency
(lognormal: one draw per vector-env step) and the same lake writer (every trajectory is committed). Each run
is timed from the first action request to the last published version; Ray start-up and actor creation are
not in it (they are the same for all modes).

Reported per mode: consumed env steps/s and the speed-up over ``ss``; idle fraction of each stage over the
run (env workers: not stepping their simulator; rollout: not in a forward pass; trainer: not computing;
lake writer: not committing); staleness of the consumed trajectories (versions between the oldest step's
policy and the learner) and how many trajectories were dropped as stale or left unused at the end; and the
learning curve (reward per env step of each consumed global batch vs consumed env steps), plotted to
``benchmarks/rl_returns.png``. PushT is hard: runs this short barely move the policy, so the curve is a
check that asynchrony does not *hurt* sample efficiency, not a demonstration of learning.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

RESULTS = HERE / "RESULTS.md"
SECTION = "## Async RL"
PNG = HERE / "rl_returns.png"
GOAL = 1.85
MODES = ("ss", "as", "aa")


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Ray in-process with num_cpus=2, no GPU"


def load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_mode(cfg, mode: str, lake_root: str):
    from training.rl import run, with_overrides

    c = with_overrides(cfg, {"mode": mode, "lake.uri": f"{lake_root}/{mode}",
                             **({"algo.max_staleness": 0} if mode == "ss" else {})})
    t = time.perf_counter()
    rep = run(c)
    rep.ledger.check()
    return rep, time.perf_counter() - t


def plot(reports: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode, rep in reports.items():
        steps = [h["consumed_steps"] for h in rep.history]
        axes[0].plot(steps, [h["reward_per_step"] for h in rep.history], marker="o", ms=3, label=mode)
        t = [h["time"] - rep.history[0]["time"] + rep.history[0]["consumed_steps"] / rep.steps_per_s
             for h in rep.history]
        axes[1].plot(t, steps, marker="o", ms=3, label=f"{mode}: {rep.steps_per_s:.0f} steps/s")
    axes[0].set(xlabel="learner-consumed env steps", ylabel="reward per env step (batch mean)",
                title="sample efficiency (PushT reward = coverage)")
    axes[1].set(xlabel="wall time (s)", ylabel="learner-consumed env steps", title="throughput")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(reports: dict, base: str = "ss") -> str:
    b = reports[base].steps_per_s
    head = ("| mode | consumed env steps/s | vs ss | wall s | versions | steps | produced | dropped stale | "
            "unused at end | staleness mean / max | idle env / rollout / trainer / lake | reward/step (all / last 4) |")
    rows = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for mode, r in reports.items():
        rps = [h["reward_per_step"] for h in r.history]
        idle = r.idle
        rows.append(
            f"| {mode} | {r.steps_per_s:.0f} | {r.steps_per_s / b:.2f}x | {r.wall_s:.1f} | {r.versions} | "
            f"{r.consumed_steps} | {r.produced} | {r.dropped_stale} | {r.dropped_unused} | "
            f"{r.staleness_mean:.2f} / {r.staleness_max} | {idle['env_workers']:.0%} / {idle['rollout']:.0%} / "
            f"{idle['trainer']:.0%} / {idle.get('lake_writer', float('nan')):.0%} | "
            f"{np.mean(rps):.4f} / {np.mean(rps[-4:]):.4f} |")
    return "\n".join(rows)


def barrier_factor(cfg, n: int, draws: int = 20000) -> float:
    """E[max of n latency draws] / E[one draw]: what a per-step barrier over n simulators costs in latency."""
    from training.rl.latency import make_sampler

    s = make_sampler(cfg.latency.dist, cfg.latency.params, seed=0, cap_ms=cfg.latency.cap_ms)
    x = np.array([s() for _ in range(draws * n)]).reshape(draws, n)
    return float(x.max(axis=1).mean() / max(x.mean(), 1e-12))


def interpret(cfg, reports: dict) -> str:
    """Sentences from the measured numbers (no adjectives the numbers do not support)."""
    n = cfg.workers.env_workers
    ss = reports["ss"]
    out = [f"With the per-step barrier of `ss`, every global step lasts as long as the slowest of the {n} simulators: "
           f"for this latency E[max of {n} draws] / E[one draw] = {barrier_factor(cfg, n):.2f}. `ss` env workers were "
           f"idle {ss.idle['env_workers']:.0%} of the run (waiting for actions {ss.idle['env_waiting_for_actions']:.0%}, "
           f"the rest for the round and training to end)."]
    for mode in ("as", "aa"):
        if mode in reports:
            r = reports[mode]
            out.append(f"`{mode}`: {r.steps_per_s / ss.steps_per_s:.2f}x the consumed env steps/s of `ss`; env workers "
                       f"idle {r.idle['env_workers']:.0%} (waiting for actions {r.idle['env_waiting_for_actions']:.0%}); "
                       f"staleness mean {r.staleness_mean:.2f}, max {r.staleness_max} versions; {r.dropped_stale} "
                       f"trajectories dropped as stale, {r.dropped_unused} unused at the end.")
    busy = max(1 - r.idle["trainer"] for r in reports.values())
    out.append(f"The trainer was busy at most {busy:.0%} of any run (a 64-unit MLP on CPU), so overlapping training "
               f"with rollouts (`aa` over `as`) can gain little here; removing the per-step barrier is what pays. "
               f"With a large policy the trainer's share, and the value of `aa`, grows.")
    rps = {m: float(np.mean([h["reward_per_step"] for h in r.history])) for m, r in reports.items()}
    out.append("Sample efficiency (mean reward per env step over all consumed batches): "
               + ", ".join(f"{m} {v:.4f}" for m, v in rps.items())
               + f". {cfg.algo.train_steps} versions are far too few to learn PushT (success stays 0); the curves "
                 f"mostly show which start states were drawn, and that the stale-but-corrected data of `as`/`aa` "
                 f"does not make the updates worse than on-policy `ss` at equal consumed steps.")
    return " ".join(out)


def record(body: str) -> None:
    """Replace (or append) the "## Async RL" section of RESULTS.md; other sections are left alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{SECTION}\n\n{body.strip()}\n"
    m = re.search(rf"^{re.escape(SECTION)}[ \t]*$", text, flags=re.M)
    if m:
        nxt = re.search(r"^## ", text[m.end():], flags=re.M)
        end = m.end() + nxt.start() if nxt else len(text)
        text = text[:m.start()] + block + ("\n" + text[end:] if nxt else "")
    else:
        text = text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE.parent / "configs" / "rl" / "pusht_aa.yaml"))
    ap.add_argument("--train-steps", type=int, default=None, help="versions per run (default: the config's)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--record", action="store_true", help=f'replace the "{SECTION}" section of RESULTS.md')
    args = ap.parse_args()

    from lake._ray import ensure_ray
    from training.rl import load_config
    from training.rl.latency import mean_ms

    cfg = load_config(args.config, {"algo.train_steps": args.train_steps} if args.train_steps else None)
    modes = [m.strip() for m in args.modes.split(",")]
    if "ss" not in modes:
        modes.insert(0, "ss")
    t0 = time.perf_counter()
    load_before = load()
    ensure_ray(num_cpus=2)
    reports, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        for mode in modes:
            print(f"--- {mode} ...", flush=True)
            reports[mode], seconds[mode] = run_mode(cfg, mode, tmp)
            from training.rl import summary

            print(summary(reports[mode]), flush=True)
    plot(reports, PNG)
    w, a, lat = cfg.workers, cfg.algo, cfg.latency
    ss = reports["ss"]
    lines = [
        f"Command: `.venv/bin/python benchmarks/rl.py{' --train-steps ' + str(args.train_steps) if args.train_steps else ''}"
        f"{' --record' if args.record else ''}` (config `{os.path.relpath(args.config, HERE.parent)}`, mode overridden)",
        f"Machine: {machine()}; load average before / after: {load_before} / {load()}",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; total benchmark time "
        f"{time.perf_counter() - t0:.0f} s (each run incl. actor start-up: "
        + ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items()) + ")",
        "",
        f"Setup: {cfg.env.id}, {w.env_workers} env workers x {w.envs_per_worker} envs, {w.rollout_workers} rollout "
        f"worker (max batch {cfg.batching.max_batch_size} rows / {cfg.batching.batch_timeout_ms:g} ms), PPO-{a.advantage} "
        f"({a.correction} correction), global batch {a.batch_trajectories} trajectories x {cfg.env.max_episode_steps} "
        f"steps, micro-batch {a.micro_batch_trajectories}, {a.epochs} epochs, {a.train_steps} versions = "
        f"{ss.consumed_steps} consumed env steps per run; max staleness {a.max_staleness} (ss: 0); "
        f"simulator latency {lat.dist} {lat.params} (mean {mean_ms(lat.dist, lat.params):.1f} ms per vector step, "
        f"cap {lat.cap_ms:g} ms); every trajectory committed to a lake ({cfg.lake.commit_every} per version).",
        "",
        table(reports),
        "",
    ]
    speed = {m: reports[m].steps_per_s / ss.steps_per_s for m in reports}
    verdict = []
    if "aa" in speed:
        verdict.append(f"aa vs ss: {speed['aa']:.2f}x (goal >= {GOAL}x: {'met' if speed['aa'] >= GOAL else 'NOT met'})")
    if "as" in speed:
        verdict.append(f"as vs ss: {speed['as']:.2f}x")
    lines.append("Result: " + "; ".join(verdict) + ".")
    lines.append("")
    lines.append(f"![reward per step vs consumed env steps]({PNG.name})")
    body = "\n".join(lines)
    print()
    print(body)
    text = interpret(cfg, reports)
    print()
    print(text)
    if args.record:
        record(body + "\n\n" + text + "\n")
        print(f"\nrecorded in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
