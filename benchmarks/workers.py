# .venv/bin/python benchmarks/workers.py [--episodes 200] [--batch-packs 4] [--epochs 5] [--workers 0,1,2] [--record]
"""DataLoader workers, side by side with MosaicML Streaming: time to first batch of every epoch and samples/s.

The same packs on both sides: the train split of the PushT lake ``benchmarks/stream.py`` builds (``--episodes``,
``lk.pack()`` default recipe), for MosaicML Streaming (MDS) written once as MDS shards (one sample per pack: every
packed column as an ndarray, origins as JSON) from an Arrow export of the split. Each side reads local files made
before the timing: MDS its local shards (raw, written once), the lake its node shard cache (``loaders.cache``, filled
once by an untimed epoch; ``--cache-level`` 0 = raw, as MDS keeps its shards). The cold first epoch that fills a
cache, and the lake read straight from Lance, are measured side by side in ``benchmarks/stream_peers.py``. A batch is
``--batch-packs`` packs merged into one varlen batch (lake: ``PackedBatch``; MDS: a collate that concatenates the
columns and shifts ``cu_seqlens``, as the lake's merge does).

Modes: workers W in ``--workers`` x persistent on/off x "ours" (``lk.stream(num_workers=W, persistent_workers=...)``;
``streaming.StreamingDataLoader``) / "user's" (``torch.utils.data.DataLoader(dataset, num_workers=W,
persistent_workers=..., multiprocessing_context="fork")``: Linux's and LeRobot's default). Each mode runs ``--epochs``
epochs in a fresh process, so worker start-up counts as a user feels it: per epoch, the time from asking for the
first batch to getting it; overall, samples/s over all epochs (start-up included) and the process tree's peak RSS.
Epochs are checked: every pack once per epoch, a new order each epoch, and on the lake side the order of epoch e
equal to ``lk.stream(epoch=e)`` read without workers.

MosaicML Streaming needs numpy<2.2 and imports torchvision: it runs in its own venv, ``benchmarks/.venv-mds``, made
here on first use (torch 2.14.1 + torchvision 0.29.1 from the local wheels; the project's venv keeps torch 2.13).
Every mode runs ``--rounds`` times, alternating sides; the best round is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "_data"
MDS_VENV = HERE / ".venv-mds"
# what `import streaming` needs to read local shards; the rest of its dependencies (cloud clients: oci, azure, gcs)
# are left out: with them pip's resolver backtracked for 40 minutes here
MDS_PIP = ["torch==2.14.1", "torchvision==0.29.1", "numpy<2.2", "pyarrow", "psutil", "xxhash<4", "zstd<2",
           "python-snappy<1", "Brotli", "tqdm", "catalogue<3", "transformers<5", "tabulate", "pillow",
           "boto3"]  # boto3: MDS's S3 client (benchmarks/stream_peers.py, on moto)
MDS = "mosaicml-streaming==0.13.0"
SECTION = "DataLoader workers vs MosaicML Streaming"
RUNS = DATA / "workers-runs.json"  # modes measured so far: a run may cover some modes (one locked run stays short)
GOAL = 1.5
SKIP = ("split", "n_samples", "n_tokens")


# --- data ----------------------------------------------------------------------------------------------------------

def export_split(lake_path: Path, out: Path) -> Path:
    """The train split's packs (table order) as an Arrow IPC file, for the MDS venv to convert."""
    import pyarrow as pa

    import lake
    from loaders.packings import resolve

    if out.exists():
        return out
    src = resolve(lake.open(lake_path, create=False))
    ds = src.open()
    cols = [n for n in ds.schema.names if n not in SKIP]
    t = ds.to_table(columns=cols, filter="split = 'train'")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t)
    os.replace(tmp, out)
    return out


def mds_python() -> Path | None:
    """The MDS venv's python, made if missing (None when it cannot be built)."""
    py = MDS_VENV / "bin" / "python"
    stamp = MDS_VENV / ".installed"
    if not stamp.exists():
        print(f"building {MDS_VENV} (MosaicML Streaming, numpy<2.2, torch 2.14.1) ...", flush=True)
        try:
            if not py.exists():
                subprocess.run(["python3.11", "-m", "venv", str(MDS_VENV)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", *MDS_PIP], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", MDS], check=True)
            subprocess.run([str(py), "-c", "import streaming"], check=True)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            print(f"could not build the MDS venv: {e}", flush=True)
            return None
        stamp.touch()
    return py


