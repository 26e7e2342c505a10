# PYTHONPATH=$PWD .venv/bin/python benchmarks/cluster_stream.py [--ranks 8 64 256 1024] [--copies 8] [--shard-packs 16]
#     [--window 256] [--orders random windows strata] [--strata-leaf 1] [--no-scale] | --plans-only | --amplification
#     | --levels | --mixing
"""A simulated cluster streaming one split through per-node shard caches, from a lake on an S3 server.

The lake lives on moto's S3 server on 127.0.0.1 (as in tests/loaders/test_stream_s3.py), reached through a
``CountingProxy`` on 127.0.0.1 (every client, Lance's object_store included, uses it as its endpoint; nothing is
patched), which counts the real HTTP requests and bytes. A synthetic packed table (``tests/loaders/packed_tables.py``,
32-byte patches so that thousands of packs stay small; ``--copies`` repeats the packs). For each world size N (node
size 8, so N/8 nodes), every rank's plan for epoch 0 is replayed rank by rank, step by step (the ranks of a node
interleaved, as they would run concurrently), through one ``loaders.cache.NodeCache`` per node (a fresh folder
and its own Lance handle: a cold node) under ``--limit-shards``: shards are really fetched from S3 (Lance takes),
written zstd-compressed, evicted, and every batch is read back from the cache. Per node: Arrow bytes fetched ÷
the split's Arrow bytes, HTTP GET bytes ÷ the table's data files in the bucket, shard fetches and HTTP requests,
cache hit ratio (shard accesses served from disk); over all ranks: that the union of the packs read is every
pack of the split exactly once.

Three configurations: the default ``lake.stream`` order (uniform ``random`` shuffle, ``balanced`` partition),
whose bytes per node come from the plan alone (distinct shards a node touches; fetching N/8 full splits from
moto would only confirm it), and two node-local ones replayed for real: ``windows:K`` + ``nodes:8`` (a node's
step slices wander over the window) and ``strata:K`` + ``nodes:8`` (a stratified window order: a node stays on
one range of each window). Target (issue 15): bytes per node <= 1.2 x (1/nodes + window share), window share =
K / packs. Mixing, from the plans and the table's origins: distinct episodes per node step (the node's ranks'
batches of one step) and per global step (all ranks' batches of one step: what one optimizer step sees).

After the replay (``--plans-only``: alone, no S3): plan cost and mixing at N ranks from the plans alone on a big
split (``--scale-packs``): the ``nodes`` deal vectorised vs the per-step loop it replaced, one rank's plan, all
ranks' plans, and distinct 16-pack neighbourhoods per batch. ``--amplification``: HTTP GETs and bytes of
fetching a split shard by shard, per shard size. ``--levels``: zstd level vs write/read speed and size, on the
packs of a small real PushT lake (the measurement behind ``loaders.shardfile.LEVEL``).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import lake  # noqa: E402
from loaders import World  # noqa: E402
from loaders import cache as _cache  # noqa: E402
from loaders.loader import Loader  # noqa: E402
from loaders.packings import resolve  # noqa: E402

KEY, SECRET, REGION, BUCKET = "testing", "testing", "us-east-1", "cluster"
NODE = 8


def packed_tables_module():
    spec = importlib.util.spec_from_file_location("packed_tables", ROOT / "tests" / "loaders" / "packed_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class CountingProxy:
    """A reverse proxy on 127.0.0.1 in front of the S3 server, counting the HTTP requests and bytes that pass
    (``counts``: requests and response body bytes per method, request body bytes). The clients (Lance's
    object_store, s3fs) are pointed at it as their endpoint; nothing in them is patched."""

    def __init__(self, upstream_port: int):
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.counts: Counter = Counter()
        lock, counts = threading.Lock(), self.counts

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect

            def log_message(self, *args):
                pass

            def _body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else None

            def _any(self):
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                if getattr(self, "_up", None) is None:  # one upstream connection per client connection
                    self._up = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
                self._up.request(self.command, self.path, body=body, headers=headers)
                resp = self._up.getresponse()
                data = resp.read()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                with lock:
                    counts[f"{self.command} requests"] += 1
                    counts[f"{self.command} bytes"] += len(data)
                    counts["sent bytes"] += len(body or b"")

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def s3_lake(copies: int, episodes: int):
    """(lake on a fresh moto server, reached through a ``CountingProxy``; the packed table written to it; the
    server; the proxy; bytes of the table's data files in the bucket)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port  # noqa: SLF001 - moto picks the free port
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY,
                      aws_secret_access_key=SECRET, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    proxy = CountingProxy(port)
    options = {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_region": REGION,
               "aws_endpoint": f"http://127.0.0.1:{proxy.port}", "allow_http": "true"}
    pt = packed_tables_module()
    layout = {**pt.LAYOUT, "token_dim": 32}
    table = pt.synthetic_packs(layout, episodes=episodes, seed=0, copies=copies, splits={"train": 1.0})
    lk = lake.open(f"s3://{BUCKET}/lake", storage_options=options)
    pt.write_packed_table(lk, table, rows_per_file=512)
    stored = sum(o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="lake/")
                 for o in page.get("Contents", []) if "packed_test" in o["Key"] and "/data/" in o["Key"])
    return lk, table, server, proxy, stored


