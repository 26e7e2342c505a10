# .venv/bin/python benchmarks/lerobot_peers.py [--batch-size 32] [--workers 0,2] [--batches 50] [--map-batches 10]
#     [--decoded-batches 150] [--repeats 3] [--record]
"""LeRobot's own loader vs the lake's: ``LeRobotDataset`` + DataLoader, ``lake.stream`` and ``LeRobotStyleDataset``.

Issue 4, benchmark items 3 and 4, on one PushT source (LeRobot v3.0, 200 episodes, 2 cameras: top h264 96x96,
wrist AV1 64x64, written by ``lake.write_pusht_dataset``; cached under ``benchmarks/_data/``):

- peer: ``LeRobotDataset(root=source, delta_timestamps={"action": 16 steps})`` in a torch DataLoader
  (``shuffle=True``), run by ``benchmarks/peers/lerobot_loader.py`` in ``.venv-peers`` (``make bench-peers``
  builds it: lerobot 0.4.4 with the torch it pins), with its default video backend (torchcodec) and with
  ``video_backend="pyav"``;
- ``lake.stream``: the source ingested into a lake of its own and packed by ``lk.pack()`` with
  ``Recipe(image_size=(96, 96), patch_size=16, action_horizon=16)`` (pre-decoded uint8 patches), split
  ``train``, a batch of ``round(B / samples per pack)`` packs (~B samples), to the end of the epoch;
- ``loaders.LeRobotStyleDataset(lk, delta_timestamps=...)`` (unpacked) in a torch DataLoader (``shuffle=True``,
  spawn context for workers): on the lake's decoded frames (``lk.decode_videos()``, built once with the lake: frames
  taken by row, a batch at a time), and decoding video per item (``decoded=False``, via ``lk.video_readers``) with
  its default episode cache (8) and with a cache that holds every episode (one epoch timed from ``iter()``: every
  episode decoded once per worker).

Same batch size B and worker count W for all. Every (method, W) round runs in a fresh process (so peak RSS is
per method), the methods in rotating order within each repeat (background load hits all alike); best and median
samples/s over ``--repeats`` rounds. CPU s: the main process (all threads) plus its DataLoader workers, measured
over the timed window: the figure to trust on a shared machine. Before timing, LeRobot's items are checked
against the parquet files (lengths, indices, action chunks, padding, state) and against the lake's items
(the same, plus the decoded images).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import lake  # noqa: E402

DATA = HERE / "_data"
SOURCE = DATA / "pusht-v3.0-200ep-seed0"
LAKE = DATA / "peers-pusht-200ep"
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = HERE / "peers" / "lerobot_loader.py"
SECTION = "LeRobot peers"
SAVED = DATA / "lerobot_peers.json"  # the last run's figures (--rerender)
BUILD = DATA / "peers-pusht-200ep.build.json"  # wall seconds of the lake's ingest and pack (when it was built)
HORIZON, FPS = 16, 10
GOAL_STREAM = 10.0
CHECK_INDICES = [0, 1, 60, 73, 74, 5000, 10073]


def recipe():
    import packers

    return packers.Recipe(image_size=(96, 96), patch_size=16, action_horizon=HORIZON)


def delta_timestamps() -> dict[str, list[float]]:
    return {"action": [i / FPS for i in range(HORIZON)]}


# --- data -------------------------------------------------------------------------------------------------------

def ensure_source() -> Path:
    info = SOURCE / "meta" / "info.json"
    if info.exists() and json.loads(info.read_text()).get("total_episodes") == 200:
        return SOURCE
    tmp = DATA / f".{SOURCE.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"writing the 200-episode PushT v3.0 dataset to {SOURCE} ...", flush=True)
    lake.write_pusht_dataset(tmp, episodes=200, version="v3.0", min_len=20, max_len=80, seed=0)
    shutil.rmtree(SOURCE, ignore_errors=True)
    tmp.rename(SOURCE)
    return SOURCE


def ensure_decoded(lk) -> None:
    """The lake's videos decoded into ``decoded_frames`` (timed into BUILD when it is done here)."""
    t = time.perf_counter()
    rep = lk.decode_videos(progress=False)
    if rep.version is not None:
        decode_s = time.perf_counter() - t
        print(f"decoded {rep.videos} videos, {rep.frames} frames ({rep.bytes / 2**20:.0f} MiB) in {decode_s:.1f} s", flush=True)
        build = json.loads(BUILD.read_text()) if BUILD.exists() else {}
        BUILD.write_text(json.dumps({**build, "decode_s": decode_s, "decode_bytes": rep.bytes,
                                     "decode_frames": rep.frames, "decode_date": datetime.date.today().isoformat()}))


