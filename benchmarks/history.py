# /work/main/.venv/bin/python benchmarks/history.py [--commits 2000] [--every 100] [--stats-episodes 50000] [--out DIR]
#     [--resume] [--no-gc] [--ingest-episodes 200]
"""A lake that lives for years: cost of a commit, open, log and episodes() as versions pile up, then gc.

One run: ``--commits`` successive small commits (``lk.append_episodes`` of one 8-frame episode each), a row
every ``--every`` commits (median commit time of the last 10, ``lake.open``, ``lk.log()``, ``lk.episodes()``,
bytes on disk); then tags on three versions, ``gc(keep_last=10)`` and the same figures after it, with the
bytes the retained versions' data files take (disk after gc / retained data is the overhead of gc's output).
Then ``lk.frames(eid)`` (first call, which builds the per-handle row index, and the median of later calls)
and ``lk.stats()`` on synthetic lakes of 1k and ``--stats-episodes`` episodes (24 frames each; the second has
1M+ frame rows). Commit time vs versions is plotted to ``benchmarks/history_commits.png``, with a linear fit
(ms per 1,000 versions) and, when ``benchmarks/history_commit_times_before.json`` is there, the curve before
commits stopped listing manifests. ``--resume`` continues the lake kept in ``--out`` (a long curve in several
runs; ``--no-gc`` on all but the last). ``--ingest-episodes``: disk of a fresh ingest of a PushT v3.0 source of
that many episodes, per table, divided by the source's bytes.
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
from lake import _versions  # noqa: E402

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


def fit(times: list[float], start: int = 1) -> dict:
    """Least-squares line through per-commit times (s) vs version: ms per 1,000 versions, and its value at
    10 / 2,000 / 10,000 versions; also the same through the medians of each 100 commits (robust to outliers)."""
    t = np.asarray(times) * 1e3
    v = np.arange(start, start + len(t))
    slope, icpt = np.polyfit(v, t, 1)
    n = len(t) // 100
    med = [float(np.median(t[i * 100:(i + 1) * 100])) for i in range(n)]
    mslope = float(np.polyfit(v[50:n * 100:100], med, 1)[0]) if n >= 2 else float("nan")
    return {"ms_per_1k_versions": float(slope * 1000), "ms_per_1k_versions_medians": mslope * 1000,
            "at_10_ms": float(icpt + slope * 10), "at_2000_ms": float(icpt + slope * 2000),
            "at_10000_ms": float(icpt + slope * 10_000), "median_first_100_ms": float(np.median(t[:100])),
            "median_last_100_ms": float(np.median(t[-100:])), "commits": len(t)}


def run_commits(root: Path, commits: int, every: int, resume: bool = False, gc: bool = True) -> dict:
    uri = str(root / "history")
    saved = root / "commits.json"
    prev = json.loads(saved.read_text()) if resume and saved.exists() else {"rows": [], "times": [], "cpu": []}
    lk = lake.open(uri)
    rows, times, cpu = prev["rows"], prev["times"], prev["cpu"]
    start = len(times)
    for i in range(start, start + commits):
        t0, c0 = time.perf_counter(), time.process_time()
        lk.append_episodes([episode(i)], source="rl", fps=10)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # CPU seconds of this process (all threads): steadier on a busy host
        if (i + 1) % every == 0 or i + 1 in (10,):
            row = {"versions": lk.version, "commit_s": float(np.median(times[-10:])),
                   "commit_mean_s": float(np.mean(times[-every:])), "commit_cpu_s": float(np.median(cpu[-10:])),
                   "commit_cpu_mean_s": float(np.mean(cpu[-every:])), **figures(uri),
                   "log_manifests": len(os.listdir(os.path.join(uri, "_log.lance", "_versions"))),
                   "episodes_manifests": len(os.listdir(os.path.join(uri, "episodes.lance", "_versions")))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    saved.write_text(json.dumps({"rows": rows, "times": times, "cpu": cpu}))
    out = {"rows": rows, "commit_times": times, "commit_cpu": cpu, "fit_cpu": fit(cpu), "fit_wall": fit(times)}
    print(json.dumps({"fit_cpu": out["fit_cpu"], "fit_wall": out["fit_wall"]}), flush=True)
    if not gc:
        return out
    n = len(times)
    for name, v in (("a", n // 4), ("b", n // 2), ("c", 3 * n // 4)):
        lk.tag(name, v)
    t0 = time.perf_counter()
    rep = lk.gc(keep_last=10)
    gc_s = time.perf_counter() - t0
    after = {"versions": lk.version, **figures(uri)}
    t1 = time.perf_counter()
    lk.append_episodes([episode(n)], source="rl", fps=10)
    after["commit_s"] = time.perf_counter() - t1
    kept = retained_data_bytes(lake.open(uri))
    after["disk_mb_now"] = du(uri) / 1e6
    # log versions younger than the grace period outlive gc (readers in flight): measure again once they are old
    time.sleep(_versions.LOG_GRACE.total_seconds() + 1)
    lk.gc(keep_last=10)
    kept_later = retained_data_bytes(lake.open(uri))
    after.update(disk_mb_after_grace=du(uri) / 1e6, retained_data_mb_after_grace=kept_later / 1e6,
                 disk_over_retained_after_grace=du(uri) / kept_later)
    return {**out, "gc": {"seconds": gc_s, "deleted": len(rep.deleted_versions), "retained": rep.retained_versions,
                          "bytes_freed": rep.bytes_freed}, "after_gc": after, "retained_data_mb": kept / 1e6}


def fresh_ingest(root: Path, episodes: int) -> dict:
    """Disk of a fresh ingest of a PushT v3.0 source (2 cameras) / the source's bytes, per table."""
    src = root / f"pusht{episodes}"
    if not src.exists():
        lake.write_pusht_dataset(src, episodes=episodes, version="v3.0", min_len=20, max_len=80, seed=0)
    dst = root / "ingested"
    shutil.rmtree(dst, ignore_errors=True)
    lk = lake.open(str(dst))
    t0 = time.perf_counter()
    rep = lk.ingest(str(src), progress=False)
    out = {"episodes": rep.episodes_added, "ingest_s": time.perf_counter() - t0, "source_mb": du(src) / 1e6,
           "lake_mb": du(dst) / 1e6, "tables": {}}
    out["lake_over_source"] = out["lake_mb"] / out["source_mb"]
    for name in sorted(os.listdir(dst)):
        ds = lk.store.dataset(name[:-len(".lance")])
        out["tables"][name] = {"mb": du(dst / name) / 1e6, "lance_versions": len(ds.versions()),
                               "fragments": len(ds.get_fragments()), "rows": ds.count_rows()}
    return out


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


