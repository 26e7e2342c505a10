"""stream(cache_dir=...): the per-node shard cache gives the very batches Lance does, fetches each shard once per
node (across processes), stays under its size limit, evicts by every live process's announced plan (never what
another process is about to read, when the limit allows; a killed process's claims expire), never serves a torn
shard, and keeps exactly-once coverage through resume and world-size changes whatever it holds."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from loaders import cache as _cache
from loaders import shardfile

ROOT = Path(__file__).resolve().parents[2]


def _same(got, want) -> None:
    assert [b.pack_ids.tolist() for b in got] == [b.pack_ids.tolist() for b in want]
    for a, b in zip(got, want):
        assert a.origin == b.origin and a.max_seqlen == b.max_seqlen
        for name, t in b._tensors().items():
            assert torch.equal(getattr(a, name), t), name


def _shards(d: Path) -> list[Path]:
    return sorted(d.glob("*/shard-*.lks"))


@pytest.mark.parametrize("shuffle,batch_packs,world_size", [("random", 3, 1), ("blocks:8", 2, 2), ("none", 1, 1)])
def test_cached_streams_deliver_the_same_batches_as_lance(packed, tmp_path, shuffle, batch_packs, world_size):
    lk, _ = packed
    for rank in range(world_size):
        kw = dict(batch_packs=batch_packs, seed=4, shuffle=shuffle, rank=rank, world_size=world_size)
        _same(list(lk.stream("train", cache_dir=tmp_path, shard_packs=4, **kw)), list(lk.stream("train", **kw)))
    loader = lk.stream("train", cache_dir=tmp_path, shard_packs=4)
    assert len(_shards(tmp_path)) == loader.cache.shards  # every shard once, in one folder
    assert not list(tmp_path.rglob("*.tmp"))


def test_each_shard_is_fetched_once_then_read_from_disk(packed, tmp_path):
    lk, _ = packed
    first = lk.stream("train", seed=1, cache_dir=tmp_path, shard_packs=4)
    before = dict(_cache.STATS)
    list(first)
    assert _cache.STATS["fetches"] - before["fetches"] == first.cache.shards
    again = lk.stream("train", seed=1, epoch=1, cache_dir=tmp_path, shard_packs=4)
    before = dict(_cache.STATS)
    list(again)
    assert _cache.STATS["fetches"] == before["fetches"] and _cache.STATS["hits"] > before["hits"]
    # resuming from a state_dict reads the rest from the cache, as without it
    it = iter(first)
    next(it)
    state = first.state_dict()
    resumed = lk.stream("train", seed=1, cache_dir=tmp_path, shard_packs=4)
    resumed.load_state_dict(state)
    plain = lk.stream("train", seed=1)
    plain.load_state_dict(state)
    _same(list(resumed), list(plain))


@pytest.mark.parametrize("limit", [None, "1GB"])
def test_neighbouring_shards_needed_soon_are_fetched_with_one_read(packed, tmp_path, limit):
    lk, _ = packed
    loader = lk.stream("train", shuffle="none", cache_dir=tmp_path, shard_packs=2, cache_window=3,
                       cache_limit=limit)
    before = dict(_cache.STATS)
    _same(list(loader), list(lk.stream("train", shuffle="none")))
    fetches, takes = (_cache.STATS[k] - before[k] for k in ("fetches", "takes"))
    assert fetches == loader.cache.shards  # each shard written once
    if limit is None:  # nothing is evicted: one read takes them all
        assert takes == 1
    else:  # in runs of at most window + 1 = 4 shards (fetched far ahead, they would be evicted first)
        assert -(-fetches // 4) <= takes < fetches
    for p in _shards(tmp_path):
        with shardfile.ShardFile(p) as f:
            assert f.packs == min(2, loader.packs - 2 * int(p.stem[-6:]))  # a run is cut back into shards


@pytest.mark.parametrize("group_rows", [8, 2])
@pytest.mark.parametrize("shard_packs", [1, 3, 5])
def test_a_run_of_shards_read_with_one_scan_is_cut_into_the_shards_a_take_gives(packed, shard_packs, group_rows,
                                                                                 monkeypatch):
    # local scans read in batches of up to GROUP_ROWS rows, which a fragment's end cuts short (3 fragments here)
    # and a shard larger than GROUP_ROWS spans: every shard must still come out whole, in order, row for row
    # what a take of its rows gives
    monkeypatch.setattr(_cache, "GROUP_ROWS", group_rows)
    lk, _ = packed
    loader = lk.stream("train", shuffle="none")
    fetch = _cache.ShardSource(loader.source, loader.rows, loader.columns, shard_packs, loader.addrs,
                               "split = 'train'")
    shards = -(-len(loader.rows) // shard_packs)
    assert shards >= 4
    for s, count in ((0, shards), (1, 3), (shards - 2, 2)):
        got = list(fetch.pieces(s, count))
        assert len(got) == count
        for i, table in enumerate(got):
            assert table.combine_chunks().equals(fetch(s + i).combine_chunks()), (s, count, i)


def test_forked_workers_wait_for_the_shards_the_main_process_fetches(packed, tmp_path):
    lk, _ = packed
    kw = dict(batch_packs=2, seed=5, shard_packs=3)
    loader = lk.stream("train", cache_dir=tmp_path, num_workers=2, multiprocessing_context="fork", **kw)
    before = dict(_cache.STATS)
    got = list(loader)  # the main process holds the shards' locks while its read lands, across the fork
    assert _cache.STATS["fetches"] - before["fetches"] == loader.cache.shards  # all of them fetched here, once
    _same(got, list(lk.stream("train", **kw)))
    _same(list(loader), list(lk.stream("train", epoch=1, **kw)))  # the next epoch, from disk
    assert _cache.STATS["fetches"] - before["fetches"] == loader.cache.shards
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_limit_smaller_than_the_split_is_honoured_by_eviction(packed, tmp_path):
    lk, _ = packed
    probe = lk.stream("train", cache_dir=tmp_path / "probe", shard_packs=2)
    list(probe)
    sizes = [p.stat().st_size for p in _shards(tmp_path / "probe")]
    limit = 5 * max(sizes)  # a window of 1 ahead + the batch's shards fit; the split does not
    assert limit < sum(sizes)
    loader = lk.stream("train", seed=3, batch_packs=2, cache_dir=tmp_path / "c", cache_limit=limit, shard_packs=2,
                       cache_window=1)
    before = dict(_cache.STATS)
    got = []
    for b in loader:
        got.append(b)
        # the side thread may have just written a run of shards (up to cache_window + 1 = 2) it has not yet
        # evicted for
        assert loader.cache.usage() <= limit + 2 * max(sizes)
    assert loader.cache.usage() <= limit
    assert _cache.STATS["evictions"] > before["evictions"]
    _same(got, list(lk.stream("train", seed=3, batch_packs=2)))


@pytest.mark.parametrize("ends_first", [True, False])
def test_shards_still_pinned_when_the_last_ones_land_are_evicted_once_their_batches_are_read(packed, tmp_path,
                                                                                              ends_first):
    # the loader's read-ahead hands batches out (pinning their shards) before it reads them: the last shards can
    # land while more are pinned than the limit holds, and the iteration can end (read_ahead) before or after
    # its last batches are read. Here every fetch lands while every batch is handed out and none is read: the
    # folder must be back under its limit once the last batch is read and the iteration has ended
    lk, _ = packed
    probe = lk.stream("train", cache_dir=tmp_path / "probe", shard_packs=2)
    list(probe)
    limit = 5 * max(p.stat().st_size for p in _shards(tmp_path / "probe"))
    loader = lk.stream("train", seed=3, batch_packs=2, cache_dir=tmp_path / "c", cache_limit=limit, shard_packs=2,
                       cache_window=1)
    plan = loader.plan()
    units = loader.cache.units(plan, lambda table: loader._batch(table, False))
    held = list(itertools.islice(units, len(plan)))
    needed = _cache.shard_order(plan, 2)
    for s in needed:
        loader.cache.ensure(s)
    assert len(_shards(tmp_path / "c")) == len(needed)  # all landed, none evicted: all pinned
    assert loader.cache.usage() > limit
    if ends_first:
        assert next(units, None) is None
    got = [unit() for unit in held]
    if not ends_first:
        assert next(units, None) is None
    assert loader.cache.usage() <= limit
    _same(got, list(lk.stream("train", seed=3, batch_packs=2)))


def test_sizes_parse_and_bad_ones_are_errors():
    assert _cache.parse_size("20GB") == 20 * 10**9 and _cache.parse_size("1.5 MiB") == int(1.5 * 2**20)
    assert _cache.parse_size(1234) == 1234 and _cache.parse_size(None) is None
    with pytest.raises(ValueError, match="cache_limit 'lots'"):
        _cache.parse_size("lots")


_RANK = """
import json, sys, lake
from loaders import cache
lk = lake.open(sys.argv[1])
loader = lk.stream("train", seed=2, rank=int(sys.argv[2]), world_size=2, cache_dir=sys.argv[3], shard_packs=2)
batches = [b.pack_ids.tolist() for b in loader]
print(json.dumps({"batches": batches, "fetches": cache.STATS["fetches"]}))
"""


def test_two_processes_of_a_node_share_the_cache_and_fetch_each_shard_once(packed, tmp_path):
    lk, _ = packed
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'loaders'}"}
    procs = [subprocess.Popen([sys.executable, "-c", _RANK, lk.uri, str(r), str(tmp_path)], stdout=subprocess.PIPE,
                              env=env, text=True) for r in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for r, out in enumerate(outs):
        assert out["batches"] == [b.pack_ids.tolist() for b in lk.stream("train", seed=2, rank=r, world_size=2)]
    # ranks read overlapping shards; together they fetched each needed shard exactly once
    needed = {p // 2 for out in outs for b in out["batches"] for p in _packs_of(lk, b)}
    assert sum(out["fetches"] for out in outs) == len(needed) == len(_shards(tmp_path))


def _packs_of(lk, pack_ids):
    """Split-local pack numbers of the given pack ids (the loader's numbering)."""
    loader = lk.stream("train", shuffle="none")
    ids = [pid for b in loader for pid in b.pack_ids.tolist()]
    where = {pid: i for i, pid in enumerate(ids)}
    return [where[pid] for pid in pack_ids]


_SLOW_FETCH = """
import sys, lake
from loaders import cache
lk = lake.open(sys.argv[1])
loader = lk.stream("train", cache_dir=sys.argv[2], shard_packs=10**6)  # one shard: the whole split
loader.cache.level = 19  # slow enough to be killed mid-write
loader.cache.ensure(0)
"""


def test_kill_9_mid_download_leaves_no_torn_shard_that_is_served(packed, tmp_path):
    lk, _ = packed
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'loaders'}"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_FETCH, lk.uri, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            tmps = list(tmp_path.rglob(".*.tmp"))
            if tmps and tmps[0].stat().st_size > len(shardfile.MAGIC):
                break
            time.sleep(0.01)
        else:
            pytest.fail("the child never started writing its shard")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not _shards(tmp_path) and list(tmp_path.rglob(".*.tmp"))  # a torn temp file, never published
    # a torn file at the shard's own name (as a crash without rename could leave) is refused and fetched again
    loader = lk.stream("train", seed=6, cache_dir=tmp_path, shard_packs=10**6)
    assert not list(tmp_path.rglob(".*.tmp"))  # the dead writer's temp file is swept on open
    loader.cache.path(0).write_bytes(tmps[0].read_bytes()[:1000] if tmps[0].exists() else b"LKSHARD1torn")
    _same(list(loader), list(lk.stream("train", seed=6)))
    assert shardfile.ShardFile(loader.cache.path(0)).packs == loader.packs