def ensure_lake() -> Path:
    """The source ingested, packed with ``recipe()`` and its videos decoded (a lake of this benchmark's own; cached)."""
    import loaders

    if (LAKE / "_log.lance").exists():
        try:
            lk = lake.open(LAKE, create=False)
            loaders.resolve(lk, recipe())
            ensure_decoded(lk)
            return LAKE
        except Exception as e:  # noqa: BLE001 - anything short of a packed table: rebuild
            print(f"rebuilding {LAKE}: {type(e).__name__}: {e}", flush=True)
    shutil.rmtree(LAKE, ignore_errors=True)
    lk = lake.open(LAKE)
    t = time.perf_counter()
    rep = lk.ingest(ensure_source(), progress=False)
    ingest_s = time.perf_counter() - t
    print(f"ingested {rep.episodes_added} episodes in {ingest_s:.1f} s", flush=True)
    t = time.perf_counter()
    rep = lk.pack(recipe(), progress=False)
    pack_s = time.perf_counter() - t
    print(f"packed {rep.samples} samples into {rep.packs} packs (fill {rep.fill:.3f}) in {pack_s:.1f} s", flush=True)
    BUILD.write_text(json.dumps({"ingest_s": ingest_s, "pack_s": pack_s, "date": datetime.date.today().isoformat()}))
    ensure_decoded(lk)
    return LAKE


def train_split() -> tuple[int, int]:
    """(packs, samples) of the split ``train`` of the packed table."""
    import loaders

    ds = loaders.resolve(lake.open(LAKE, create=False), recipe()).open()
    meta = ds.to_table(columns=["n_samples"], filter="split = 'train'")
    return meta.num_rows, int(np.asarray(meta["n_samples"]).sum())


# --- the lake's side (child processes of this script, main venv) ----------------------------------------------

def child(kind: str, batch_size: int, workers: int, warmup: int, batches: int, batch_packs: int, seed: int) -> dict:
    import torch

    import loaders
    from _harness import measure

    lk = lake.open(LAKE, create=False)
    if kind == "stream":
        s = lk.stream("train", recipe=recipe(), batch_packs=batch_packs, seed=seed, num_workers=workers)
        # stop one batch before the end: the workers are still alive to be measured
        res = measure(lambda: s, lambda b: b.n_samples, warmup, len(s) - warmup - 1)
        res["batch_packs"] = batch_packs
    else:
        cache = {"map": 8, "map-cached": 10**6, "map-decoded": 8}[kind]
        ds = loaders.LeRobotStyleDataset(lk, delta_timestamps=delta_timestamps(), cache_episodes=cache,
                                         decoded=kind == "map-decoded")
        g = torch.Generator()
        g.manual_seed(seed)

        def loader():
            return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                               generator=g, drop_last=True,
                                               multiprocessing_context="spawn" if workers else None)

        if kind == "map-cached":  # one epoch, from iter() on: every episode decoded once per worker
            warmup, batches = 0, len(ds) // batch_size - 1
        res = measure(loader, lambda b: len(b["index"]), warmup, batches)
        res["cache_episodes"] = min(cache, ds.num_episodes)
    res.update({"method": kind, "workers": workers, "batch_size": batch_size, "torch": torch.__version__,
                "torch_threads": torch.get_num_threads()})
    return res


def profile_map(n: int, seed: int) -> dict:
    """(child) CPU profile of ``n`` random ``LeRobotStyleDataset`` items, default cache, no workers."""
    import cProfile
    import pstats

    import loaders

    lk = lake.open(LAKE, create=False)
    ds = loaders.LeRobotStyleDataset(lk, delta_timestamps=delta_timestamps(), decoded=False)
    ds[0]  # lake handles, episode index
    idx = np.random.default_rng(seed + 1).permutation(len(ds))[:n]
    pr = cProfile.Profile()
    cpu = time.process_time()
    pr.enable()
    for i in idx:
        ds[int(i)]
    pr.disable()
    cpu = time.process_time() - cpu
    stats = pstats.Stats(pr).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}

    def cum(file_end: str, name: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[0].endswith(file_end) and k[2] == name)

    total = cum("loaders/lerobot.py", "__getitem__")
    # Lance's outer to_table, called from the lake (lk.video, lk.frames): the filtered scans
    scans = [v for k, v in stats.items() if k[0].endswith("lance/dataset.py") and k[2] == "to_table"
             and any(c[0].endswith("lake/_lake.py") for c in v[4])]
    blobs = [v for k, v in stats.items() if k[2] == "take_blobs" and k[0].endswith("lance/dataset.py")]
    return {"items": n, "cpu_s": cpu, "profiled_s": total, "lance_filtered_scans_s": sum(v[3] for v in scans),
            "lance_scans": sum(v[1] for v in scans),
            "blobs_s": sum(v[3] for v in blobs), "blob_lookups": sum(v[1] for v in blobs),
            "gop_decode_s": cum("lake/_video.py", "decode_frames"),
            "decode_s": cum("lake/_video.py", "decode"), "video_s": cum("lake/_lake.py", "video"),
            "frames_s": cum("lake/_lake.py", "frames")}


