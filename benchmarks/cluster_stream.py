# PYTHONPATH=$PWD .venv/bin/python benchmarks/cluster_stream.py [--ranks 8 64 256 1024] [--copies 16] [--levels]
"""A simulated cluster streaming one split through per-node shard caches, from a lake on an S3 server.

The lake lives on moto's S3 server on 127.0.0.1 (as in tests/loaders/test_stream_s3.py): a synthetic packed
table (``tests/loaders/packed_tables.py``, 32-byte patches so that thousands of packs stay small; ``--copies``
repeats the packs). For each world size N (node size 8, so N/8 nodes), every rank's plan for epoch 0 is
replayed rank by rank, step by step (the ranks of a node interleaved, as they would run concurrently), through
one ``loaders.cache.NodeCache`` per node (a fresh folder each: a cold cache) under ``--limit``: shards are
really fetched from S3 (Lance takes), written zstd-compressed, evicted, and every batch is read back from the
cache. Per node: Arrow bytes fetched / split size, shard fetches (one Lance take each: the requests the cache
makes), cache hit ratio (shard accesses served from disk); over all ranks: that the union of the packs read is
every pack of the split exactly once.

Two configurations: the default ``lake.stream`` order (uniform ``random`` shuffle, ``balanced`` partition),
whose bytes per node come from the plan alone (distinct shards a node touches; fetching N/8 full splits from
moto would only confirm it), and the node-local one (``windows:K`` shuffle + ``nodes:8`` partition), replayed
for real. Target (issue 15): bytes per node <= 1.2 x (1/nodes + window share), window share = K / packs.

``--levels``: zstd level vs write/read speed and size, on the packs of a small real PushT lake (ingested and
packed here): the measurement behind ``loaders.shardfile.LEVEL``.
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


def s3_lake(copies: int, episodes: int):
    """(lake on a fresh moto server, the packed table written to it, the server)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port  # noqa: SLF001 - moto picks the free port
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                 region_name=REGION).create_bucket(Bucket=BUCKET)
    options = {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_region": REGION,
               "aws_endpoint": f"http://127.0.0.1:{port}", "allow_http": "true"}
    pt = packed_tables_module()
    layout = {**pt.LAYOUT, "token_dim": 32}
    table = pt.synthetic_packs(layout, episodes=episodes, seed=0, copies=copies, splits={"train": 1.0})
    lk = lake.open(f"s3://{BUCKET}/lake", storage_options=options)
    pt.write_packed_table(lk, table, rows_per_file=512)
    return lk, table, server