def test_shards_of_an_earlier_boot_are_verified_and_a_corrupt_one_is_refetched_never_served(packed, tmp_path):
    # shards are written without an fsync: after a crash a renamed shard may hold frames that never reached the
    # disk. Two shards rewritten as an earlier boot left them, one with a corrupt frame (structure intact)
    import uuid

    import pyarrow as pa

    lk, _ = packed
    kw = dict(seed=8, batch_packs=2)
    want = list(lk.stream("train", cache_dir=tmp_path, shard_packs=4, **kw))
    intact, torn = _shards(tmp_path)[:2]
    earlier = uuid.uuid4().bytes
    for p in (intact, torn):
        with shardfile.ShardFile(p) as f:
            table = pa.Table.from_batches([shardfile.read_batch([(f, i) for i in range(f.packs)])])
            frame = (f.offsets[1] + f.offsets[2]) // 2  # inside pack 0's image frame
        shardfile.write_frames(p, shardfile.Frames(table), 0, boot=earlier)
    with open(torn, "r+b") as f:
        f.seek(frame)
        b = f.read(1)
        f.seek(frame)
        f.write(bytes([b[0] ^ 0xFF]))
    shardfile._INDEXES.clear()  # as a fresh process
    before = dict(_cache.STATS)
    _same(list(lk.stream("train", cache_dir=tmp_path, shard_packs=4, **kw)), want)
    assert _cache.STATS["fetches"] - before["fetches"] == 1  # the corrupt one, fetched again; the intact one kept
    for p in (intact, torn):
        with open(p, "rb") as f:
            f.seek(-shardfile._FOOTER, os.SEEK_END)
            assert f.read(16) == shardfile.boot_id()  # verified (or rewritten) in this boot