def profile_decoded(batches: int, batch_size: int, seed: int) -> dict:
    """(child) Per-batch costs of ``LeRobotStyleDataset`` on decoded frames, no workers, torch on one thread: the
    items (``__getitems__``; its Lance take alone), and ``default_collate`` into ordinary memory (the main
    process, W=0) and into shared memory (what a DataLoader worker does with every batch)."""
    import torch
    import torch.utils.data._utils.worker as worker
    from torch.utils.data import default_collate

    import loaders

    torch.set_num_threads(1)
    lk = lake.open(LAKE, create=False)
    ds = loaders.LeRobotStyleDataset(lk, delta_timestamps=delta_timestamps(), decoded=True)
    rng = np.random.default_rng(seed + 2)
    idx = [rng.permutation(len(ds))[:batch_size] for _ in range(batches + 5)]
    table = lk.table("decoded_frames")
    take_s, items_s, plain_s, shared_s = [], [], [], []
    for n, i in enumerate(idx):
        rows = np.unique([ds._rows[(int(e), c)][0] + int(f) for e, f in zip(*ds._positions(i)) for c in ds.cameras])
        t0 = time.perf_counter()
        table.take(rows, columns=["pixels"])
        t1 = time.perf_counter()
        items = ds.__getitems__(i)
        t2 = time.perf_counter()
        default_collate(items)
        t3 = time.perf_counter()
        worker._worker_info = worker.WorkerInfo(id=0, num_workers=1, seed=0, dataset=ds)  # collate as a worker does
        try:
            default_collate(items)
        finally:
            worker._worker_info = None
        t4 = time.perf_counter()
        if n >= 5:
            take_s.append(t1 - t0)
            items_s.append(t2 - t1)
            plain_s.append(t3 - t2)
            shared_s.append(t4 - t3)
    ms = lambda v: 1000 * statistics.median(v)  # noqa: E731
    return {"batches": batches, "batch_size": batch_size, "take_ms": ms(take_s), "items_ms": ms(items_s),
            "collate_ms": ms(plain_s), "collate_shared_ms": ms(shared_s)}


# --- running the methods ------------------------------------------------------------------------------------------

def run_json(cmd: list[str], env: dict | None = None) -> dict:
    env = {**os.environ, "LANCE_LOG": "error", **(env or {})}
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {out.returncode}):\n{out.stderr[-4000:]}\n{out.stdout[-2000:]}")
    return json.loads(lines[-1])


def peer_cmd(args, backend: str, workers: int) -> list[str]:
    return [str(PEERS_PY), str(PEER_SCRIPT), "--root", str(SOURCE), "--batch-size", str(args.batch_size),
            "--workers", str(workers), "--warmup", str(args.warmup), "--batches", str(args.batches),
            "--horizon", str(HORIZON), "--backend", backend, "--seed", str(args.seed)]


def child_cmd(args, kind: str, workers: int, batch_packs: int) -> list[str]:
    batches = args.decoded_batches if kind == "map-decoded" else args.map_batches
    return [sys.executable, __file__, "--child", kind, "--batch-size", str(args.batch_size), "--workers", str(workers),
            "--warmup", str(args.warmup), "--batches", str(batches), "--batch-packs", str(batch_packs),
            "--seed", str(args.seed)]


# --- checking LeRobot's reading of the source ----------------------------------------------------------------------