def replay(loader: Loader, n_ranks: int, partition: str, root: Path, limit: int | None, real: bool) -> dict:
    """Every node's cold-cache epoch: per-node bytes / requests / hits, and the exactly-once check."""
    shard_packs = loader.cache.shard_packs
    split_bytes = loader.split_bytes
    nodes = -(-n_ranks // NODE)
    loader.partition = partition
    plans = [loader.plan(World(r, n_ranks)) for r in range(n_ranks)]
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
        cache = _cache.NodeCache(folder, "split", loader.packs, shard_packs, loader.cache.fetch, limit=limit,
                                 window=loader.cache.window)
        before = dict(_cache.STATS)
        steps = max((len(plans[r]) for r in ranks), default=0)
        for k in range(steps):  # the node's ranks interleaved step by step, as if concurrent
            for r in ranks:
                if k < len(plans[r]):
                    table = cache.read(plans[r][k])
                    ids = table.column("pack_id").to_pylist()
                    seen.update(loader.local_of[i] for i in ids)
        d = {k: _cache.STATS[k] - before[k] for k in _cache.STATS}
        per_node.append({"bytes": d["fetched_bytes"], "requests": d["fetches"],
                         "hits": d["hits"] / max(1, d["hits"] + d["fetches"]), "disk": cache.usage()})
        shutil.rmtree(folder, ignore_errors=True)
    exactly_once = sorted(seen) == list(range(loader.packs)) and max(seen.values()) == 1
    b = np.array([p["bytes"] for p in per_node], dtype=np.float64) / split_bytes
    return {"nodes": nodes, "bytes_mean": float(b.mean()), "bytes_max": float(b.max()),
            "requests_mean": float(np.mean([p["requests"] for p in per_node])),
            "hits": None if not real else float(np.mean([p["hits"] for p in per_node])),
            "disk_max": max((p.get("disk", 0) for p in per_node), default=0), "exactly_once": exactly_once}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 64, 256, 1024])
    ap.add_argument("--copies", type=int, default=24)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--shard-packs", type=int, default=4)
    ap.add_argument("--window", type=int, default=64, help="windows:K shuffle window, packs")
    ap.add_argument("--limit-shards", type=int, default=32, help="per-node cache limit, in shards")
    ap.add_argument("--levels", action="store_true")
    ap.add_argument("--mixing", action="store_true")
    args = ap.parse_args()

    if args.mixing:
        orders = [("none", "balanced"), ("random", "balanced"), ("blocks:64", "balanced"),
                  ("windows:64", f"nodes:{NODE}"), ("windows:256", f"nodes:{NODE}"), ("windows:1024", f"nodes:{NODE}"),
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
    lk, table, server = s3_lake(args.copies, args.episodes)
    print(f"wrote {table.num_rows} packs ({table.nbytes / 1e6:.0f} MB) to moto S3 in {time.perf_counter() - t0:.0f} s",
          flush=True)
    root = Path(tempfile.mkdtemp(prefix="cluster-cache-"))
    source = resolve(lk, None, None)
    loader = Loader(source, "train", shuffle=f"windows:{args.window}", cache_dir=root / "probe",
                    shard_packs=args.shard_packs)
    ids = [int(i) for i in table.filter(np.asarray(table["split"].to_pylist()) == "train")["pack_id"].to_pylist()]
    loader.local_of = {pid: k for k, pid in enumerate(ids)}  # pack id -> split-local number (table order)
    per_pack = np.array([table.slice(k, 1).nbytes for k in range(table.num_rows)], dtype=np.int64)
    loader.split_bytes = int(per_pack.sum())
    loader.shard_bytes = [int(per_pack[s:s + args.shard_packs].sum()) for s in range(0, len(per_pack), args.shard_packs)]
    limit = args.limit_shards * max(loader.shard_bytes)
    print(f"{loader.packs} packs, {len(loader.shard_bytes)} shards of {args.shard_packs}; node cache limit "
          f"{limit / 1e6:.1f} MB; window share {args.window / loader.packs:.4f}", flush=True)
    print("\n| ranks | nodes | order | bytes/node ÷ split (mean, max) | target | shard fetches/node | hit ratio | "
          "exactly once |\n|---:|---:|---|---:|---:|---:|---:|---|")
    for n in args.ranks:
        for name, shuffle, partition, real in (("random + balanced (default), from the plan", "random", "balanced", False),
                                               (f"windows:{args.window} + nodes:{NODE}, replayed", f"windows:{args.window}",
                                                f"nodes:{NODE}", True)):
            loader.shuffle = shuffle
            t = time.perf_counter()
            r = replay(loader, n, partition, root, limit, real)
            target = 1.2 * (1 / r["nodes"] + args.window / loader.packs)
            hits = "–" if r["hits"] is None else f"{r['hits']:.2f}"
            print(f"| {n} | {r['nodes']} | {name} | {r['bytes_mean']:.4f}, {r['bytes_max']:.4f} | {target:.4f} | "
                  f"{r['requests_mean']:.1f} | {hits} | {'yes' if r['exactly_once'] else 'NO'} |  "
                  f"<!-- {time.perf_counter() - t:.0f} s -->", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    server.stop()
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), python "
          f"{platform.python_version()}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