def _origins(batches) -> Counter:
    return Counter(o for b in batches for o in b.origin)


@pytest.mark.parametrize("first,then,shuffle,partition", [(4, 3, "random", "balanced"),
                                                           (3, 5, "windows:8", "nodes:2")])
def test_exactly_once_over_ranks_through_resize_with_a_partially_evicted_cache(packed, tmp_path, first, then, shuffle,
                                                                               partition):
    lk, _ = packed
    everything = _origins(lk.stream("train", shuffle="none"))
    kw = dict(seed=9, batch_packs=1, cache_dir=tmp_path, shard_packs=2, cache_window=1, shuffle=shuffle,
              partition=partition)
    probe = lk.stream("train", **kw)
    probe.cache.ensure(0)
    shard = probe.cache.path(0).stat().st_size
    limit = 6 * shard  # a few shards: the split does not fit
    steps = 3
    seen: Counter = Counter()
    state = None
    for r in range(first):  # every rank takes `steps` batches, then the job stops
        loader = lk.stream("train", rank=r, world_size=first, cache_limit=limit, **kw)
        it = iter(loader)
        for _ in range(steps):
            seen += _origins([next(it)])
        it.close()
        state = loader.state_dict()
    assert probe.cache.usage() <= limit + 2 * shard
    for r in range(then):  # resumed on another world size, over whatever the cache kept
        loader = lk.stream("train", rank=r, world_size=then, cache_limit=limit, **kw)
        loader.load_state_dict(state)
        seen += _origins(loader)
    assert seen == everything


