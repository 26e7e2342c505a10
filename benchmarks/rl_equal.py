# nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_equal.py [--segments 2 --versions 8] --record   (~1 h niced)
"""Equal sample efficiency of the three RL modes (ss / as / aa): does asynchrony cost learning per env step?

Untimed (wall times are only reported): the claim is about learning, not speed. One task where RL visibly
learns within the budget: Meta-World reach-v3 from a behaviour-cloned (``training.rl.bc``) warm start, as in
``closed_loop.py``'s RL (same demos, same BC, same RL config: 2 env workers x 4 envs, 16 trajectories per
version, sparse success reward, GRPO over 4 rollouts per goal, lr 5e-4, decoupled PPO, max staleness 2). For each
run seed and each mode the *same* config and seeds run in ``--segments`` segments of ``--versions`` published
versions (each segment resumes from the last one's checkpoint, fresh optimizer, run seed ``100 * seed + segment
+ 1``); after each segment the policy meets the same 50 held-out goals (env seeds from 1000; deterministic
actions; Wilson 95% intervals). Every point is matched in versions (16 trajectories each); env steps per point
differ a little between modes because an episode ends on success.

Why segments: evaluating at matched points needs a checkpoint there, and the pipeline saves one at its end.
Each segment starts with a fresh pipeline, so aa's first batch of a segment is on-policy (staleness 0); the
per-run staleness is reported so the reader sees how much asynchrony each point really had.

Each run's result is written to ``<workdir>/<mode>-s<seed>.json`` as it finishes (reruns skip finished runs);
``--record`` rebuilds the RESULTS.md section and the plot from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _report import RESULTS, machine, record  # noqa: E402

SECTION = "Equal learning per env step: ss vs as vs aa (Meta-World reach, BC warm start)"
PLOT = "rl_equal.png"
READING = HERE / "rl_equal_reading.md"


def _rl_cfg(mode: str, seed: int, seg: int, env_id: str, ms: int, init: str, uri: str, ckpt: str, args):
    from _loop import rl_objective
    from training.rl import RLConfig, with_overrides

    return with_overrides(RLConfig(), {
        "mode": mode, "seed": 100 * seed + seg + 1, "env.id": env_id, "env.max_episode_steps": ms,
        **rl_objective("success"),
        "workers.env_workers": 2, "workers.envs_per_worker": 4, "algo.batch_trajectories": 16,
        "algo.micro_batch_trajectories": 4, "algo.train_steps": args.versions, "algo.lr": args.lr,
        "algo.epochs": 2, "algo.entropy_coef": 0.0, "algo.max_staleness": 2, "batching.max_batch_size": 8,
        "policy.init_checkpoint": init, "lake.uri": uri, "lake.source": f"rl/{mode}-s{seed}", "lake.images": False,
        "lake.commit_every": 16, "checkpoint": ckpt, "timeout_s": 3600,
        "placement.env_worker.num_cpus": 0.2, "placement.rollout.num_cpus": 0.3,
        "placement.trainer.num_cpus": 0.3, "placement.lake_writer.num_cpus": 0.2,
    })


def warm_start(root: Path, args) -> dict:
    """Expert demos -> lake, BC of the actor-critic on the first ``--bc-demos``, its held-out evaluation."""
    from _loop import RL_REWARD_SCALE, TASKS, evaluate_ckpt, write_demos
    from training.rl.bc import behaviour_clone

    out = root / "bc.json"
    if out.exists():
        return json.loads(out.read_text())
    env_id, ms = f"metaworld/{args.task}", TASKS[args.task]["max_steps"]
    uri = str(root / "lake")
    write_demos(root, env_id, args.bc_demos, 0.1)
    bc = behaviour_clone(uri, env_id, out=str(root / "bc.pt"), steps=1500, episodes=args.bc_demos,
                         reward_scale=RL_REWARD_SCALE)
    res = {"bc": bc, "eval": evaluate_ckpt(bc["checkpoint"], env_id, args.episodes, uri, ms), "env_id": env_id, "max_steps": ms}
    out.write_text(json.dumps(res, indent=1))
    return res


def run_one(mode: str, seed: int, ws: dict, root: Path, args) -> dict:
    """One mode x seed: segments of RL, an evaluation after each; returns (and writes) its curve."""
    from _loop import evaluate_ckpt
    from training.rl import run

    out = root / f"{mode}-s{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    env_id, ms, uri = ws["env_id"], ws["max_steps"], str(root / "lake")
    curve = [{"version": 0, "env_steps": 0, **ws["eval"]}]
    history, prev, steps, wall = [], ws["bc"]["checkpoint"], 0, 0.0
    for seg in range(args.segments):
        ckpt = str(root / "ckpt" / f"{mode}-s{seed}-{seg + 1}.pt")
        t = time.perf_counter()
        rep = run(_rl_cfg(mode, seed, seg, env_id, ms, prev, uri, ckpt, args))
        wall += time.perf_counter() - t
        history += [{**h, "consumed_steps": h["consumed_steps"] + steps, "version": h["version"] + seg * args.versions}
                    for h in rep.history]
        steps, prev = steps + rep.consumed_steps, rep.checkpoint
        ev = evaluate_ckpt(prev, env_id, args.episodes, uri, ms)
        curve.append({"version": (seg + 1) * args.versions, "env_steps": steps, "staleness_mean": rep.staleness_mean,
                      "staleness_max": rep.staleness_max, "dropped_stale": rep.dropped_stale, **ev})
        print(f"[{mode} s{seed}] segment {seg + 1}: {steps} env steps, {ev['k']}/{ev['n']}, staleness "
              f"{rep.staleness_mean:.2f}/{rep.staleness_max}, {rep.wall_s:.0f} s", flush=True)
    keep = ("version", "consumed_steps", "reward_per_step", "success_rate", "staleness_mean", "staleness_max",
            "is_weight", "ratio", "policy_loss", "entropy", "is_capped", "behav_gap", "stale_step_frac",
            "group_version_spread")
    res = {"mode": mode, "seed": seed, "curve": curve, "history": [{k: h.get(k) for k in keep} for h in history],
           "rl_wall_s": wall, "segments": args.segments, "versions": args.versions, "lr": args.lr}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    return res


def _stats(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    import numpy as np

    a = np.asarray(xs, float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _half_success(r: dict, key: str = "success_rate") -> float:
    """Mean of a consumed batch's ``key`` (success rate, reward per env step) over the second half of the versions."""
    h = r["history"]
    return sum(x[key] for x in h[len(h) // 2:]) / max(1, len(h) - len(h) // 2)


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = {"ss": "tab:blue", "as": "tab:green", "aa": "tab:red"}
    for mode, rs in runs.items():
        c = colors.get(mode)
        for r in rs:  # thin: each seed; thick: the mean over seeds at each matched point
            axes[0].plot([p["env_steps"] for p in r["curve"]], [p["rate"] for p in r["curve"]], color=c, alpha=0.25,
                         lw=1)
            h = r["history"]
            sr = np.convolve([x["success_rate"] for x in h], np.ones(4) / 4, mode="valid")
            axes[1].plot([x["consumed_steps"] for x in h][3:], sr, color=c, alpha=0.25, lw=1)
        n = min(len(r["curve"]) for r in rs)
        x = np.mean([[p["env_steps"] for p in r["curve"][:n]] for r in rs], 0)
        y = np.array([[p["rate"] for p in r["curve"][:n]] for r in rs])
        axes[0].errorbar(x, y.mean(0), yerr=y.std(0, ddof=1) if len(rs) > 1 else None, color=c, marker="o",
                         capsize=3, lw=2, label=f"{mode} (mean ± sd over {len(rs)} seeds)")
        m = min(len(r["history"]) for r in rs)
        hx = np.mean([[x["consumed_steps"] for x in r["history"][:m]] for r in rs], 0)
        hy = np.mean([[x["success_rate"] for x in r["history"][:m]] for r in rs], 0)
        axes[1].plot(hx[3:], np.convolve(hy, np.ones(4) / 4, mode="valid"), color=c, lw=2, label=f"{mode} (mean)")
    axes[0].set(xlabel="env steps consumed", ylabel="success on 50 held-out goals", ylim=(-0.03, 1.03),
                title="held-out success vs env steps")
    axes[1].set(xlabel="env steps consumed", ylabel="success rate of the training batch",
                ylim=(-0.03, 1.03), title="training batches (4-version running mean)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(root: Path, args, command: str, load: str) -> str | None:
    from _loop import pct

    ws_path = root / "bc.json"
    if not ws_path.exists():
        return None
    ws = json.loads(ws_path.read_text())
    runs = {m: [json.loads((root / f"{m}-s{s}.json").read_text()) for s in args.seeds
                if (root / f"{m}-s{s}.json").exists()] for m in args.modes}
    runs = {m: rs for m, rs in runs.items() if rs}
    if not runs:
        return None
    plot(runs, HERE / PLOT)
    n_pts = min(len(r["curve"]) for rs in runs.values() for r in rs)
    first = next(iter(runs.values()))[0]
    segments, versions, lr = (first.get(k, getattr(args, k)) for k in ("segments", "versions", "lr"))
    lines = [f"Command: {command}",
             f"Machine: {machine()}; {load} (shared with other engineers' jobs; untimed: wall times are not timings)",
             "",
             f"Protocol: {args.task}; BC warm start of the RL actor-critic (2x64 MLP, `training.rl.bc`, 1500 steps) on "
             f"{ws['bc']['episodes']} scripted-expert demos ({ws['bc']['frames']} frames), held-out success "
             f"{pct(ws['eval'])}. Then, for each run seed and mode, the same RL config (2 env workers x 4 envs, 16 "
             f"trajectories per version, micro-batch 4, 2 epochs, lr {lr}, success reward ending the episode, "
             f"GRPO over 4 rollouts per goal, decoupled PPO with is_cap 2, max staleness 2) in {segments} segments of "
             f"{versions} versions (each resumes from the previous checkpoint; run seed 100*seed+segment+1, the "
             f"same in every mode); after each segment 50 held-out goals (env seeds from 1000, deterministic actions). "
             f"Time limit {ws['max_steps']} steps.",
             "",
             "| mode | seed | " + " | ".join(f"v{p['version']}" for p in first["curve"][:n_pts])
             + " | env steps at the end | staleness mean / max per segment | train success, 2nd half | RL wall |",
             "|---|---|" + "---|" * n_pts + "---:|---|---:|---:|"]
    for m, rs in runs.items():
        for r in rs:
            c = r["curve"]
            lines.append(f"| {m} | {r['seed']} | " + " | ".join(f"{p['k']}/{p['n']}" for p in c[:n_pts])
                         + f" | {c[n_pts - 1]['env_steps']} | "
                         + ", ".join(f"{p['staleness_mean']:.2f}/{p['staleness_max']}" for p in c[1:n_pts])
                         + f" | {_half_success(r):.0%} | {r['rl_wall_s'] / 60:.1f} min |")
    lines += ["", "Per mode over seeds (mean ± sd of the seeds' success rates, held-out goals), and the difference to "
              "ss with its seed-to-seed spread (paired by seed: same seeds, same goals):", "",
              "| mode | seeds | " + " | ".join(f"v{p['version']}" for p in first["curve"][:n_pts])
              + " | train success, 2nd half | train reward per env step, 2nd half | staleness mean / max "
              "| IS weight mean [min] | RL wall per run |", "|---|---:|" + "---|" * (n_pts + 5)]
    for m, rs in runs.items():
        cells = []
        for i in range(n_pts):
            mu, sd = _stats([r["curve"][i]["rate"] for r in rs])
            cells.append(f"{mu:.0%} ± {sd:.0%} ({_stats([r['curve'][i]['env_steps'] for r in rs])[0]:.0f} steps)")
        mu, sd = _stats([_half_success(r) for r in rs])
        rmu, rsd = _stats([_half_success(r, "reward_per_step") for r in rs])
        hs = [h for r in rs for h in r["history"]]
        iw = [h["is_weight"] for h in hs]
        wall = _stats([r["rl_wall_s"] for r in rs])[0] / 60
        lines.append(f"| {m} | {len(rs)} | " + " | ".join(cells) + f" | {mu:.0%} ± {sd:.0%} | {rmu:.4f} ± {rsd:.4f} | "
                     f"{sum(h['staleness_mean'] for h in hs) / len(hs):.2f} / {max(h['staleness_max'] for h in hs)} | "
                     f"{sum(iw) / len(iw):.3f} [{min(iw):.3f}] | {wall:.1f} min |")
    base = {r["seed"]: r for r in runs.get("ss", [])}
    for m, rs in runs.items():
        if m == "ss":
            continue
        paired = [(r, base[r["seed"]]) for r in rs if r["seed"] in base]
        if not paired:
            continue
        cells = []
        for i in range(n_pts):
            mu, sd = _stats([r["curve"][i]["rate"] - b["curve"][i]["rate"] for r, b in paired])
            cells.append(f"{mu:+.0%} ± {sd:.0%}")
        mu, sd = _stats([_half_success(r) - _half_success(b) for r, b in paired])
        rmu, rsd = _stats([_half_success(r, "reward_per_step") - _half_success(b, "reward_per_step")
                           for r, b in paired])
        lines.append(f"| {m} − ss | {len(paired)} | " + " | ".join(cells) + f" | {mu:+.0%} ± {sd:.0%} | "
                     f"{rmu:+.4f} ± {rsd:.4f} | | | |")
    lines += ["", f"![learning curves per env step, three modes]({PLOT})"]
    if READING.exists():  # the reading of these numbers, written by hand after the run
        lines += ["", READING.read_text().strip()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="reach-v3")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=["ss", "as", "aa"])
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--segments", type=int, default=2)
    ap.add_argument("--versions", type=int, default=8, help="published versions per segment")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--bc-demos", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=50, help="held-out goals per evaluation point")
    ap.add_argument("--workdir", default="rl_equal_work")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--record", action="store_true", help=f'replace the "{SECTION}" section of RESULTS.md')
    args = ap.parse_args(argv)
    root = Path(args.workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    command = "nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_equal.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    load0 = "/".join(f"{x:.1f}" for x in os.getloadavg())
    if args.report_only:  # the section names the command that ran the jobs (the load then is in the reading)
        command = " ".join(w for w in command.split() if w not in ("--report-only", "--record"))
        command = f"`{command}` (section rebuilt with `--report-only --record`)"
    else:
        command = f"`{command}`"

    def save():
        load = f"load average at start / now: {load0} / {'/'.join(f'{x:.1f}' for x in os.getloadavg())}"
        body = report(root, args, command, load)
        if body:
            print(body, flush=True)
            if args.record:
                record(SECTION, body)
                print(f"recorded in {RESULTS}: {SECTION}", flush=True)

    if not args.report_only:
        import torch

        from lake._ray import ensure_ray

        torch.set_num_threads(1)
        ensure_ray()
        ws = warm_start(root, args)
        print(f"BC: {ws['eval']['k']}/{ws['eval']['n']}", flush=True)
        for seed in args.seeds:  # seeds outer: a run cut short still has every mode for the seeds it finished
            for mode in args.modes:
                run_one(mode, seed, ws, root, args)
            save()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
