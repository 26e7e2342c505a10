"""lake serve's episodes page at 100k episodes: Lance filter + order + offset/limit per page, against the peer a
naive page would be (lk.episodes(filter) materialised, sorted, sliced). Both run here, side by side, on one lake.

    .venv/bin/python benchmarks/serve_pages.py [--episodes 100000] [--lake /tmp/serve_bench] [--record]

The lake is built once (append_episodes of tiny 3-frame episodes, in batches of 10k) and kept: a rerun with more
--episodes appends the difference and measures there.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np


def build(uri: str, n: int, batch: int = 10_000):
    import lake

    lk = lake.open(uri)
    have = lk.episodes(columns=["episode_id"]).num_rows
    rng = np.random.default_rng(0)
    while have < n:
        k = min(batch, n - have)
        eps = [lake.NewEpisode(frames={"observation.state": rng.normal(size=(3, 2)).astype(np.float32),
                                       "action": rng.normal(size=(3, 2)).astype(np.float32)},
                               task=f"task {(have + i) % 7} #{have + i}") for i in range(k)]
        t = time.perf_counter()
        lk.append_episodes(eps, source="synthetic", fps=10, split_ratios={"train": 0.9, "val": 0.1})
        have += k
        print(f"built {have} episodes ({time.perf_counter() - t:.0f} s for {k})", flush=True)
    return lk


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100_000)
    p.add_argument("--lake", default="/tmp/serve_bench")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    lk = build(args.lake, args.episodes)
    from starlette.testclient import TestClient

    from lakeview import make_app

    client = TestClient(make_app(lk))
    n = lk.episodes(columns=["episode_id"]).num_rows
    cases = [("first page, by id", "", "episode_id", False, 0),
             ("middle page, by id", "", "episode_id", False, n // 2),
             ("last page, by id", "", "episode_id", False, n - 50),
             ("middle page, by length desc", "", "length", True, n // 2),
             ("filtered (split = 'val'), middle page", "split = 'val'", "episode_id", False, n // 20)]
    rows = []
    for name, filt, sort, desc, offset in cases:
        params = {"filter": filt, "sort": sort, "desc": "1" if desc else "", "offset": str(offset), "limit": "50"}

        def ours():
            r = client.get("/episodes", params=params)
            assert r.status_code == 200, r.text[:300]

        def peer():  # the page from the whole table: what "no materialisation per page" avoids
            t = lk.episodes(filter=filt or None)
            t = t.sort_by([(sort, "descending" if desc else "ascending"), ("episode_id", "ascending")])
            t.slice(offset, 50).to_pylist()

        ours()
        a = timed(ours, args.repeats)
        b = timed(peer, args.repeats)
        rows.append((name, a, b))
        print(f"{name}: page {a * 1e3:.0f} ms (whole HTTP request, template included), "
              f"peer {b * 1e3:.0f} ms, peer / page {b / a:.1f}x", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import os

    load = os.getloadavg()[0]
    table = [f"| {name} | {a * 1e3:,.0f} | {b * 1e3:,.0f} | {b / a:.1f}× |" for name, a, b in rows]
    text = "\n".join([
        "", "## lake serve: the episodes page at scale", "",
        f"Command: `.venv/bin/python benchmarks/serve_pages.py --episodes {args.episodes} --record`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"shared with other jobs (load average {load:.1f} at the end), so absolute times are noisy; the ratio is "
        "measured side by side.  ",
        f"Lake: {n:,} episodes (3 frames each, 7 tasks, train/val). Medians of {args.repeats}. "
        f"Peak RSS of the process (page + peer): {rss:,.0f} MiB.", "",
        "Page = `GET /episodes?...&limit=50` through the app: Lance scans the sort key, episode_id and row id of the "
        "matches (filter pushed down), Arrow orders them, `_take_rows` reads the page's 50 rows, Jinja renders. "
        "Peer = `lk.episodes(filter)` of every column, sorted and sliced in Arrow (a page that materialises "
        "everything). Both grow with the number of matches; the page reads 2-3 narrow columns of them.", "",
        "| page | page ms | peer ms | peer / page |", "|---|---:|---:|---:|", *table, ""])
    print(text)
    if args.record:
        path = Path(__file__).with_name("RESULTS.md")
        path.write_text(path.read_text() + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
