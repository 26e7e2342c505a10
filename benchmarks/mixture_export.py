"""Export throughput vs ingest throughput, and mixture streaming vs single-source streaming, side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/mixture_export.py [--episodes 40] [--repeats 2] [--lerobot PY]

1. Two PushT sources (LeRobot v3.0, seeds 0 and 1) are written; the first is ingested (timed, Ray already up),
   then exported as lerobot-v3.0 and as lerobot-v2.1 (timed): frames/s of each, export / ingest.
2. ``--lerobot PY`` (a python with lerobot 0.4 installed): ``LeRobotDataset(root=export)`` loads the v3.0 export
   in a subprocess and its decoded frames (pyav backend) are compared with ``lk.video`` of the original lake.
3. The second source is ingested; the same recipe is packed single-source (mixture {pusht: 1}), as a 1:3
   mixture drawn at pack time and as the same mixture drawn afresh every epoch (``draw: epoch``: a pool the
   loader cuts to each epoch's draw); one epoch of each is streamed (best of ``--repeats``): samples/s and the
   ratio. ``--stream-only`` skips 1-2 (no export figures).
Prints a markdown block for benchmarks/RESULTS.md, with peak RSS and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lake
from lake._ray import ensure_ray
from packers import Recipe

RECIPE = Recipe(image_size=(32, 32), patch_size=16, action_horizon=8, token_budget=1024, name="bench")
LEROBOT_CHECK = r"""
import json, sys, numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/export", root=sys.argv[1], video_backend="pyav")
idx = [int(i) for i in sys.argv[2].split(",")]
out = {}
for i in idx:
    it = ds[i]
    for k in ds.meta.video_keys:
        out[f"{i}|{k}"] = (it[k].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
    out[f"{i}|ep"] = np.array([int(it["episode_index"]), int(it["frame_index"])])
np.savez(sys.argv[3], **out)
print(json.dumps({"len": len(ds), "episodes": ds.num_episodes, "tasks": ds.meta.total_tasks}))
"""


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--lerobot", default=None, help="python executable with lerobot 0.4 (optional check)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--stream-only", action="store_true", help="only part 3 (streaming)")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mixbench"))
    load0 = os.getloadavg()[0]
    ensure_ray(num_cpus=2)
    a = work / "pusht"
    b = work / "other"
    if not a.exists():
        lake.write_pusht_dataset(a, episodes=args.episodes, version="v3.0", min_len=40, max_len=80, seed=0)
    if not b.exists():
        lake.write_pusht_dataset(b, episodes=args.episodes // 2, version="v3.0", min_len=40, max_len=80, seed=1)
    lake.open(work / "warm").ingest(b, progress=False)  # Ray workers up before timing

    def ingest_once():
        shutil.rmtree(work / "lake", ignore_errors=True)
        return lake.open(work / "lake").ingest(a, progress=False)

    t_ingest, rep = best(ingest_once, 1 if args.stream_only else args.repeats)
    lk = lake.open(work / "lake")
    frames = rep.frames_added
    rows = [("ingest (Ray up)", t_ingest, frames / t_ingest, "")]
    for fmt in ("lerobot-v3.0", "lerobot-v2.1") if not args.stream_only else ():
        def export_once(fmt=fmt):
            shutil.rmtree(work / f"export_{fmt}", ignore_errors=True)
            return lk.export(work / f"export_{fmt}", format=fmt)
        t, er = best(export_once, args.repeats)
        rows.append((f"export {fmt}", t, frames / t, f"{er.videos} mp4 files, stream copy"))
    check = "not run (no --lerobot)"
    if args.lerobot:
        idx = [0, 1, frames // 2, frames - 1]
        npz = work / "lerobot_frames.npz"
        out = subprocess.run([args.lerobot, "-c", LEROBOT_CHECK, str(work / "export_lerobot-v3.0"),
                              ",".join(map(str, idx)), str(npz)], capture_output=True, text=True)
        if out.returncode:
            check = f"FAILED: {out.stderr.strip().splitlines()[-1]}"
        else:
            meta = json.loads(out.stdout.strip().splitlines()[-1])
            got = np.load(npz)
            order = sorted(lk.episodes(columns=["episode_id", "source", "source_episode_index"]).to_pylist(),
                           key=lambda r: (r["source"], r["source_episode_index"], r["episode_id"]))
            equal = True
            for i in idx:
                ep, fr = got[f"{i}|ep"]
                for cam in ("observation.images.top", "observation.images.wrist"):
                    mine = lk.video(order[ep]["episode_id"], cam, frames=[fr])[0]
                    equal &= bool(np.array_equal(mine, got[f"{i}|{cam}"]))
            check = (f"LeRobotDataset loads it: {meta['len']} frames, {meta['episodes']} episodes, {meta['tasks']} "
                     f"tasks; decoded frames (pyav) at {len(idx)} indices x 2 cameras equal the lake's: "
                     f"{'yes' if equal else 'NO'}")
    lk.ingest(b, source_name="other", progress=False)
    single = lk.pack(RECIPE, mixture={"pusht": 1.0}, progress=False)
    mixed = lk.pack(RECIPE, mixture={"pusht": 1.0, "other": 3.0}, progress=False)
    redrawn = lk.pack(RECIPE, mixture={"sources": {"pusht": 1.0, "other": 3.0}, "draw": "epoch"}, progress=False)

    def epoch(rep):
        n = 0
        for batch in lk.stream("train", recipe=rep.recipe_hash, batch_packs=4, seed=0):
            n += len(batch.origin)
        return n

    srows = []
    for label, r in (("single source (mixture {pusht: 1})", single), ("mixture {pusht: 1, other: 3}", mixed),
                     (f"same, draw: epoch (pool of {redrawn.samples:,} samples)", redrawn)):
        epoch(r)  # warm: open the table
        t, n = best(lambda r=r: epoch(r), args.repeats)
        srows.append((label, t, n, n / t))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nLoad average at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(shared machine, other jobs running).\nSource: {frames} frames ({args.episodes} PushT episodes, "
          f"2 cameras). Best of {args.repeats}.\n")
    if not args.stream_only:
        print("| what | wall s | frames/s | ÷ ingest | note |\n|---|---:|---:|---:|---|")
        for what, t, fps, note in rows:
            print(f"| {what} | {t:.2f} | {fps:,.0f} | {fps / rows[0][2]:.2f} | {note} |")
        print(f"\nLeRobot check: {check}\n")
    print("| stream one epoch of train | wall s | samples | samples/s | ÷ single source |\n|---|---:|---:|---:|---:|")
    for label, t, n, sps in srows:
        print(f"| {label} | {t:.3f} | {n:,} | {sps:,.0f} | {sps / srows[0][3]:.2f} |")
    print(f"\nPeak RSS (driver, getrusage): {rss:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
