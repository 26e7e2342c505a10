# /work/main/.venv/bin/python benchmarks/history.py [--commits 2000] [--every 100] [--stats-episodes 50000] [--out DIR]
"""A lake that lives for years: cost of a commit, open, log and episodes() as versions pile up, then gc.

One run: ``--commits`` successive small commits (``lk.append_episodes`` of one 8-frame episode each), a row
every ``--every`` commits (median commit time of the last 10, ``lake.open``, ``lk.log()``, ``lk.episodes()``,
bytes on disk); then tags on three versions, ``gc(keep_last=10)`` and the same figures after it, with the
bytes the retained versions' data files take (disk after gc / retained data is the overhead of gc's output).
Then ``lk.frames(eid)`` (first call, which builds the per-handle row index, and the median of later calls)
and ``lk.stats()`` on synthetic lakes of 1k and ``--stats-episodes`` episodes (24 frames each; the second has
1M+ frame rows). Commit time vs versions is plotted to ``benchmarks/history_commits.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import lake  # noqa: E402

PNG = HERE / "history_commits.png"


def du(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def episode(i: int, length: int = 8) -> lake.NewEpisode:
    r = np.random.default_rng(i)
    return lake.NewEpisode(frames={"observation.state": r.normal(size=(length, 4)).astype(np.float32),
                                   "action": r.normal(size=(length, 4)).astype(np.float32)}, task=f"task {i % 7}")


def timed(fn, repeat: int = 3) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def figures(uri: str) -> dict:
    lk = lake.open(uri)
    return {"open_s": timed(lambda: lake.open(uri)), "log_s": timed(lk.log, 1), "episodes_s": timed(lk.episodes),
            "disk_mb": du(uri) / 1e6}


def retained_data_bytes(lk) -> int:
    """Bytes of the data files some retained version references (what gc must keep)."""
    files = set()
    for e in lk.log():
        if e.data_deleted:
            continue
        for t, v in e.tables.items():
            for f in lk.store.dataset(t, version=v).get_fragments():
                for df in f.data_files():
                    files.add(os.path.join(lk.store.table_uri(t), "data", df.path))
    return sum(os.path.getsize(p) for p in files)


def run_commits(root: Path, commits: int, every: int) -> dict:
    uri = str(root / "history")
    lk = lake.open(uri)
    rows, times, cpu = [], [], []
    for i in range(commits):
        t0, c0 = time.perf_counter(), time.process_time()
        lk.append_episodes([episode(i)], source="rl", fps=10)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # CPU seconds of this process (all threads): steadier on a busy host
        if (i + 1) % every == 0 or i + 1 in (10,):
            row = {"versions": lk.version, "commit_s": float(np.median(times[-10:])),
                   "commit_mean_s": float(np.mean(times[-every:])), "commit_cpu_s": float(np.median(cpu[-10:])),
                   "commit_cpu_mean_s": float(np.mean(cpu[-every:])), **figures(uri)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for name, v in (("a", commits // 4), ("b", commits // 2), ("c", 3 * commits // 4)):
        lk.tag(name, v)
    t0 = time.perf_counter()
    rep = lk.gc(keep_last=10)
    gc_s = time.perf_counter() - t0
    after = {"versions": lk.version, **figures(uri)}
    t1 = time.perf_counter()
    lk.append_episodes([episode(commits)], source="rl", fps=10)
    after["commit_s"] = time.perf_counter() - t1
    kept = retained_data_bytes(lake.open(uri))
    return {"rows": rows, "commit_times": times, "commit_cpu": cpu, "gc": {"seconds": gc_s, "deleted": len(rep.deleted_versions),
            "retained": rep.retained_versions, "bytes_freed": rep.bytes_freed}, "after_gc": after,
            "retained_data_mb": kept / 1e6}


def synthetic(root: Path, name: str, episodes: int, length: int = 24, batch: int = 5000) -> "lake.Lake":
    lk = lake.open(str(root / name))
    for s in range(0, episodes, batch):
        lk.append_episodes([episode(1_000_000 + i, length) for i in range(s, min(episodes, s + batch))],
                           source="synthetic", fps=10)
    return lk


def reads(lk) -> dict:
    ids = lk.episodes()["episode_id"].to_pylist()
    rows = sum(lk.episodes()["length"].to_pylist())
    fresh = lake.open(lk.uri)
    t0 = time.perf_counter()
    fresh.frames(ids[0])
    first = time.perf_counter() - t0
    pick = np.random.default_rng(0).choice(len(ids), 200, replace=False)
    ts = []
    for i in pick:
        t0 = time.perf_counter()
        fresh.frames(ids[i])
        ts.append(time.perf_counter() - t0)
    scan = timed(lambda: fresh.table(fresh.episodes()["frames_table"][0].as_py())
                 .to_table(filter=f"episode_id = '{ids[pick[0]]}'"))
    stats = timed(lambda: lake.open(lk.uri).stats(), 3)
    return {"episodes": len(ids), "frame_rows": rows, "frames_first_s": first, "frames_median_s": float(np.median(ts)),
            "frames_p95_s": float(np.percentile(ts, 95)), "filtered_scan_s": scan, "stats_s": stats}


def plot(rows: list[dict], times: list[float], path: Path, what: str = "wall") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = np.arange(1, len(times) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(v, np.asarray(times) * 1e3, ".", ms=2, alpha=0.3, label="each commit")
    key = "commit_cpu_s" if what != "wall" else "commit_s"
    ax.plot([r["versions"] for r in rows], [r[key] * 1e3 for r in rows], "o-", label="median of last 10")
    slope, icpt = np.polyfit(v, np.asarray(times) * 1e3, 1)
    ext = np.array([1, 10_000])
    ax.plot(ext, icpt + slope * ext, "--", label=f"linear fit, extrapolated ({slope * 1000:.2f} ms per 1k versions)")
    ax.set_xlabel("lake versions")
    ax.set_ylabel(f"commit time (ms, {what})")
    ax.set_ylim(0, max(np.percentile(times, 99) * 1e3 * 1.5, (icpt + slope * 10_000) * 1.2))
    ax.legend()
    ax.set_title("append_episodes (1 episode) commit time vs history length")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--stats-episodes", type=int, default=50_000)
    ap.add_argument("--out", default=None, help="keep the lakes here (default: a temp dir, removed)")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="history-bench-"))
    out = {"argv": sys.argv}
    if args.commits:
        out["commits"] = run_commits(root, args.commits, args.every)
        plot(out["commits"]["rows"], out["commits"]["commit_cpu"], PNG, "CPU of the process")
        (HERE / "history_commit_times.json").write_text(json.dumps(
            {"wall_s": out["commits"].pop("commit_times"), "cpu_s": out["commits"].pop("commit_cpu")}))
    if args.stats_episodes:
        small = synthetic(root, "small", 1000)
        out["small"] = reads(small)
        print(json.dumps(out["small"]), flush=True)
        big = synthetic(root, "big", args.stats_episodes)
        out["big"] = reads(big)
        print(json.dumps(out["big"]), flush=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)
    (HERE / f"history_results{'_commits' if args.commits else ''}{'_reads' if args.stats_episodes else ''}.json"
     ).write_text(json.dumps(out, indent=1))
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
