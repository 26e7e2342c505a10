# nice -n 19 env OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python benchmarks/rl_aagap.py --mode aa --seed 1 \
#     --bc <rl_equal workdir>/bc.pt [--set algo.max_staleness=0] [--tag NAME]     (~3-5 min per 2-segment run)
"""Diagnose one ``rl_equal.py`` run (mode x seed): the same config and segments, without a lake, plus what the
benchmark does not log: how the consumed batches differ from what the env workers produced (success, length),
the importance weights' truncation and the GRPO groups' version spread per version.

Why: ``rl_equal.py`` found aa (and as) ending below ss after 16 versions; this script reruns single cells with
overrides (e.g. ``algo.max_staleness=0``: aa's machinery on on-policy data) to separate a bug from staleness.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _value(s: str):
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


def _split(rep) -> dict:
    """Success / length of produced vs consumed vs left over trajectories (success: a positive return)."""
    led, tr = rep.ledger, rep.trajectories

    def agg(ids):
        ids = list(ids)
        if not ids:
            return {"n": 0}
        return {"n": len(ids), "success": sum(tr[i][0] > 0 for i in ids) / len(ids),
                "mean_length": sum(tr[i][1] for i in ids) / len(ids)}

    return {"produced": agg(led.received), "consumed": agg(led.consumed), "stale": agg(led.dropped_stale),
            "unused": agg(led.dropped_unused)}


def main(argv=None) -> int:
    from _loop import evaluate_ckpt
    from rl_equal import _rl_cfg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="aa")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--segments", type=int, default=2)
    ap.add_argument("--versions", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--bc", required=True, help="the warm start checkpoint (rl_equal's bc.pt)")
    ap.add_argument("--env", default="metaworld/reach-v3")
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (JSON value)")
    ap.add_argument("--workdir", default="/tmp/aagap")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)

    import torch

    from lake._ray import ensure_ray
    from training.rl import run, with_overrides

    torch.set_num_threads(1)
    ensure_ray()
    root = Path(args.workdir)
    tag = args.tag or f"{args.mode}-s{args.seed}" + "".join(f"-{s}" for s in args.set)
    (root / "ckpt").mkdir(parents=True, exist_ok=True)
    sets = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    prev, steps, out = args.bc, 0, {"tag": tag, "mode": args.mode, "seed": args.seed, "set": sets, "segments": []}
    for seg in range(args.segments):
        cfg = _rl_cfg(args.mode, args.seed, seg, args.env, args.max_steps, prev, None,
                      str(root / "ckpt" / f"{tag}-{seg + 1}.pt"), args)
        cfg = with_overrides(cfg, {"lake.uri": None, **sets})
        t = time.perf_counter()
        rep = run(cfg)
        wall = time.perf_counter() - t
        steps, prev = steps + rep.consumed_steps, rep.checkpoint
        ev = evaluate_ckpt(prev, args.env, args.episodes, None, args.max_steps)
        row = {"segment": seg + 1, "env_steps": steps, "k": ev["k"], "n": ev["n"], "wall_s": wall,
               "staleness_mean": rep.staleness_mean, "staleness_max": rep.staleness_max,
               "dropped_stale": rep.dropped_stale, "dropped_unused": rep.dropped_unused,
               "trajectories": _split(rep), "history": list(rep.history), "weights_sha256": rep.weights_sha256}
        out["segments"].append(row)
        h = rep.history
        mean = {k: sum(x.get(k, 0.0) for x in h) / len(h) for k in
                ("success_rate", "is_capped", "behav_gap", "stale_step_frac", "group_version_spread",
                 "groups_mixed_start")}
        sp = row["trajectories"]
        print(f"[{tag}] seg {seg + 1}: held-out {ev['k']}/{ev['n']}, {steps} env steps, staleness "
              f"{rep.staleness_mean:.2f}/{rep.staleness_max}, dropped stale {rep.dropped_stale} unused "
              f"{rep.dropped_unused}; produced success {sp['produced']['success']:.2f} (len "
              f"{sp['produced']['mean_length']:.0f}) consumed {sp['consumed']['success']:.2f} (len "
              f"{sp['consumed']['mean_length']:.0f}); per version: "
              + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()) + f"; {wall:.0f} s", flush=True)
        (root / f"{tag}.json").write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