def write_mds(packs: Path, out: Path) -> None:
    """(MDS venv) One MDS sample per pack row of ``packs``."""
    import numpy as np
    import pyarrow as pa
    from streaming import MDSWriter

    if (out / "index.json").exists():
        return
    t = pa.ipc.open_file(pa.OSFile(str(packs))).read_all()
    cols = {}
    for name, field in zip(t.column_names, t.schema):
        if pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type):
            cols[name] = "json"
        elif pa.types.is_list(field.type):
            cols[name] = "ndarray"
        else:
            cols[name] = "int64"
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with MDSWriter(out=str(tmp), columns=cols, size_limit=1 << 26) as w:
        for rb in t.to_batches(max_chunksize=64):
            for i in range(rb.num_rows):
                row = rb.slice(i, 1)
                sample = {}
                for name, enc in cols.items():
                    col = row.column(name)
                    if enc == "json":
                        sample[name] = col.to_pylist()[0]
                    elif enc == "int64":
                        sample[name] = int(col[0].as_py())
                    else:
                        values = col.flatten()
                        if pa.types.is_fixed_size_list(values.type):
                            width = values.type.list_size
                            sample[name] = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
                        else:
                            sample[name] = values.to_numpy(zero_copy_only=False)
                        sample[name] = np.ascontiguousarray(sample[name])
                w.write(sample)
    os.replace(tmp, out)


def mds_collate(samples: list[dict]) -> dict:
    """Packs -> one varlen batch: columns concatenated, cu_seqlens shifted (what the lake's merge does)."""
    import numpy as np
    import torch

    out, cu, base = {}, [np.zeros(1, np.int32)], 0
    for s in samples:
        c = s["cu_seqlens"].astype(np.int32)
        cu.append(c[1:] + base)
        base += int(c[-1])
    out["cu_seqlens"] = torch.from_numpy(np.concatenate(cu))
    for name in samples[0]:
        v = samples[0][name]
        if name == "cu_seqlens":
            continue
        if isinstance(v, np.ndarray):
            out[name] = torch.from_numpy(np.concatenate([s[name] for s in samples]))
        elif isinstance(v, list):
            out[name] = [x for s in samples for x in s[name]]
        else:
            out[name] = torch.tensor([s[name] for s in samples])
    return out


# --- one mode, in a fresh process ---------------------------------------------------------------------------------

def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024  # main process + the largest reaped worker: a lower bound of the tree's peak


def run_lake(args) -> dict:
    import numpy as np
    import torch

    import lake
    # the clock starts after each side's libraries are imported (the MDS child imports `streaming` before it);
    # the lake facade imports Lance and the loaders lazily, so import them here, outside the timing
    import lance  # noqa: F401
    import loaders  # noqa: F401

    t0 = time.perf_counter()
    lk = lake.open(args.lake, create=False)
    kw = dict(batch_packs=args.batch_packs, seed=0, cache_dir=args.cache_dir, progress=False,
              cache_level=args.cache_level)
    W, persistent = args.w, args.persistent
    if args.who == "ours":
        loader = lk.stream("train", num_workers=W, persistent_workers=persistent, **kw)
        epochs_of = lambda: loader  # noqa: E731
    else:
        loader = lk.stream("train", **kw)
        dl = torch.utils.data.DataLoader(loader, batch_size=None, num_workers=W, persistent_workers=persistent and W > 0,
                                         multiprocessing_context="fork" if W else None)
        epochs_of = lambda: dl  # noqa: E731
    packs = loader.packs
    first, samples, orders, ok, epochs = [], 0, [], True, []
    for e in range(args.epochs):
        t = time.perf_counter()
        order = []
        for i, b in enumerate(epochs_of()):
            if i == 0:
                first.append(time.perf_counter() - t)
            samples += b.n_samples
            order += b.pack_ids.tolist()
        epochs.append(time.perf_counter() - t)
        orders.append(order)
        ok &= sorted(order) == sorted(orders[0]) and len(order) == packs
    wall = time.perf_counter() - t0
    # the order of epoch e is the stream's without workers (pure function of seed, epoch, layout)
    ok &= all(orders[e] == [p for b in lk.stream("train", epoch=e, **kw) for p in b.pack_ids.tolist()]
              for e in range(args.epochs))
    ok &= len({tuple(o) for o in orders}) == len(orders)
    return {"first": first, "samples": samples, "wall": wall, "ok": bool(ok), "rss_mib": _peak_rss_mib(),
            "np": np.__version__, "epochs": epochs}