def test_spawned_workers_read_through_the_node_cache(packed, tmp_path):
    lk, _ = packed
    want = list(lk.stream("train", batch_packs=2, seed=5))
    _same(list(lk.stream("train", batch_packs=2, seed=5, num_workers=2, cache_dir=tmp_path, shard_packs=3,
                         cache_limit="50MB")), want)
    assert _shards(tmp_path) and not list(tmp_path.rglob("*.tmp"))


# --- eviction by every process's plan (claims) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_packs(tmp_path_factory):
    """A lake whose one split has ~70 small packs (32-byte patches): enough shards for a tight cache limit."""
    import lake
    from packed_tables import LAYOUT, synthetic_packs, write_packed_table

    lk = lake.open(tmp_path_factory.mktemp("small") / "lake")
    write_packed_table(lk, synthetic_packs({**LAYOUT, "token_dim": 32}, episodes=24, seed=1, copies=2,
                                           splits={"train": 1.0}), rows_per_file=32)
    return lk


_STEPPED = """
import json, sys, lake
from loaders import cache
lk = lake.open(sys.argv[1])
loader = lk.stream("train", shuffle="none", partition="interleave", rank=int(sys.argv[2]), world_size=2,
                   cache_dir=sys.argv[3], cache_limit=int(sys.argv[4]), shard_packs=2, cache_window=1, prefetch=0)
loader.cache.plans = sys.argv[5] == "1"
it = iter(loader)
for line in sys.stdin:  # one batch per line from the parent: the ranks run in a lockstep the test chooses
    b = next(it, None)
    # a step ends once the shards it fetched have landed and been evicted for (they are written behind): least
    # recently used goes by the files' times, which would otherwise depend on when a write lands in the other's step
    loader.cache.flush()
    print(json.dumps({"packs": None if b is None else b.pack_ids.tolist(), "fetches": cache.STATS["fetches"]}),
          flush=True)
"""


