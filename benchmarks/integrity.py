# .venv/bin/python benchmarks/integrity.py [--episodes 200] [--repeats 3] [--record] [--serial-vs REF]
"""Cost of byte integrity: ingest with strict decoding vs the plain decode of the same videos, `lake verify`
throughput, and re-ingest of an unchanged source vs the first ingest.

One process, one run, on the 200-episode PushT v3.0 source of ``benchmarks/ingest.py`` (written once under
``benchmarks/_data/``):

1. rounds alternate (so background load hits both alike): the plain PyAV decode of every mp4 (``av.open``,
   ``decode(video=0)``, ``to_ndarray("rgb24")``, 1 thread and ``thread_type="AUTO"``; the faster is the
   decode-bound baseline, as in ``benchmarks/ingest.py``) and ``lk.ingest(src)`` into a fresh lake with Ray
   already up; ingest decodes strictly (``err_detect=explode``, corrupt-frame flags, packet/frame counts),
   checks timestamps and writes checksums;
2. on the last round's lake: re-ingest of the unchanged source (recognised from metadata + file sizes/mtimes,
   no Ray job), the same with ``verify_all=True`` (every file read, cut and hashed, compared by content hash),
   ``lk.verify()`` and ``lk.verify(deep=True)``.

Wall seconds are best of ``--repeats`` (medians printed); CPU seconds count the driver and every Ray process
(psutil), which a busy machine distorts less.

``--serial-vs REF`` instead runs the ingest work alone (``write_unit`` for every unit, serially, no Ray) with this
checkout's ``lake`` and with ``git archive REF lake`` (the code before the integrity checks), alternating, in
fresh subprocesses: the CPU cost of the checks without Ray or machine load in the way.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import av

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import lake  # noqa: E402
import lake._ray  # noqa: E402
from _report import cpu_model, record  # noqa: E402
from ingest import DATA, ChildMonitor, dataset, decode_files, driver_peak_rss, folder_bytes  # noqa: E402


def timed(fn, repeats: int):
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return walls, cpus, out


def _segment(path: Path):
    from lake._video import cut, demux

    with open(path, "rb") as f:
        st = demux(f, str(path))
    return cut(st, 0.0, 3.0, str(path))  # the first 30 frames: one episode's worth


def detection(files: list[Path], trials: int, seed: int = 0) -> list[tuple[str, str, int, int, int]]:
    """Random single-byte flips inside I- and P-frame packets of one file per codec, each decoded the way ingest
    did before (FFmpeg's defaults: errors concealed; only a raised error or a missing frame counts) and strictly
    (``lake._video.decode(strict=True)``). Returns (codec, I/P, trials, caught before, caught strict)."""
    import dataclasses

    import numpy as np

    from lake._lerobot import EpisodeError
    from lake._video import decode

    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for path in files:
        seg = _segment(path)
        if seg.codec in seen:
            continue
        seen.add(seg.codec)
        for key in (True, False):
            packets = np.flatnonzero(seg.key == key)
            before = strict = 0
            for _ in range(trials):
                p = int(packets[rng.integers(len(packets))])
                a, b = int(seg.offsets[p]), int(seg.offsets[p + 1])
                at = int(rng.integers(a + min(4, (b - a) // 2), b))
                data = bytearray(seg.data)
                data[at] ^= 1 << int(rng.integers(8))
                bad = dataclasses.replace(seg, data=bytes(data))
                try:
                    frames, _ = decode(bad, None, strict=False)
                    before += len(frames) != len(seg.pts)
                except EpisodeError:
                    before += 1
                try:
                    decode(bad, None, strict=True)
                except EpisodeError:
                    strict += 1
            out.append((seg.codec, "I" if key else "P", trials, before, strict))
    return out


SERIAL = r"""
import json, sys, tempfile, shutil, time
import lake
from lake import _ingest as ing
from lake._lerobot import frame_fields, read_source
from lake._schema import frames_schema, frames_table_name
from lake._store import normalize_uri
s = read_source(normalize_uri(sys.argv[1]))
fields = frame_fields(s.features)
ft = frames_table_name(frames_schema(fields))
units = ing.units_of(s)
d = tempfile.mkdtemp()
lk = lake.open(d + "/lk")
c, t = time.process_time(), time.perf_counter()
for i in range(len(units)):
    r = ing.write_unit({"unit": i}, src=s, units=units, fields=fields, store=lk.store, frames_table=ft,
                       present=frozenset(), split_ratios={"train": 1.0}, exclude={})
    assert not json.loads(r["bad"]), r["bad"]
print(json.dumps({"cpu": time.process_time() - c, "wall": time.perf_counter() - t}))
shutil.rmtree(d)
"""


def serial_vs(ref: str, src: Path, repeats: int) -> str:
    import subprocess

    old = Path(tempfile.mkdtemp(prefix="lake-ref-", dir=DATA))
    try:
        tar = subprocess.run(["git", "archive", ref, "lake"], cwd=HERE.parent, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=tar, check=True)
        res = defaultdict(list)
        for r in range(repeats):
            for name, path in (("before", old), ("now", HERE.parent)):
                out = subprocess.run([sys.executable, "-c", SERIAL, str(src)], check=True, capture_output=True,
                                     text=True, env={**os.environ, "PYTHONPATH": str(path)}).stdout
                res[name].append(json.loads(out.strip().splitlines()[-1]))
                print(f"[{r + 1}/{repeats}] {name}: {res[name][-1]}", flush=True)
    finally:
        shutil.rmtree(old, ignore_errors=True)
    b = min(x["cpu"] for x in res["before"])
    n = min(x["cpu"] for x in res["now"])
    all_b = ", ".join(f"{x['cpu']:.2f}" for x in res["before"])
    all_n = ", ".join(f"{x['cpu']:.2f}" for x in res["now"])
    return (f"Serial ingest work (`write_unit` for every unit, no Ray, fresh process each, alternating; "
            f"`--serial-vs {ref}`), CPU seconds best of {repeats}: before the integrity checks ({ref}) "
            f"**{b:.2f}**, with them **{n:.2f}** (all rounds: before "
            f"{all_b}; now {all_n}): **now / before = {n / b:.2f}**.")


def main() -> None:
    import faulthandler

    faulthandler.dump_traceback_later(900, repeat=True)  # a stuck run shows where
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serial-vs", metavar="REF", help="only compare the serial ingest work with git REF's lake/")
    ap.add_argument("--flips", type=int, default=0,
                    help="random bit flips per codec and frame type (0: skip; the non-strict decode, frame-threaded, "
                         "can hang on damaged h264: see lake._video.decode)")
    ap.add_argument("--record", action="store_true", help='replace the "## Integrity" section of RESULTS.md')
    args = ap.parse_args()
    cmd = " ".join([".venv/bin/python benchmarks/integrity.py", *sys.argv[1:]])
    src = dataset(args.episodes)
    if args.serial_vs:
        line = serial_vs(args.serial_vs, src, args.repeats)
        print(line)
        if args.record:
            record("Integrity: CPU cost of the checks", f"Command: `{cmd}`; {cpu_model()}, {os.cpu_count()} cores, "
                   f"{datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.0f} (shared machine)."
                   f"\n\n{line}")
        return
    info = json.loads((src / "meta" / "info.json").read_text())
    T = int(info["total_frames"])
    files = sorted((src / "videos").rglob("*.mp4"))
    load0 = os.getloadavg()
    mon = ChildMonitor()
    wall, cpu = defaultdict(list), defaultdict(list)
    work = Path(tempfile.mkdtemp(prefix="bench-integrity-", dir=DATA))
    try:
        t = time.perf_counter()
        for attempt in range(5):  # Ray gives its raylet 30 s to come up, too little on an overloaded machine
            try:
                lake._ray.ensure_ray()
                break
            except Exception as e:  # noqa: BLE001
                import ray

                ray.shutdown()
                print(f"Ray did not start ({str(e)[:80]}); again", flush=True)
        ray_start = time.perf_counter() - t
        for r in range(args.repeats):
            for mode in (None, "AUTO"):
                key = f"decode {mode or '1 thread'}"
                s, c, _ = decode_files(files, mode, key)
                wall[key].append(s)
                cpu[key].append(c)
            lake_dir = work / f"lake-{r}"
            if lake_dir.exists():
                shutil.rmtree(lake_dir)
            lk = lake.open(lake_dir)
            c0 = time.process_time()
            with mon.watching():
                t = time.perf_counter()
                rep = lk.ingest(src, progress=False)
                s = time.perf_counter() - t
            if rep.frames_added != T or rep.quarantined:
                raise SystemExit(f"ingest did not land everything: {rep}")
            wall["ingest"].append(s)
            cpu["ingest"].append(time.process_time() - c0 - mon.own_cpu + mon.cpu_seconds())
            print(f"[{r + 1}/{args.repeats}] decode 1 thread {wall['decode 1 thread'][-1]:.2f} s, AUTO "
                  f"{wall['decode AUTO'][-1]:.2f} s; ingest {s:.2f} s ({cpu['ingest'][-1]:.2f} CPU s)", flush=True)
        lake_bytes = sum(folder_bytes(lake_dir).values())

        def again():
            rep = lk.ingest(src, progress=False)
            assert rep.version is None and rep.episodes_unchanged == args.episodes, rep
            return rep

        def again_all():
            rep = lk.ingest(src, progress=False, verify_all=True)
            assert rep.version is None and rep.episodes_unchanged == 0 and rep.episodes_skipped == args.episodes, rep
            return rep

        wall["unchanged"], cpu["unchanged"], _ = timed(again, max(3, args.repeats))
        print(f"unchanged re-ingest: {min(wall['unchanged']):.3f} s", flush=True)
        with mon.watching():
            wall["verify_all"], c, _ = timed(again_all, 1)
        cpu["verify_all"] = [c[0] - mon.own_cpu + mon.cpu_seconds()]
        print(f"verify_all re-ingest: {wall['verify_all'][0]:.2f} s", flush=True)
        wall["verify"], cpu["verify"], vrep = timed(lambda: lk.verify(progress=False), args.repeats)
        print(f"verify: {min(wall['verify']):.2f} s", flush=True)
        wall["deep"], cpu["deep"], drep = timed(lambda: lk.verify(deep=True, progress=False), 1)
        print(f"verify --deep: {wall['deep'][0]:.2f} s", flush=True)
        assert vrep.ok and drep.ok, (vrep.mismatches, drep.mismatches)
        rss = driver_peak_rss()
        flips = detection(files, args.flips) if args.flips else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()

    bw = {k: min(v) for k, v in wall.items()}
    md = {k: statistics.median(v) for k, v in wall.items()}
    bc = {k: min(v) for k, v in cpu.items()}
    dec = min(("decode 1 thread", "decode AUTO"), key=lambda k: bw[k])
    ratio = bw[dec] / bw["ingest"]
    mb = vrep.bytes / 1e6
    busy = max(load0[0], load1[0]) > (os.cpu_count() or 1)
    lines = [
        f"Command: `{cmd}`  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, no GPU, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, PyAV {av.__version__}  ",
        f"Date: {datetime.date.today().isoformat()}. Load average at start / end: {load0[0]:.1f} / {load1[0]:.1f} on "
        f"{os.cpu_count()} cores" + (" — the machine was shared with other jobs (several engineers' test runs), so "
                                     "wall times are inflated and noisy; CPU seconds are steadier." if busy else ".")
        + f" Peak RSS of the driver: {rss / 2**20:,.0f} MiB.",
        "",
        f"Source: the {args.episodes}-episode PushT v3.0 set of `benchmarks/ingest.py` ({T:,} frames, 2 cameras, "
        f"{len(files)} mp4 files). Lake after one ingest: {lake_bytes / 1e6:,.1f} MB.",
        "",
        "| what | wall s (best) | wall s (median) | CPU s (best) | figure |",
        "|---|---:|---:|---:|---|",
        f"| plain PyAV decode, 1 thread | {bw['decode 1 thread']:.2f} | {md['decode 1 thread']:.2f} | "
        f"{bc['decode 1 thread']:.2f} | |",
        f"| plain PyAV decode, `thread_type=\"AUTO\"` | {bw['decode AUTO']:.2f} | {md['decode AUTO']:.2f} | "
        f"{bc['decode AUTO']:.2f} | |",
        f"| **ingest, strict decode + timestamp checks + checksums** (Ray up) | {bw['ingest']:.2f} | "
        f"{md['ingest']:.2f} | {bc['ingest']:.2f} | **ingest / plain decode = {ratio:.2f}** (medians "
        f"{md[dec] / md['ingest']:.2f}; goal ≥ 1.0) |",
        f"| re-ingest, source unchanged (metadata + sizes/mtimes, no Ray job) | {bw['unchanged']:.3f} | "
        f"{md['unchanged']:.3f} | {bc['unchanged']:.3f} | **{bw['unchanged'] / bw['ingest']:.1%} of the first "
        f"ingest** (goal ≤ 5%); {bw['unchanged'] / (bw['ingest'] + ray_start):.1%} counting Ray's startup "
        f"({ray_start:.1f} s) in the first |",
        f"| re-ingest with `verify_all=True` (read + cut + hash every file, no decode) | {bw['verify_all']:.2f} | | "
        f"{bc['verify_all']:.2f} | {bw['verify_all'] / bw['ingest']:.0%} of the first ingest |",
        f"| `lake verify` | {bw['verify']:.2f} | {md['verify']:.2f} | {bc['verify']:.2f} | **{mb / bw['verify']:,.0f} "
        f"MB/s** ({mb:,.1f} MB: {vrep.segments} segments + {vrep.episodes} episodes' frame rows), "
        f"{mb / bc['verify']:,.0f} MB per CPU s |",
        f"| `lake verify --deep` (+ strict decode of every segment) | {bw['deep']:.2f} | | {bc['deep']:.2f} | "
        f"{mb / bw['deep']:,.1f} MB/s, {2 * T / bw['deep']:,.0f} camera frames/s |",
    ]
    lines += [] if not flips else [
        "",
        f"What a decoder can see: {args.flips} random single-bit flips per codec and frame type, each inside one "
        "packet of a source mp4 (the packet index excluded), decoded the way ingest decoded before (FFmpeg's "
        "defaults: concealment on; caught = an error raised or a frame missing) and strictly (as ingest now does).",
        "",
        "| codec | packets | flips | caught before | caught strict |",
        "|---|---|---:|---:|---:|",
        *(f"| {c} | {k}-frames | {n} | {b / n:.0%} | {st / n:.0%} |" for c, k, n, b, st in flips),
        "",
        "The rest decode without any error to other pixels (a flip in residual data that stays valid syntax): no "
        "decoder can tell them from the encoder's output, so they need a checksum from the producer of the file; "
        "once in the lake, such bytes are covered by the segment checksums that `lake verify` recomputes.",
    ]
    body = "\n".join(lines)
    print()
    print(body)
    if args.record:
        record("Integrity", body)
        print(f"\nrecorded in {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