def run_mds(args) -> dict:
    import numpy as np
    import torch
    from streaming import StreamingDataLoader, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    t0 = time.perf_counter()
    ds = StreamingDataset(local=args.mds, shuffle=True, shuffle_seed=0, batch_size=args.batch_packs)
    W, persistent = args.w, args.persistent
    cls = StreamingDataLoader if args.who == "ours" else torch.utils.data.DataLoader
    dl = cls(ds, batch_size=args.batch_packs, num_workers=W, persistent_workers=persistent and W > 0,
             collate_fn=mds_collate, multiprocessing_context="fork" if W else None)
    packs = ds.num_samples
    first, samples, orders, ok, epochs = [], 0, [], True, []
    for e in range(args.epochs):
        t = time.perf_counter()
        order = []
        for i, b in enumerate(dl):
            if i == 0:
                first.append(time.perf_counter() - t)
            samples += len(b["origin_frame"]) if "origin_frame" in b and not isinstance(b["origin_frame"], list) \
                else int(b["cu_seqlens"].numel() - 1)
            order += b["pack_id"].tolist()
        epochs.append(time.perf_counter() - t)
        orders.append(order)
        ok &= sorted(order) == sorted(orders[0]) and len(order) == packs
    wall = time.perf_counter() - t0
    ok &= len({tuple(o) for o in orders}) == len(orders)
    return {"first": first, "samples": samples, "wall": wall, "ok": bool(ok), "rss_mib": _peak_rss_mib(),
            "np": np.__version__, "epochs": epochs}


# --- driver -------------------------------------------------------------------------------------------------------

def modes(workers: list[int]) -> list[tuple[int, bool, str]]:
    out = []
    for w in workers:
        for persistent in ([True] if w == 0 else [True, False]):
            for who in ("ours", "user"):
                out.append((w, persistent, who))
    return out