def plot(times: list[float], path: Path, before: list[float] | None = None) -> None:
    """Per-commit CPU time vs versions, the medians of each 100 and the linear fit extrapolated to 10k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = 0.0
    for label, ts, colour in (("before (session 5)", before, "tab:grey"), ("now", times, "tab:blue")):
        if not ts:
            continue
        t = np.asarray(ts) * 1e3
        v = np.arange(1, len(t) + 1)
        f = fit(ts)
        ax.plot(v, t, ".", ms=1.5, alpha=0.25, color=colour)
        n = len(t) // 100
        ax.plot(v[50:n * 100:100], [np.median(t[i * 100:(i + 1) * 100]) for i in range(n)], "o-", ms=3,
                color=colour, label=f"{label}: median of each 100 commits")
        ext = np.array([1, 10_000])
        ax.plot(ext, f["at_10_ms"] + (ext - 10) * f["ms_per_1k_versions"] / 1000, "--", color=colour,
                label=f"{label}: linear fit, {f['ms_per_1k_versions']:+.1f} ms per 1k versions "
                      f"({f['at_10000_ms']:.0f} ms at 10k)")
        top = max(top, np.percentile(t, 99) * 1.3, f["at_10000_ms"] * 1.2)
    ax.set_xlabel("lake versions")
    ax.set_ylabel("commit CPU time (ms, whole process)")
    ax.set_ylim(0, top)
    ax.set_xlim(0, 10_000)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("append_episodes (1 episode) commit cost vs history length, no gc")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--stats-episodes", type=int, default=50_000)
    ap.add_argument("--ingest-episodes", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the lakes here (default: a temp dir, removed)")
    ap.add_argument("--resume", action="store_true", help="continue the commit lake kept in --out")
    ap.add_argument("--no-gc", action="store_true", help="stop after the commits (to --resume later)")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="history-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    out = {"argv": sys.argv, "load_before": os.getloadavg()}
    if args.commits:
        out["commits"] = run_commits(root, args.commits, args.every, args.resume, not args.no_gc)
        before = HERE / "history_commit_times_before.json"
        plot(out["commits"]["commit_cpu"], PNG, json.loads(before.read_text())["cpu_s"] if before.exists() else None)
        (HERE / "history_commit_times.json").write_text(json.dumps(
            {"wall_s": out["commits"].pop("commit_times"), "cpu_s": out["commits"].pop("commit_cpu")}))
    if args.ingest_episodes:
        out["ingest"] = fresh_ingest(root, args.ingest_episodes)
        print(json.dumps(out["ingest"]), flush=True)
    if args.stats_episodes:
        small = synthetic(root, "small", 1000)
        out["small"] = reads(small)
        print(json.dumps(out["small"]), flush=True)
        big = synthetic(root, "big", args.stats_episodes)
        out["big"] = reads(big)
        print(json.dumps(out["big"]), flush=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in out.items() if k != "commits"}), flush=True)
    parts = [p for p, on in (("commits", args.commits), ("ingest", args.ingest_episodes),
                             ("reads", args.stats_episodes)) if on]
    (HERE / f"history_results_{'_'.join(parts)}.json").write_text(json.dumps(out, indent=1))
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
