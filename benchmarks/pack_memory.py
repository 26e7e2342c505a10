# .venv/bin/python benchmarks/pack_memory.py [--episodes 20] [--record]
"""Packing memory is bounded by the group, not the dataset: peak RSS packing N vs 10×N PushT episodes.

Both lakes are packed with the same recipe by the real Ray Data job; the driver's RSS and the sum of the Ray
workers' RSS are sampled throughout. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lake
from lake._ray import ensure_ray
from packers import Recipe

from _report import PeakRSS, machine, mib, record

DATA = Path(__file__).with_name("_data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    recipe = Recipe(image_size=(64, 64), action_horizon=16, token_budget=2048, episodes_per_group=16)
    ensure_ray()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 10):
            n = args.episodes * scale
            src = DATA / f"pusht_v3_{n}"
            if not (src / "meta" / "info.json").exists():
                lake.write_pusht_dataset(src, episodes=n, version="v3.0", min_len=20, max_len=80, seed=0)
            lk = lake.open(Path(tmp) / f"lake{scale}")
            lk.ingest(src, progress=False)
            t0 = time.perf_counter()
            with PeakRSS() as rss:
                rep = lk.pack(recipe, progress=False)
            rows.append((scale, n, rep.samples, rep.packs, time.perf_counter() - t0, rss.driver, rss.largest,
                         rss.processes, rss.workers))
    head = ("| scale | episodes | samples | packs | pack time | driver peak RSS | largest worker peak RSS "
            "| worker processes | all workers (sum) |\n|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {s}× | {n} | {sm} | {p} | {t:.1f} s | {mib(d)} | {mib(big)} | {k} | {mib(w)} |"
             for s, n, sm, p, t, d, big, k, w in rows]
    print(head + "\n" + "\n".join(lines))
    r1, r10 = rows
    ratio = (r10[5] + r10[6]) / (r1[5] + r1[6])
    print(f"peak RSS 10× / 1× (driver + largest worker): {ratio:.2f}")
    if args.record:
        record("Packing memory", f"""Command: `.venv/bin/python benchmarks/pack_memory.py --episodes {args.episodes} --record`
Machine: {machine()}

Same recipe (64×64 images, 16-step chunks, budget 2048, 16 episodes per group), real Ray Data packing job.

{head}
{chr(10).join(lines)}

Peak RSS of the driver plus the largest worker, 10× / 1×: **{ratio:.2f}**. Each Ray task holds one group of
episodes and the driver only fragment metadata, so what one process needs does not grow with the dataset; the
sum over workers grows with how many worker processes Ray keeps alive (bounded by the cluster), not with the data.""")


if __name__ == "__main__":
    main()