def run_mode(python: str, side: str, mode, args, data: dict) -> dict | None:
    w, persistent, who = mode
    cmd = [python, __file__, "--child", side, "--w", str(w), "--who", who, "--epochs", str(args.epochs),
           "--batch-packs", str(args.batch_packs), "--lake", str(data["lake"]), "--mds", str(data["mds"]),
           "--cache-dir", str(data["cache"]), "--cache-level", str(args.cache_level)] + (
               ["--persistent"] if persistent else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if side == "lake" else {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if p.returncode != 0:
        print(f"{side} {mode} failed:\n{p.stderr[-3000:]}", flush=True)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def label(mode) -> str:
    w, persistent, who = mode
    who = "ours" if who == "ours" else "user's DataLoader"
    return f"W={w}, {who}" + ("" if w == 0 else (", persistent" if persistent else ", not persistent"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--batch-packs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="forget the modes recorded by earlier runs")
    ap.add_argument("--child", choices=["lake", "mds", "write-mds"])
    ap.add_argument("--w", type=int, default=0)
    ap.add_argument("--who", default="ours")
    ap.add_argument("--persistent", action="store_true")
    ap.add_argument("--lake")
    ap.add_argument("--mds")
    ap.add_argument("--packs")
    ap.add_argument("--cache-dir")
    ap.add_argument("--cache-level", type=int, default=0, help="zstd level of the lake's shard cache (0: raw, as MDS)")
    ap.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "write-mds":
        write_mds(Path(args.packs), Path(args.mds))
        return
    if args.child == "lake" and args.fill:  # the lake's cache filled once, untimed (MDS's shards are written once)
        import lake

        for _ in lake.open(args.lake, create=False).stream("train", batch_packs=args.batch_packs, progress=False,
                                                           cache_dir=args.cache_dir, cache_level=args.cache_level):
            pass
        return
    if args.child:
        print(json.dumps((run_lake if args.child == "lake" else run_mds)(args)))
        return

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import stream as stream_bench
    from _report import cpu_model, record

    lake_path, what = stream_bench.real_lake(args.episodes)
    work = DATA / f"workers-{args.episodes}ep"
    packs = export_split(lake_path, work / "train-packs.arrow")
    data = {"lake": lake_path, "mds": work / "mds", "cache": work / "lake-cache"}
    py = mds_python()
    if py is not None:
        p = subprocess.run([str(py), __file__, "--child", "write-mds", "--packs", str(packs), "--mds", str(data["mds"])],
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        if p.returncode != 0:
            py = None
    shutil.rmtree(data["cache"], ignore_errors=True)
    subprocess.run([sys.executable, __file__, "--child", "lake", "--fill", "--lake", str(lake_path), "--cache-dir",
                    str(data["cache"]), "--cache-level", str(args.cache_level), "--batch-packs", str(args.batch_packs)],
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    all_modes = modes([int(w) for w in args.workers.split(",")])
    saved = {} if args.fresh or not RUNS.exists() else json.loads(RUNS.read_text())
    results: dict = {}
    for key, res in saved.items():  # modes an earlier run measured; this run's results replace theirs
        side, w, persistent, who = key.split("|")
        results[(side, (int(w), persistent == "True", who))] = res
    fresh: set = set()
    for r in range(args.rounds):
        for mode in all_modes:
            for side in (("lake", "mds") if r % 2 == 0 else ("mds", "lake")):
                if side == "mds" and py is None:
                    continue
                res = run_mode(sys.executable if side == "lake" else str(py), side, mode, args, data)
                if res is None:
                    continue
                res["sps"] = res["samples"] / res["wall"]
                res["load"] = os.getloadavg()[0]
                best = results.get((side, mode))
                if best is None or (side, mode) not in fresh or res["sps"] > best["sps"]:
                    results[(side, mode)] = res
                fresh.add((side, mode))
                RUNS.write_text(json.dumps({f"{k[0]}|{k[1][0]}|{k[1][1]}|{k[1][2]}": v for k, v in results.items()}))
                print(side, label(mode), f"{res['sps']:,.0f} samples/s", "first batch per epoch (s):",
                      [round(x, 3) for x in res["first"]], "epochs (s):", [round(x, 2) for x in res["epochs"]],
                      "ok" if res["ok"] else "WRONG", flush=True)
                if args.record:  # as the modes come in: a long run on a busy machine keeps what it measured
                    record(SECTION, report(modes([0, 1, 2, 4]), results, args, what, cpu_model))
    print(report(modes([0, 1, 2, 4]), results, args, what, cpu_model))


def report(all_modes, results, args, what, cpu_model) -> str:

    rows = ["| mode | lake samples/s | MDS samples/s | lake ÷ MDS | lake: first batch per epoch (s) | "
            "MDS: first batch per epoch (s) | later epochs, median s (lake / MDS) | epochs right (lake / MDS) | "
            "peak RSS lake / MDS |", "|---|" + "---:|" * 8]
    ratios, loads = [], [r["load"] for r in results.values() if "load" in r]
    for mode in all_modes:
        a, b = results.get(("lake", mode)), results.get(("mds", mode))
        if a is None:
            continue
        ratio = a["sps"] / b["sps"] if b else None
        if ratio is not None:
            ratios.append(ratio)
        f = lambda r: " / ".join(f"{x:.3f}" for x in r["first"]) if r else "-"  # noqa: E731
        later = lambda r: f"{statistics.median(r['epochs'][1:] or r['epochs']):.2f}" if r else "-"  # noqa: E731
        rows.append(f"| {label(mode)} | {a['sps']:,.0f} | {b['sps']:,.0f} | **{ratio:.2f}** | {f(a)} | {f(b)} | "
                    f"{later(a)} / {later(b)} | {'✓' if a['ok'] else '✗'} / {'✓' if b['ok'] else '✗'} | "
                    f"{a['rss_mib']:.0f} / {b['rss_mib']:.0f} MiB |"
                    if b else f"| {label(mode)} | {a['sps']:,.0f} | - | - | {f(a)} | - | {later(a)} / - | "
                    f"{'✓' if a['ok'] else '✗'} / - | {a['rss_mib']:.0f} MiB |")
    cmd = " ".join(["benchmarks/workers.py", *sys.argv[1:]])
    body = f"""Command: `.venv/bin/python {cmd}` · machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} ·
data: {what}; train split, {args.batch_packs} packs per batch, {args.epochs} epochs per mode, each mode in a fresh
process, best of {args.rounds} round(s) alternating sides. Both sides read local files made before the timing: the
lake its node shard cache (`cache_dir`, filled by one untimed epoch, zstd level {args.cache_level}{' = raw' if args.cache_level == 0 else ''}),
MDS its local shards (raw; `benchmarks/.venv-mds`: mosaicml-streaming 0.13.0, numpy<2.2, torch 2.14.1). samples/s
counts the whole run from opening the data (worker start-up included; each side's libraries imported before the
clock: MDS's `streaming`, the lake's `lance` and `loaders`, which its facade imports lazily); first batch: seconds from asking for an epoch's first batch to
getting it. Peak RSS: main process + largest worker (ru_maxrss). Timed under `flock /work/notes/bench.lock`;
1-minute load average after each run: {min(loads, default=float('nan')):.0f}–{max(loads, default=float('nan')):.0f} (2 cores shared with other
engineers' jobs, most at nice 15-19; rows may come from different locked runs, each the best of its rounds).

{chr(10).join(rows)}

Goal: lake ≥ {GOAL}× MDS in every mode: {'met' if ratios and min(ratios) >= GOAL else 'NOT met'} (min {min(ratios) if ratios else float('nan'):.2f}×).
"""
    return body


if __name__ == "__main__":
    main()