def episode_mixing(plans: list[list[np.ndarray]], episodes_of: list[set], node: int = NODE) -> tuple[float, float]:
    """Mean distinct episodes per node step (a node's ranks' batches of one global step) and per global step
    (every rank's batch of it), from the plans and each pack's origin episodes."""
    steps = max((len(p) for p in plans), default=0)
    per_node, per_step = [], []
    for k in range(steps):
        everyone: set = set()
        for first in range(0, len(plans), node):
            mine: set = set()
            for r in range(first, min(first + node, len(plans))):
                if k < len(plans[r]):
                    for p in plans[r][k].tolist():
                        mine |= episodes_of[p]
            per_node.append(len(mine))
            everyone |= mine
        per_step.append(len(everyone))
    return float(np.mean(per_node)), float(np.mean(per_step))


def replay(loader: Loader, n_ranks: int, partition: str, root: Path, limit: int | None, real: bool,
           proxy: CountingProxy, stored: int) -> dict:
    """Every node's cold-cache epoch: per-node bytes / requests / hits, mixing, and the exactly-once check."""
    shard_packs = loader.cache.shard_packs
    split_bytes = loader.split_bytes
    nodes = -(-n_ranks // NODE)
    loader.partition = partition
    t = time.perf_counter()
    plans = [loader.plan(World(r, n_ranks)) for r in range(n_ranks)]
    plan_s = time.perf_counter() - t
    node_episodes, step_episodes = episode_mixing(plans, loader.episodes_of)
    seen: Counter = Counter()
    per_node = []
    for j in range(nodes):
        ranks = range(j * NODE, min((j + 1) * NODE, n_ranks))
        if not real:  # bytes from the plan: the distinct shards this node's ranks touch
            shards = {int(p) // shard_packs for r in ranks for b in plans[r] for p in b}
            per_node.append({"bytes": sum(loader.shard_bytes[s] for s in shards), "requests": len(shards),
                             "hits": None})
            for r in ranks:
                seen.update(int(p) for b in plans[r] for p in b)
            continue
        folder = root / f"node{j}"
        # a node of its own: a cold cache and its own Lance handle (it opens the table: manifest reads count);
        # each rank its own NodeCache over the node's folder, as a process of its own would have (window
        # prefetch on a side thread, claims, runs of neighbouring shards), its batches through ``units``
        fetch = _cache.ShardSource(loader.source, loader.rows, loader.columns, shard_packs)
        caches = [_cache.NodeCache(folder, "split", loader.packs, shard_packs, fetch, limit=limit,
                                   window=loader.cache.window) for _ in ranks]
        before, wire = dict(_cache.STATS), Counter(proxy.counts)
        gens = [c.units(plans[r], lambda table: table) for c, r in zip(caches, ranks)]
        try:
            steps = max((len(plans[r]) for r in ranks), default=0)
            for k in range(steps):  # the node's ranks in lockstep, as a synchronous training step runs them
                for g, r in zip(gens, ranks):
                    if k < len(plans[r]):
                        table = next(g)()
                        seen.update(loader.local_of[i] for i in table.column("pack_id").to_pylist())
        finally:
            for g in gens:
                g.close()  # each rank's side thread joined, its claim removed
        d = {k: _cache.STATS[k] - before[k] for k in _cache.STATS}
        w = proxy.counts - wire
        needed = len({int(p) // shard_packs for r in ranks for b in plans[r] for p in b})
        per_node.append({"bytes": d["fetched_bytes"], "requests": d["takes"], "refetches": d["fetches"] - needed,
                         "hits": d["hits"] / max(1, d["hits"] + d["fetches"]), "disk": caches[0].usage(),
                         "http_requests": sum(v for k, v in w.items() if k.endswith("requests")),
                         "http_gets": w["GET requests"], "http_bytes": w["GET bytes"]})
        shutil.rmtree(folder, ignore_errors=True)
    exactly_once = sorted(seen) == list(range(loader.packs)) and max(seen.values()) == 1
    b = np.array([p["bytes"] for p in per_node], dtype=np.float64) / split_bytes
    out = {"nodes": nodes, "bytes_mean": float(b.mean()), "bytes_max": float(b.max()),
           "requests_mean": float(np.mean([p["requests"] for p in per_node])),
           "hits": None if not real else float(np.mean([p["hits"] for p in per_node])),
           "disk_max": max((p.get("disk", 0) for p in per_node), default=0), "exactly_once": exactly_once,
           "plan_s": plan_s, "node_episodes": node_episodes, "step_episodes": step_episodes}
    if real:
        h = np.array([p["http_bytes"] for p in per_node], dtype=np.float64) / stored
        out.update(http_bytes_mean=float(h.mean()), http_bytes_max=float(h.max()),
                   refetches=int(sum(p["refetches"] for p in per_node)),
                   http_requests_mean=float(np.mean([p["http_requests"] for p in per_node])),
                   http_gets_mean=float(np.mean([p["http_gets"] for p in per_node])))
    return out


def measure_levels(levels: list[int]) -> list[dict]:
    """zstd level vs shard size and speed on a small real PushT packed table."""
    from loaders import shardfile

    tmp = Path(tempfile.mkdtemp(prefix="levels-"))
    src = tmp / "src"
    lake.write_pusht_dataset(src, episodes=6, version="v3.0", min_len=20, max_len=40, seed=0)
    lk = lake.open(tmp / "lake")
    lk.ingest(src, split_ratios={"train": 1.0}, progress=False)
    lk.pack()
    loader = lk.stream("train", shuffle="none")
    table = loader._dataset().take(loader.rows, columns=loader.columns)
    out = []
    for level in levels:
        path = tmp / f"l{level}.lks"
        t = time.perf_counter()
        size = shardfile.write(path, table, level)
        write_s = time.perf_counter() - t
        t = time.perf_counter()
        with shardfile.ShardFile(path) as f:
            for _ in range(3):
                for i in range(f.packs):
                    f.read(i)
        read_s = (time.perf_counter() - t) / 3
        out.append({"level": level, "ratio": size / table.nbytes, "write_MBps": table.nbytes / write_s / 1e6,
                    "read_MBps": table.nbytes / read_s / 1e6, "packs": table.num_rows, "bytes": table.nbytes})
        print(out[-1], flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def mixing(n: int, n_ranks: int, batch_packs: int, orders: list[tuple[str, str]], group: int = 16) -> list[dict]:
    """How far apart in the table the packs of a batch are: distinct groups of ``group`` consecutive packs per
    batch (mean over all ranks' batches, epoch 0; ``batch_packs`` = perfect), from the plans alone. A packed
    table written episode by episode has neighbouring packs from the same episodes, so this bounds mixing when
    the packer did not shuffle across the whole split."""
    from loaders.partition import batches_of
    from loaders.shuffle import get_shuffle

    tokens = np.random.default_rng(0).integers(700, 1025, n)
    out = []
    for shuffle, partition in orders:
        order = get_shuffle(shuffle)(n, 0, 0)
        t = time.perf_counter()
        plans = [batches_of(order, tokens[order], World(r, n_ranks), batch_packs, partition) for r in range(n_ranks)]
        plan_s = time.perf_counter() - t
        counts = [len(set((b // group).tolist())) for bs in plans for b in bs]
        out.append({"shuffle": shuffle, "partition": partition, "groups_per_batch": float(np.mean(counts)),
                    "plan_s": plan_s})
    return out


def _nodes_loop(tokens, world_size, batch_packs, *, packs, node_size=NODE):
    """The ``nodes`` partition as first written (a loop per step and node calling ``balanced``): the peer of
    the vectorised one (tests/loaders/test_order.py checks they deal alike)."""
    from loaders.partition import balanced

    n = len(tokens)
    per = world_size * batch_packs
    step, rank = np.arange(n) // per, np.empty(n, dtype=np.int64)
    for lo in range(0, n, per):
        pos = np.arange(lo, min(lo + per, n))
        pos = pos[np.argsort(packs[pos], kind="stable")]
        cuts = (np.arange(world_size + 1) * len(pos)) // world_size
        for first in range(0, world_size, node_size):
            last = min(first + node_size, world_size)
            mine = pos[cuts[first]:cuts[last]]
            if len(mine):
                rank[mine] = first + balanced(tokens[mine], last - first, batch_packs)[1]
    return step, rank


def plan_scale(ranks: list[int], n: int, batch_packs: int, window: int, group: int = 16, sample: int = 16,
               repeat: int = 3) -> list[dict]:
    """From the plans alone (``n`` packs, no data), per world size: the deal (every position's step and rank,
    what each rank computes at the start of an epoch; best of ``repeat``) with the vectorised ``nodes``
    partition vs the loop it replaced, one rank's whole plan (median over ``sample`` ranks spread over the
    world), and mixing over those ranks' batches (see ``mixing``)."""
    from loaders.partition import batches_of, get_partition
    from loaders.shuffle import get_shuffle

    tokens = np.random.default_rng(0).integers(700, 1025, n)

    def best(f) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times) * 1e3

    out = []
    for n_ranks in ranks:
        for shuffle, partition in (("random", "balanced"), (f"windows:{window}", f"nodes:{NODE}"),
                                   (f"strata:{window}", f"nodes:{NODE}")):
            order = get_shuffle(shuffle)(n, 0, 0)
            tok = tokens[order]
            deal = get_partition(partition)
            kw = {"packs": order} if partition.startswith("nodes") else {}
            row = {"ranks": n_ranks, "order": f"{shuffle} + {partition}"}
            row["deal_ms"] = best(lambda: deal(tok, n_ranks, batch_packs, **kw))
            if kw:
                row["loop_ms"] = best(lambda: _nodes_loop(tok, n_ranks, batch_packs, **kw))
            times, counts = [], []
            for r in np.linspace(0, n_ranks - 1, min(sample, n_ranks)).astype(int).tolist():
                t = time.perf_counter()
                plan = batches_of(order, tok, World(r, n_ranks), batch_packs, partition)
                times.append(time.perf_counter() - t)
                counts += [len(set((b // group).tolist())) for b in plan]
            row["rank_ms"] = float(np.median(times)) * 1e3
            row["mixing"] = float(np.mean(counts))
            out.append(row)
            print(row, flush=True)
    return out


def amplification(copies: int, episodes: int, sizes: list[int]) -> list[dict]:
    """HTTP GETs and GET bytes (through the ``CountingProxy``) of fetching a whole split shard by shard, one
    Lance take per shard, per shard size: what the object store serves around the rows a take asks for."""
    lk, table, server, proxy, stored = s3_lake(copies, episodes)
    out = []
    try:
        source = resolve(lk, None, None)
        loader = Loader(source, "train", shuffle="none")
        for sp in sizes:
            fetch = _cache.ShardSource(source, loader.rows, loader.columns, sp)
            fetch(0)  # the table opened (manifest reads) before counting
            before = Counter(proxy.counts)
            shards = -(-loader.packs // sp)
            for s in range(shards):
                fetch(s)
            w = proxy.counts - before
            out.append({"shard_packs": sp, "takes": shards, "gets": w["GET requests"],
                        "bytes_ratio": w["GET bytes"] / stored, "packs": loader.packs, "stored": stored})
            print(out[-1], flush=True)
    finally:
        proxy.stop()
        server.stop()
    return out


def _print_scale(scale: list[dict], n: int) -> None:
    print(f"\nPlans alone, {n:,} packs, batch_packs=4 (mixing: distinct 16-pack neighbourhoods per batch, 4 = "
          "perfect)\n| ranks | order | deal ms (vectorised) | deal ms (loop, before) | loop ÷ vectorised | "
          "one rank's plan ms | mixing |\n|---:|---|---:|---:|---:|---:|---:|")
    for r in scale:
        loop = f"{r['loop_ms']:.0f} | {r['loop_ms'] / r['deal_ms']:.1f}x" if "loop_ms" in r else "– | –"
        print(f"| {r['ranks']} | {r['order']} | {r['deal_ms']:.1f} | {loop} | {r['rank_ms']:.1f} | {r['mixing']:.2f} |")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), python "
          f"{platform.python_version()}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 64, 256, 1024])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--shard-packs", type=int, default=16)
    ap.add_argument("--window", type=int, default=256, help="windows:K / strata:K shuffle window, packs")
    ap.add_argument("--strata-leaf", type=int, default=1, help="strata:K/L leaf, packs (1: stratified all the way)")
    ap.add_argument("--orders", nargs="+", default=["random", "windows", "strata"],
                    choices=["random", "windows", "strata"], help="which orders to replay at each world size")
    ap.add_argument("--limit-shards", type=int, default=32, help="per-node cache limit, in shards")
    ap.add_argument("--levels", action="store_true")
    ap.add_argument("--mixing", action="store_true")
    ap.add_argument("--scale-packs", type=int, default=65536, help="packs of the plans-alone table")
    ap.add_argument("--scale-window", type=int, default=256, help="windows:K of the plans-alone table")
    ap.add_argument("--plans-only", action="store_true", help="only the plans-alone table (no S3)")
    ap.add_argument("--no-scale", action="store_true", help="skip the plans-alone table after the replay")
    ap.add_argument("--amplification", action="store_true", help="HTTP bytes of shard-by-shard fetches vs shard size")
    args = ap.parse_args()

    if args.amplification:
        rows = amplification(1, args.episodes, [1, 4, 16, 64, 256, 10**6])
        print(f"\n{rows[0]['packs']} packs, {rows[0]['stored'] / 1e6:.1f} MB of Lance data files\n"
              "| shard packs | takes | HTTP GETs | GETs / take | GET bytes ÷ stored split |\n|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {min(r['shard_packs'], r['packs'])} | {r['takes']} | {r['gets']} | {r['gets'] / r['takes']:.1f} | "
                  f"{r['bytes_ratio']:.3f} |")
        return

    if args.plans_only:
        scale = plan_scale(args.ranks, args.scale_packs, 4, args.scale_window)
        _print_scale(scale, args.scale_packs)
        return

    if args.mixing:
        orders = [("none", "balanced"), ("random", "balanced"), ("blocks:64", "balanced"),
                  ("windows:64", f"nodes:{NODE}"), ("windows:256", f"nodes:{NODE}"), ("windows:1024", f"nodes:{NODE}"),
                  ("strata:64", f"nodes:{NODE}"), ("strata:256", f"nodes:{NODE}"), ("strata:1024", f"nodes:{NODE}"),
                  ("random", f"nodes:{NODE}")]
        for n_ranks in (8, 64):
            rows = mixing(4096, n_ranks, 4, orders)
            print(f"\n{n_ranks} ranks, batch_packs=4, 4096 packs: distinct 16-pack table neighbourhoods per batch "
                  "(4 = every pack from elsewhere)\n| shuffle | partition | neighbourhoods / batch | plan s (all ranks) |"
                  "\n|---|---|---:|---:|")
            for r in rows:
                print(f"| {r['shuffle']} | {r['partition']} | {r['groups_per_batch']:.2f} | {r['plan_s']:.2f} |")
        return

    if args.levels:
        rows = measure_levels([0, 1, 3, 6, 12])
        print("\n| zstd level | size / Arrow bytes | write MB/s | read MB/s |\n|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['level']} | {r['ratio']:.3f} | {r['write_MBps']:.0f} | {r['read_MBps']:.0f} |")
        print(f"({rows[0]['packs']} packs, {rows[0]['bytes'] / 1e6:.1f} MB of Arrow)")
        return

    t0 = time.perf_counter()
    lk, table, server, proxy, stored = s3_lake(args.copies, args.episodes)
    print(f"wrote {table.num_rows} packs ({table.nbytes / 1e6:.0f} MB of Arrow, {stored / 1e6:.0f} MB of Lance data "
          f"files) to moto S3 in {time.perf_counter() - t0:.0f} s", flush=True)
    root = Path(tempfile.mkdtemp(prefix="cluster-cache-"))
    try:
        source = resolve(lk, None, None)
        loader = Loader(source, "train", shuffle=f"windows:{args.window}", cache_dir=root / "probe",
                        shard_packs=args.shard_packs)
        ids = [int(i) for i in table.filter(np.asarray(table["split"].to_pylist()) == "train")["pack_id"].to_pylist()]
        loader.local_of = {pid: k for k, pid in enumerate(ids)}  # pack id -> split-local number (table order)
        train = table.filter(np.asarray(table["split"].to_pylist()) == "train")
        loader.episodes_of = [set(e) for e in train["origin_episode"].to_pylist()]  # split-local pack -> episodes
        per_pack = np.array([table.slice(k, 1).nbytes for k in range(table.num_rows)], dtype=np.int64)
        loader.split_bytes = int(per_pack.sum())
        loader.shard_bytes = [int(per_pack[s:s + args.shard_packs].sum())
                              for s in range(0, len(per_pack), args.shard_packs)]
        limit = args.limit_shards * max(loader.shard_bytes)
        print(f"{loader.packs} packs, {len(loader.shard_bytes)} shards of {args.shard_packs}; node cache limit "
              f"{limit / 1e6:.1f} MB; window share {args.window / loader.packs:.4f}", flush=True)
        strata = f"strata:{args.window}" + (f"/{args.strata_leaf}" if args.strata_leaf > 1 else "")
        configs = {"random": ("random + balanced (default), from the plan", "random", "balanced", False),
                   "windows": (f"windows:{args.window} + nodes:{NODE}, replayed", f"windows:{args.window}",
                               f"nodes:{NODE}", True),
                   "strata": (f"{strata} + nodes:{NODE}, replayed", strata, f"nodes:{NODE}", True)}
        rows = []
        for n in args.ranks:
            for name, shuffle, partition, real in (configs[o] for o in args.orders):
                loader.shuffle = shuffle
                t = time.perf_counter()
                r = replay(loader, n, partition, root, limit, real, proxy, stored)
                r.update(ranks=n, name=name, target=1.2 * (1 / r["nodes"] + args.window / loader.packs),
                         wall_s=time.perf_counter() - t)
                rows.append(r)
                print(r, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        proxy.stop()
        server.stop()
    print("\n| ranks | nodes | order | Arrow bytes/node ÷ split (mean, max) | HTTP GET bytes/node ÷ stored split "
          "(mean, max) | target | table reads/node | HTTP requests/node (GETs) | hit ratio | refetches (all nodes) | "
          "episodes / node step | episodes / global step | exactly once |\n"
          "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        hits = "–" if r["hits"] is None else f"{r['hits']:.2f}"
        http = (f"{r['http_bytes_mean']:.4f}, {r['http_bytes_max']:.4f}" if "http_bytes_mean" in r else "–")
        reqs = (f"{r['http_requests_mean']:.1f} ({r['http_gets_mean']:.1f})" if "http_requests_mean" in r else "–")
        print(f"| {r['ranks']} | {r['nodes']} | {r['name']} | {r['bytes_mean']:.4f}, {r['bytes_max']:.4f} | {http} | "
              f"{r['target']:.4f} | {r['requests_mean']:.1f} | {reqs} | {hits} | {r.get('refetches', '–')} | "
              f"{r['node_episodes']:.1f} | {r['step_episodes']:.1f} | {'yes' if r['exactly_once'] else 'NO'} |")
    if not args.no_scale:
        _print_scale(plan_scale(args.ranks, args.scale_packs, 4, args.scale_window), args.scale_packs)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), python "
          f"{platform.python_version()}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