def _usage(root: Path) -> int:
    """Bytes of shards under ``root`` (a file evicted while we look counts nothing)."""
    total = 0
    for p in _shards(root):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _child(script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'loaders'}"}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)


def _step(proc: subprocess.Popen) -> dict:
    proc.stdin.write("next\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"child {proc.pid} ended (exit {proc.wait()})")
    return json.loads(line)


@pytest.mark.parametrize("plans", [True, False])
def test_a_process_never_evicts_a_shard_another_announced_and_has_not_read(small_packs, tmp_path, plans):
    lk = small_packs
    probe = lk.stream("train", shuffle="none", cache_dir=tmp_path / "probe", shard_packs=2)
    list(probe)
    sizes = [p.stat().st_size for p in _shards(tmp_path / "probe")]
    shards = len(sizes)
    # Rank 0 leads rank 1 by `lag` steps (`lag + 1` while rank 1 takes its step); both read shard k at their
    # step k (shuffle none, interleave, 2 packs a shard). Held or needed at once: rank 1's last shard read (its
    # pinned window starts there) and its next `lag + 1`, rank 0's shard, its window of 1 and the neighbour it
    # reads with it: lag + 5 shards. Least recently used would need to keep every shard touched since rank 1's
    # next one was read: 2 * lag + 3 or more.
    lag = 6
    limit = (lag + 5) * max(sizes)
    assert limit < sum(sizes) and limit < (2 * lag + 3) * np.median(sizes)
    root = tmp_path / "node"
    a, b = (_child(_STEPPED, lk.uri, r, root, limit, int(plans)) for r in range(2))
    try:
        outs = {0: [], 1: []}
        for _ in range(lag):
            outs[0].append(_step(a))
        while outs[1][-1:] == [] or outs[1][-1]["packs"] is not None:
            for r, proc in ((0, a), (1, b)):
                if not outs[r] or outs[r][-1]["packs"] is not None:
                    outs[r].append(_step(proc))
            # limit honoured (each process's side thread may hold a just-written run of up to 2 shards it has
            # not evicted for yet)
            assert _usage(root) <= limit + 4 * max(sizes)
        while outs[0][-1]["packs"] is not None:
            outs[0].append(_step(a))
    finally:
        for proc in (a, b):
            proc.stdin.close()
            proc.wait(timeout=60)
    assert [o["packs"] for o in outs[0][:-1]] == [x.pack_ids.tolist() for x in lk.stream(
        "train", shuffle="none", partition="interleave", rank=0, world_size=2)]
    fetches = outs[0][-1]["fetches"] + outs[1][-1]["fetches"]
    if plans:
        assert fetches == shards  # each shard fetched once for the node: no refetch
    else:
        assert fetches > shards  # least recently used evicts what rank 1 is about to read: refetches
    assert _usage(root) <= limit
    assert not list((root / _cache.CLAIMS).iterdir())  # every claim removed at the end of its iteration


def test_a_process_without_a_limit_announces_its_position_once_an_evicting_cache_shares_the_folder(packed, tmp_path):
    lk, _ = packed
    kw = dict(cache_dir=tmp_path, shard_packs=4, prefetch=0)
    list(lk.stream("train", **kw))  # filled: the next iteration reads through the shards, with a claim
    loader = lk.stream("train", **kw)
    it = iter(loader)
    got = [next(it)]
    claims = tmp_path / _cache.CLAIMS
    assert len(list(claims.glob("*.plan"))) == 1 and not list(claims.glob("*.json"))  # nobody evicts here yet
    lk.stream("train", cache_dir=tmp_path, shard_packs=4, cache_limit="1GB")  # a cache with a limit opens it
    got.append(next(it))
    assert [c["pid"] for c in _cache.live_claims(tmp_path)] == [os.getpid()]  # from the next batch on
    got += list(it)
    _same(got, list(lk.stream("train", shard_packs=4, prefetch=0)))
    assert not list(claims.iterdir())  # removed at the end of the iteration


_HOLDING = """
import json, sys, lake
lk = lake.open(sys.argv[1])
# a limit the split fits in (without one, a cold iteration reads the table while the cache fills behind: no claim)
loader = lk.stream("train", shuffle="none", cache_dir=sys.argv[2], shard_packs=2, cache_window=2, prefetch=0,
                   cache_limit="1GB")
it = iter(loader)
next(it)
loader.cache.ensure(2)  # fetched ahead: its window
# the rest of the runs being read land on side threads: let them land, so no shard appears after the other
# process's evict below
from loaders.cache import _behind
_behind().shutdown(wait=True)
loader.cache.flush()  # and the shards those reads hold in memory are written (writes land on writer threads)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_killed_process_s_claims_expire(small_packs, tmp_path):
    lk = small_packs
    proc = _child(_HOLDING, lk.uri, tmp_path)
    try:
        assert proc.stdout.readline().strip() == "ready"
        claims = list((tmp_path / _cache.CLAIMS).glob("*.json"))
        assert len(claims) == 1 and f"-{proc.pid}-" in claims[0].name
        live = _cache.live_claims(tmp_path)
        assert [c["pid"] for c in live] == [proc.pid]
        assert sorted(set(live[0]["hold"])) == [0, 1, 2]  # batch 1's shard + a window of 2
        other = lk.stream("train", shuffle="none", cache_dir=tmp_path, shard_packs=2, cache_limit=0)
        for s in range(6):
            other.cache.ensure(s)  # each fetch evicts down to the limit, sparing what the child holds
        other.cache.flush()  # its reads grown by the child's claim land behind, on side and writer threads
        other.cache.evict()  # (the child, without a limit, may have fetched them all in one read: hits here)
        assert sorted(int(p.stem[-6:]) for p in _shards(tmp_path)) == [0, 1, 2]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    other.cache.evict()  # the dead process's claim is gone, and what it held is evicted
    assert not _shards(tmp_path) and not list((tmp_path / _cache.CLAIMS).iterdir())


def test_eviction_order_follows_the_live_claims(small_packs, tmp_path):
    lk = small_packs
    loader = lk.stream("train", shuffle="none", cache_dir=tmp_path, shard_packs=2)
    cache = loader.cache
    for s in range(6):
        cache.ensure(s)
    sizes = {int(p.stem[-6:]): p.stat().st_size for p in _shards(tmp_path)}
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claims = tmp_path / _cache.CLAIMS

    def claim(name, host, pid, batches, start=0, cur=-1, window=0, pinned=(), age=0.0):
        """A claim as a process writes it (see ``claims.Claim``): its batches' shards, and where it is."""
        offsets = np.cumsum([0] + [len(b) for b in batches])
        np.concatenate([[len(batches)], offsets, *batches]).astype("<i8").tofile(claims / f"{name}.plan")
        p = claims / f"{name}.json"
        p.write_text(json.dumps({"host": host, "pid": pid, "key": cache.key, "start": start, "cur": cur,
                                 "window": window, "pinned": list(pinned)}))
        os.utime(p, (time.time() - age, time.time() - age))
        return p

    import socket

    far = claim("far", "elsewhere", 1, [[3], [1, 2], [1]])  # another host's live claim: needs 3, then 1, then 2
    old = claim("old", "elsewhere", 1, [[0], [5]], cur=1, age=2 * _cache.CLAIM_TTL)  # not refreshed: dead
    gone = claim("gone", socket.gethostname(), int(dead.stdout), [[4]], cur=0)  # its process exited: dead
    (claims / "bad.json").write_text("{not json")  # skipped, never trusted
    cache.limit = sizes[3] + sizes[1] + sizes[2]
    cache.evict()  # unclaimed first (0, 4, 5: least recently used), then nothing more is needed
    assert sorted(int(p.stem[-6:]) for p in _shards(tmp_path)) == [1, 2, 3]
    assert far.exists() and not old.exists() and not gone.exists() and not (claims / "gone.plan").exists()
    cache.limit = sizes[3] + sizes[1]
    cache.evict()  # then the needed shard used furthest ahead: 2
    assert sorted(int(p.stem[-6:]) for p in _shards(tmp_path)) == [1, 3]
    claim("far", "elsewhere", 1, [[3], [1]], pinned=[1])
    cache.limit = 0
    cache.evict()  # held shards are never evicted, whatever the limit
    assert sorted(int(p.stem[-6:]) for p in _shards(tmp_path)) == [1]