def source_frames():
    """The source's data parquet files as one table, rows in ``index`` order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((SOURCE / "data").rglob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    return t.take(np.argsort(t["index"].to_numpy()))


def meta_diff(lr: dict, ds) -> dict:
    """LeRobot's ``dataset.meta`` (dumped by the peer) vs ``LeRobotStyleDataset.meta``: what differs (the fields
    training code reads), and the largest stats difference (LeRobot's stats.json vs the lake's stats, relative to
    the feature's range)."""
    m = ds.meta
    ours = {"fps": m.fps, "camera_keys": m.camera_keys, "video_keys": m.video_keys, "features": m.features,
            "robot_type": m.robot_type, "total_frames": m.total_frames, "total_episodes": m.total_episodes,
            "num_frames": ds.num_frames, "num_episodes": ds.num_episodes, "episodes_arg": ds.episodes,
            "dataset_from_index": m.episodes["dataset_from_index"], "dataset_to_index": m.episodes["dataset_to_index"]}
    differ = [k for k in ours if k not in lr]
    differ += [k for k, v in ours.items() if k in lr and json.loads(json.dumps(v)) != lr[k]]
    worst = {}
    for feat, st in lr["stats"].items():
        if feat not in m.stats:
            differ.append(f"stats[{feat}] missing")
            continue
        span = np.maximum(np.asarray(st["max"], float) - np.asarray(st["min"], float), 1e-12)
        worst[feat] = max(float(np.max(np.abs(np.asarray(st[s], float) - np.asarray(m.stats[feat][s], float)) / span))
                          for s in ("mean", "std", "min", "max"))
        if int(np.asarray(st["count"]).ravel()[0]) != int(np.asarray(m.stats[feat]["count"]).ravel()[0]):
            differ.append(f"stats[{feat}].count")
    return {"differ": differ, "stats_max_rel_diff": max(worst.values()) if worst else None,
            "stats_worst": max(worst, key=worst.get) if worst else None}


def check(args) -> dict:
    """LeRobot's items vs the parquet and vs ``LeRobotStyleDataset``'s; returns findings (problems listed)."""
    import loaders

    problems: list[str] = []
    t = source_frames()
    index = t["index"].to_numpy()
    ep_col, fr_col = t["episode_index"].to_numpy(), t["frame_index"].to_numpy()
    state = np.stack(t["observation.state"].to_numpy(zero_copy_only=False))
    action = np.stack(t["action"].to_numpy(zero_copy_only=False))
    ts = t["timestamp"].to_numpy()
    eps, starts, lengths = np.unique(ep_col, return_index=True, return_counts=True)
    rng = np.random.default_rng(args.seed)
    indices = sorted(set(CHECK_INDICES + rng.integers(0, len(index), 13).tolist()))
    lk = lake.open(LAKE, create=False)
    ds = loaders.LeRobotStyleDataset(lk, delta_timestamps=delta_timestamps(), decoded=True)
    ours = ds.__getitems__(indices)  # decoded frames, a batch at a time: checked against LeRobot below
    video = loaders.LeRobotStyleDataset(lk, delta_timestamps=delta_timestamps(), decoded=False)
    for i, a, b in zip(indices, ours, (video[i] for i in indices)):
        for k in a:
            if not (a[k] == b[k] if isinstance(a[k], str) else np.array_equal(a[k].numpy(), b[k].numpy())):
                problems.append(f"item {i} {k}: decoded frames differ from decoding video")
    out: dict = {"indices": indices, "backends": {}}
    if not np.array_equal(index, np.arange(len(index))):
        problems.append("parquet `index` is not 0..N-1")
    lake_lengths = [int(e["length"]) for e in ds.episode_rows]
    if lake_lengths != lengths.tolist():
        problems.append("lake episode lengths differ from the parquet's")
    for backend in ("torchcodec", "pyav"):  # a backend that fails is reported under problems
        with tempfile.TemporaryDirectory() as tmp:
            npz = os.path.join(tmp, "items.npz")
            try:
                meta = run_json([str(PEERS_PY), str(PEER_SCRIPT), "--root", str(SOURCE), "--backend", backend,
                                 "--horizon", str(HORIZON), "--dump", npz, "--indices", ",".join(map(str, indices))])
            except RuntimeError as e:
                problems.append(f"LeRobot ({backend}) could not read the items: {str(e)[-600:]}")
                continue
            lr = dict(np.load(npz))
        found: dict = {"backend_used": meta["backend"], "meta": meta_diff(meta, ds)}
        if found["meta"]["differ"]:
            problems.append(f"LeRobot ({backend}): dataset.meta differs from LeRobotStyleDataset.meta in "
                            f"{found['meta']['differ']}")
        if meta["len"] != len(index) or meta["num_episodes"] != len(eps) or meta["episode_lengths"] != lengths.tolist():
            problems.append(f"LeRobot ({backend}): len {meta['len']}, {meta['num_episodes']} episodes, lengths "
                            f"{'equal' if meta['episode_lengths'] == lengths.tolist() else 'differ'}; parquet: "
                            f"{len(index)} frames, {len(eps)} episodes")
        bad: set[str] = set()
        img_diff = {k: [] for k in lr if k.startswith("observation.images.")}
        for n, i in enumerate(indices):
            e, f = int(ep_col[i]), int(fr_col[i])
            length, start = int(lengths[e]), int(starts[e])
            q = f + np.arange(HORIZON)
            want_chunk = action[start + np.clip(q, 0, length - 1)]
            want = {"index": i, "episode_index": e, "frame_index": f, "timestamp": ts[i],
                    "observation.state": state[i], "action": want_chunk, "action_is_pad": q >= length}
            for k, v in want.items():
                if not np.array_equal(np.asarray(lr[k][n]), np.asarray(v)):
                    bad.add(f"{k} vs parquet")
                if not np.array_equal(ours[n][k].numpy(), np.asarray(v)):
                    bad.add(f"{k}: lake item vs parquet")
            for k, diffs in img_diff.items():
                a, b = lr[k][n], ours[n][k].numpy()
                if a.shape != b.shape:
                    bad.add(f"{k} shape {a.shape} vs lake {b.shape}")
                else:
                    diffs.append(np.abs(a - b) * 255)
        if bad:
            problems.append(f"LeRobot ({backend}): mismatches: {sorted(bad)}")
        found["fields_equal"] = not bad
        flat = {k: np.concatenate([x.ravel() for x in v]) for k, v in img_diff.items() if v}
        found["image_diff"] = {k: {"max": float(v.max()), "mean": float(v.mean()), "equal_frac": float(np.mean(v < 0.5))}
                               for k, v in flat.items()}
        out["backends"][backend] = found
    out["problems"] = problems
    out["frames"], out["episodes"] = len(index), len(eps)
    return out


# --- report ---------------------------------------------------------------------------------------------------------

NOTES = """
Install (`make bench-peers`, 2026-11-22): `pip install lerobot==0.4.4` took 3 min 48 s and `.venv-peers` is 8.3 GB:
PyPI's Linux torch is the CUDA build (torch 2.10.0+cu128, 1.8 GB, pulling 4.3 GB of `nvidia-*` CUDA 12.8 wheels),
unused here. torchcodec 0.10 (LeRobot's default video backend) loads FFmpeg 4-8 shared libraries from the system
and fails to import without them (`OSError: Could not load this library: .../libtorchcodec_core4.so`, after trying
8 down to 4); the target installs Debian bookworm's FFmpeg 5.1 libraries (`libavcodec59` etc.: 93 packages, 165 MB,
14 s) when the import fails, and LeRobot falls back to `video_backend="pyav"` (torchvision's `VideoReader`, also
timed above) where that is not possible.

**Reading the figures.** LeRobot 0.4.4 reads the dataset `lake.write_pusht_dataset` writes as it is, offline:
metadata, episode boundaries, 16-step action chunks with their end-of-episode padding, and decoded frames of both
cameras (h264 and AV1, through torchcodec on the system FFmpeg and through PyAV's bundled FFmpeg) are identical to
the parquet and to the lake's own decode: no writer bug showed up. `lake.stream` against LeRobot's loader at equal
batch size: LeRobot spends about 3.6 ms of CPU per sample seeking and decoding one frame per camera, reading 16 action
rows through Hugging Face `datasets` and converting to float; the stream about 0.1 ms, Lance takes of pre-decoded packs
(since 2026-11-22 the packed table stores per-token payloads as lists of fixed-size lists, which Lance 2.1 decodes
~5× faster than flat lists: the first recording, before that change, had the stream at 11× LeRobot at W=0 and
6.6× at W=2). With W=2 the stream pays for moving every batch from the spawned workers to the main process (one
shared-memory copy per batch: `PackedBatch` pickles all its tensors as one buffer), so on 2 cores its best is
without workers; LeRobot's best is with them. The stream's samples are not the same objects as LeRobot's either:
uint8 16×16 patches of both cameras resized to 96×96, normalized state and actions, tokenized task, i.e. what the
model consumes, decoded and resized once by `lk.pack()` (not in its figures; see above: a fraction of one LeRobot
epoch, paid once), where LeRobot hands float32 frames at source size and raw values that the training step still
has to normalize, tokenize and (for another input size) resize, every step.

The map-style `LeRobotStyleDataset` has the same items as LeRobot's (checked above, images included) from two
sources. On the lake's decoded frames (`lk.decode_videos()`, one Ray job, once per lake version: every frame as raw
RGB in a Lance table) an item costs no decoding: the DataLoader hands the dataset a whole batch of indices
(`__getitems__`), the frames of all its cameras are one sorted Lance take, frame columns are gathered a column at
a time from memory. That is the way past 10× LeRobot at W=0; it spends disk (see above) for it. With W=2 on these 2
cores the workers' shared-memory collation (below) eats the gain, so its figure there is far lower, and below W=0's.
Decoding video instead (no decoded frames, or `decoded=False`), an item decodes the GOPs covering its frames, from
the lake's packet index, which lands near LeRobot's loader: it is the fallback. With a cache that holds every
episode, epoch 1 decodes each whole episode once; with W=2 each spawned worker decodes every episode again and keeps
its own copy of the decoded frames, so it gains little there. LeRobot's pyav backend is slower than its torchcodec
default. Memory: LeRobot's ~1 GB main-process peak is mostly imports (`import torch`, the CUDA build, alone is
~700 MB RSS; the CPU torch in `.venv` imports in ~230 MB), against ~500 MB for the stream; forked LeRobot workers
share most of those pages (see PSS).
"""

LABELS = {
    ("lerobot", "torchcodec"): "LeRobotDataset, video_backend torchcodec (LeRobot's default)",
    ("lerobot", "pyav"): "LeRobotDataset, video_backend pyav",
    ("stream", None): "`lake.stream` (packed, pre-decoded)",
    ("map-decoded", None): "`LeRobotStyleDataset` on decoded frames (`lk.decode_videos()`)",
    ("map", None): "`LeRobotStyleDataset`, decoding video, cache_episodes=8 (default)",
    ("map-cached", None): "`LeRobotStyleDataset`, decoding video, cache of every episode, epoch 1",
}


def fmt_mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="0,2", help="DataLoader worker counts, comma-separated")
    ap.add_argument("--warmup", type=int, default=5, help="batches before the timed window")
    ap.add_argument("--batches", type=int, default=50, help="timed batches for LeRobotDataset")
    ap.add_argument("--map-batches", type=int, default=10, help="timed batches for LeRobotStyleDataset (default cache)")
    ap.add_argument("--decoded-batches", type=int, default=150, help="timed batches for LeRobotStyleDataset on decoded frames")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-pyav", action="store_true", help="skip LeRobot's pyav backend")
    ap.add_argument("--record", action="store_true", help=f"write the '## {SECTION}' section of RESULTS.md")
    ap.add_argument("--rerender", action="store_true", help="print (with --record: record) the last run's report again")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--batch-packs", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "profile-map":
        print(json.dumps(profile_map(48, args.seed)))
        return
    if args.child == "profile-decoded":
        print(json.dumps(profile_decoded(40, args.batch_size, args.seed)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, int(args.workers), args.warmup, args.batches,
                               args.batch_packs, args.seed)))
        return
    if args.rerender:  # the report of the last run (its figures saved in SAVED), e.g. after editing NOTES
        d = json.loads(SAVED.read_text())
        rounds = {tuple(c): rs for c, rs in d["rounds"]}
        body = report(argparse.Namespace(**d["args"]), rounds, list(rounds), d["found"], d["prof"], d["packs"],
                      d["samples"], d["batch_packs"], *d["load"], date=d["date"])
        print(body)
        if args.record:
            from _report import record

            record(SECTION, body)
            print("recorded in benchmarks/RESULTS.md")
        return
    if not PEERS_PY.exists():
        sys.exit(f"{PEERS_PY} is missing: run `make bench-peers` (it builds .venv-peers with lerobot 0.4.4)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    load0 = os.getloadavg()[0]
    ensure_source()
    ensure_lake()
    packs, samples = train_split()
    per_pack = samples / packs
    batch_packs = max(1, round(args.batch_size / per_pack))
    print(f"train split: {packs} packs, {samples} samples ({per_pack:.1f} per pack): {batch_packs} packs per batch",
          flush=True)

    t = time.perf_counter()
    found = check(args)
    print(f"check ({time.perf_counter() - t:.0f} s): {json.dumps(found)}", flush=True)

    prof = run_json([sys.executable, __file__, "--child", "profile-map", "--seed", str(args.seed)])
    print(f"map-style profile: {json.dumps(prof)}", flush=True)
    prof["decoded"] = run_json([sys.executable, __file__, "--child", "profile-decoded", "--seed", str(args.seed),
                                "--batch-size", str(args.batch_size)])
    print(f"map-style on decoded frames, per batch: {json.dumps(prof['decoded'])}", flush=True)

    backends = [] if args.no_pyav else ["pyav"]
    probe = subprocess.run([str(PEERS_PY), "-c", "import torchcodec.decoders"], check=False, capture_output=True,
                           text=True)
    if probe.returncode == 0:
        backends.insert(0, "torchcodec")
    else:  # no FFmpeg shared libraries for torchcodec: LeRobot falls back to pyav itself
        print(f"torchcodec does not load in .venv-peers; LeRobot runs with pyav only:\n{probe.stderr[-1500:]}",
              flush=True)
        backends = ["pyav"]
    workers = [int(w) for w in args.workers.split(",")]
    configs = []
    for w in workers:
        configs += [("lerobot", b, w) for b in backends]
        configs += [("stream", None, w), ("map-decoded", None, w), ("map", None, w), ("map-cached", None, w)]
    rounds: dict[tuple, list[dict]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for c in configs[r % len(configs):] + configs[:r % len(configs)]:
            kind, backend, w = c
            cmd = peer_cmd(args, backend, w) if kind == "lerobot" else child_cmd(args, kind, w, batch_packs)
            res = run_json(cmd)
            rounds[c].append(res)
            print(f"  round {r + 1} {kind} {backend or ''} W={w}: {res['samples']} samples in {res['wall_s']:.2f} s "
                  f"= {res['samples_per_s']:,.0f}/s; CPU {res['cpu_s']:.2f} s = {res['samples_per_cpu_s']:,.0f}/CPU s",
                  flush=True)
    load1 = os.getloadavg()[0]
    SAVED.write_text(json.dumps({"args": vars(args), "rounds": [[list(c), rs] for c, rs in rounds.items()],
                                 "found": found, "prof": prof, "packs": packs, "samples": samples,
                                 "batch_packs": batch_packs, "load": [load0, load1],
                                 "date": datetime.date.today().isoformat()}))
    body = report(args, rounds, configs, found, prof, packs, samples, batch_packs, load0, load1)
    print(body)
    if args.record:
        from _report import record

        record(SECTION, body)
        print("recorded in benchmarks/RESULTS.md")


def decoded_line(prof: dict) -> str:
    d = prof.get("decoded")
    if not d:
        return ""
    return (f"`LeRobotStyleDataset` on decoded frames, per batch of {d['batch_size']} (median of {d['batches']} random "
            f"batches, no workers, torch on one thread): the items (`__getitems__`) **{d['items_ms']:.1f} ms**, of which "
            f"the Lance take of the batch's frames {d['take_ms']:.1f} ms; `default_collate` {d['collate_ms']:.1f} ms into "
            f"ordinary memory (W=0) but **{d['collate_shared_ms']:.1f} ms** into fresh shared memory, which is what every "
            f"DataLoader worker does with every batch (torch's design: ~5 MiB a batch here, float32 frames, and page "
            f"faults are dear on this VM). That, plus receiving the batches in the main process, is why W=2 on 2 cores "
            f"is slower than W=0 for this dataset.")


def report(args, rounds, configs, found, prof, packs, samples, batch_packs, load0, load1, date=None) -> str:
    from _report import cpu_model

    def best(c, key="samples_per_s"):
        return max(r[key] for r in rounds[c])

    def med(c, key="samples_per_s"):
        return statistics.median(r[key] for r in rounds[c])

    peer = max((r for c in configs if c[0] == "lerobot" for r in rounds[c]), key=len)  # the most fields reported
    base_backend = next(c[1] for c in configs if c[0] == "lerobot")
    workers = sorted({c[2] for c in configs})
    rows = []
    for w in workers:
        base = next(c for c in configs if c[0] == "lerobot" and c[2] == w)
        for c in (c for c in configs if c[2] == w):
            kind, backend, _ = c
            rs = rounds[c]
            n_samples = rs[0]["samples"]
            ratio = "" if c == base else f"**{best(c) / best(base):.2f}×**"
            cpu_ratio = "" if c == base else f"{best(c, 'samples_per_cpu_s') / best(base, 'samples_per_cpu_s'):.2f}×"
            rss_main = max(r["peak_rss_main"] for r in rs)
            rss_w = max((max(r["peak_rss_workers"]) if r["peak_rss_workers"] else 0) for r in rs)
            rss_sum = max(r["peak_rss_main"] + sum(r["peak_rss_workers"]) for r in rs)
            pss = max(r["pss_end"] for r in rs)
            rows.append(f"| {LABELS[(kind, backend)]} | {w} | {n_samples:,} | {best(c):,.0f} | {med(c):,.0f} | "
                        f"{min(r['cpu_s'] for r in rs):.2f} | {best(c, 'samples_per_cpu_s'):,.0f} | {ratio} | "
                        f"{cpu_ratio} | {fmt_mib(rss_main)} | {fmt_mib(rss_w) if rss_w else '—'} | {fmt_mib(rss_sum)} | "
                        f"{fmt_mib(pss)} |")
    goal_lines = []
    for w in workers:
        base = next(c for c in configs if c[0] == "lerobot" and c[2] == w)
        s = best(("stream", None, w)) / best(base)
        s_cpu = best(("stream", None, w), "samples_per_cpu_s") / best(base, "samples_per_cpu_s")
        md = best(("map-decoded", None, w)) / best(base)
        md_cpu = best(("map-decoded", None, w), "samples_per_cpu_s") / best(base, "samples_per_cpu_s")
        m = best(("map", None, w)) / best(base)
        mc = best(("map-cached", None, w)) / best(base)
        goal_lines.append(f"- W={w}: stream / LeRobotDataset = **{s:.1f}×** wall ({s_cpu:.1f}× per CPU s) — "
                          f"goal ≥ {GOAL_STREAM:.0f}×: **{'met' if s >= GOAL_STREAM else 'not met'}**; map-style on "
                          f"decoded frames / LeRobotDataset = **{md:.1f}×** wall ({md_cpu:.1f}× per CPU s) — goal ≥ "
                          f"{GOAL_STREAM:.0f}×: **{'met' if md >= GOAL_STREAM else 'not met'}**; map-style decoding "
                          f"video: {m:.2f}× (default cache), {mc:.2f}× (every episode cached, epoch 1)")
    best_of = {k: max((best(c), c[2]) for c in configs if c[0] == k and (k != "lerobot" or c[1] == base_backend))
               for k in ("lerobot", "stream")}
    best_of["map-decoded"] = max((best(c), c[2]) for c in configs if c[0] == "map-decoded")
    goal_lines.append(f"- best W of each: map-style on decoded frames (W={best_of['map-decoded'][1]}) "
                      f"{best_of['map-decoded'][0]:,.0f} samples/s / LeRobotDataset (W={best_of['lerobot'][1]}) = "
                      f"**{best_of['map-decoded'][0] / best_of['lerobot'][0]:.1f}×**")
    goal_lines.append(f"- best W of each: stream (W={best_of['stream'][1]}) {best_of['stream'][0]:,.0f} samples/s / "
                      f"LeRobotDataset (W={best_of['lerobot'][1]}) {best_of['lerobot'][0]:,.0f} samples/s = "
                      f"**{best_of['stream'][0] / best_of['lerobot'][0]:.1f}×**")
    chk = found["backends"]
    img_lines = []
    for b, f in chk.items():
        diffs = "; ".join(f"{k.split('.')[-1]} max {v['max']:.1f}, mean {v['mean']:.2f}, "
                          f"{100 * v['equal_frac']:.1f}% of values equal"
                          for k, v in f["image_diff"].items())
        meta = f.get("meta")
        meta_txt = ("" if not meta else
                    f"; `dataset.meta` (fps, features, camera/video keys, robot type, totals, episodes' dataset from/to "
                    f"indices) {'equal to `LeRobotStyleDataset.meta`' if not meta['differ'] else 'DIFFERS: ' + str(meta['differ'])}"
                    f", `meta.stats` within {meta['stats_max_rel_diff']:.3f} of each feature's range (largest: "
                    f"{meta['stats_worst']}; LeRobot's stats.json image stats come from the frames before video "
                    f"encoding, the lake's from the decoded video)")
        img_lines.append(f"  - `{b}` (backend used: {f['backend_used']}){meta_txt}: indices, timestamps, state, 16-step action "
                         f"chunks and `action_is_pad` {'equal to the parquet' if f['fields_equal'] else 'DIFFER'}; "
                         f"images vs the lake's decode, in 1/255 units: {diffs}")
    build = json.loads(BUILD.read_text()) if BUILD.exists() else None
    build_line = ("Not in the stream's figures: the one-time work that makes its packs, measured when "
                  f"`{LAKE.relative_to(ROOT)}` was built ({build['date']}, Ray on the same 2 cores): `lk.ingest` "
                  f"{build['ingest_s']:.0f} s, `lk.pack` {build['pack_s']:.0f} s (wall; Ray start-up included)."
                  if build else "")
    if build and "decode_s" in build:
        video_mib = sum(f.stat().st_size for f in (SOURCE / "videos").rglob("*.mp4")) / 2**20
        build_line += (f" Nor in the decoded map-style figures: `lk.decode_videos()` decoded {build['decode_frames']:,} "
                       f"frames in {build['decode_s']:.0f} s ({build['decode_date']}), and the table holds "
                       f"{build['decode_bytes'] / 2**20:,.0f} MiB of pixels where the source's videos take {video_mib:.1f} "
                       f"MiB: decode once, store raw, the trade LeRobot's image (not video) datasets make.")
    problems = "none" if not found["problems"] else "; ".join(found["problems"])
    cmd = (f"benchmarks/lerobot_peers.py --batch-size {args.batch_size} --workers {args.workers} "
           f"--batches {args.batches} "
           f"--map-batches {args.map_batches} --decoded-batches {args.decoded_batches} --repeats {args.repeats} --record")
    return f"""
Command: `make bench-peers` (builds `.venv-peers`), then `.venv/bin/python {cmd}`  
Machine: {cpu_model()}, {os.cpu_count()} cores, no GPU, Linux {platform.release()}, Python {platform.python_version()}  
Date: {date or datetime.date.today().isoformat()}. Load average at start / end: {load0:.1f} / {load1:.1f} on {os.cpu_count()} cores (other jobs share the machine: wall times are noisy, CPU seconds are the steadier figure).  
Peer venv: lerobot {peer['lerobot']}, torch {peer['torch']} (the CUDA build PyPI serves; run on CPU), torchvision {peer['torchvision']}, torchcodec {peer['torchcodec']} (on the system's FFmpeg {peer.get('ffmpeg', '?')} shared libraries), PyAV {peer.get('av', '?')} (pyav backend, its bundled FFmpeg); lake venv: torch {next(rs[0]['torch'] for c, rs in rounds.items() if c[0] != 'lerobot')}.

Data: `{SOURCE.relative_to(ROOT)}`: LeRobot v3.0 PushT by `lake.write_pusht_dataset(episodes=200, min_len=20, max_len=80, seed=0)`, {found['frames']:,} frames, {found['episodes']} episodes, 2 cameras (top h264 96×96, wrist AV1 64×64). Every method yields a 16-step action chunk (`delta_timestamps={{"action": [i/10 for i in range(16)]}}` / `action_horizon=16`) and both cameras' current frame. `lake.stream`: the source ingested into `{LAKE.relative_to(ROOT)}` and packed by `lk.pack(Recipe(image_size=(96, 96), patch_size=16, action_horizon=16))`; it streams split `train` ({packs} packs, {samples:,} samples, {samples / packs:.1f} per pack), **{batch_packs} packs per batch** (≈{batch_packs * samples / packs:.0f} samples), shuffled, one epoch less the warm-up; the others take batches of **{args.batch_size}** samples, `shuffle=True`, over all {found['frames']:,} frames.

Method: each (method, W) round is a fresh process; {args.warmup} warm-up batches (worker start-up, decoder caches), then the timed window: LeRobotDataset {args.batches} batches, `LeRobotStyleDataset` on decoded frames {args.decoded_batches} batches, decoding video (default cache) {args.map_batches} batches, `lake.stream` the rest of the epoch; "every episode cached, epoch 1" times the whole first epoch from `iter()` (spawned workers' start-up included). Best / median of {args.repeats} rounds, methods in rotating order. CPU s = main process (all threads) + DataLoader workers, over the timed window (best round). Ratios are against LeRobotDataset with {base_backend} at the same W. Peak RSS = VmHWM (forked LeRobot workers count the pages they share with the parent again, so "main + workers" overstates them); PSS = proportional set size of main + workers at the end of the window (shared pages split).

| method | W | samples timed | samples/s (best) | samples/s (median) | CPU s (best) | samples / CPU s | wall vs LeRobot | CPU vs LeRobot | peak RSS main MiB | peak RSS largest worker MiB | main + workers MiB | PSS at end MiB |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

{chr(10).join(goal_lines)}

Checks (before timing; {len(found['indices'])} indices incl. first/last frames of episodes and the last frame of the dataset): LeRobot 0.4.4 loads the dataset offline (`HF_HUB_OFFLINE=1`, `root=` the folder) with {found['frames']:,} frames and {found['episodes']} episodes, episode lengths equal to the parquet's; problems: **{problems}**.
{chr(10).join(img_lines)}

{build_line}

Where `LeRobotStyleDataset` decoding video spends its time (cProfile of {prof['items']} random items, default cache, no workers: {prof['profiled_s']:.2f} s in `__getitem__` = {1000 * prof['profiled_s'] / prof['items']:.1f} ms per item, {prof['cpu_s']:.2f} CPU s; shares of the profiled time): opening the episode's videos (Lance blob lookups, {prof['blob_lookups']} calls, one per episode for all its cameras) {prof['blobs_s']:.2f} s = **{100 * prof['blobs_s'] / prof['profiled_s']:.0f}%**, decoding the GOPs of the asked frames (`lake._video.decode_frames`, reads included) {prof['gop_decode_s']:.2f} s = **{100 * prof['gop_decode_s'] / prof['profiled_s']:.0f}%**, whole-episode decodes (an episode asked for often while cached) {prof['decode_s']:.2f} s = {100 * prof['decode_s'] / prof['profiled_s']:.0f}%, Lance filtered scans ({prof['lance_scans']}) {prof['lance_filtered_scans_s']:.2f} s, the rest (frame columns, tensors, indexing) {100 * (1 - (prof['blobs_s'] + prof['gop_decode_s'] + prof['decode_s'] + prof['lance_filtered_scans_s']) / prof['profiled_s']):.0f}%.

{decoded_line(prof)}
{NOTES}"""


if __name__ == "__main__":
    main()
