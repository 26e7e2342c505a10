"""A cold fill of the node shard cache serves a shard's first reads from the frames it just read, while the file is
written behind: those batches are the very ones Lance gives and the cache's files give afterwards, every pack once,
none waiting for a write; a prepared shard reads exactly like the file it is written as; a forked child never waits
for its parent's fetches. Without a limit, a cold iteration over a local table is filled by one scan: a small split
(``WAIT_BYTES``) is read once, by that scan, the iteration serving from what it reads; a larger one is read by the
iteration itself beside the scan. A cold start's first batch is one take of its packs."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from loaders import cache as _cache
from loaders import shardfile
from test_cache import _same, _shards  # the same batch and shard-file checks as the warm-cache tests

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("limit", [None, "1GB"])  # from the frames just read, with a limit or without (a small split)
@pytest.mark.parametrize("shuffle,batch_packs,world_size", [("random", 3, 1), ("blocks:8", 2, 2)])
def test_a_cold_epoch_is_served_from_the_rows_just_read_before_any_shard_lands(packed, tmp_path, monkeypatch,
                                                                               shuffle, batch_packs, world_size, limit):
    lk, _ = packed
    gate = threading.Event()  # holds every write until the epoch is read: nothing can come from a file
    write = shardfile.write_frames

    def held_write(path, frames, *args, **kw):
        gate.wait(timeout=120)
        return write(path, frames, *args, **kw)

    monkeypatch.setattr(shardfile, "write_frames", held_write)
    flush = _cache.NodeCache.flush

    def flushing(self):  # the end of the iteration waits for its writes: let them go then
        gate.set()
        flush(self)

    monkeypatch.setattr(_cache.NodeCache, "flush", flushing)
    for rank in range(world_size):
        kw = dict(batch_packs=batch_packs, seed=4, shuffle=shuffle, rank=rank, world_size=world_size)
        # (no read-ahead: the iteration's end, which lets the writes go, comes after its last batch)
        cold = lk.stream("train", cache_dir=tmp_path / str(rank), shard_packs=4, prefetch=0, cache_limit=limit, **kw)
        got = []
        for b in cold:
            assert not _shards(tmp_path / str(rank))  # no file has landed: this batch came from memory
            got.append(b)
        gate.set()
        cold.cache.flush()  # every shard lands, whole
        assert len(_shards(tmp_path / str(rank))) == len({p // 4 for b in cold.plan(position=(0, 0, 0)) for p in b})
        assert not list((tmp_path / str(rank)).rglob("*.tmp"))
        want = list(lk.stream("train", **kw))
        _same(got, want)  # the very batches Lance gives
        before = dict(_cache.STATS)
        warm = list(lk.stream("train", cache_dir=tmp_path / str(rank), shard_packs=4, **kw))
        assert _cache.STATS["fetches"] == before["fetches"]  # all from the files now
        _same(warm, got)  # and the files give the same batches
        gate.clear()
    # every pack exactly once over the ranks
    ids = [p for r in range(world_size) for b in lk.stream("train", batch_packs=batch_packs, seed=4, shuffle=shuffle,
                                                           rank=r, world_size=world_size) for p in b.pack_ids.tolist()]
    assert sorted(ids) == sorted(p for b in lk.stream("train", shuffle="none") for p in b.pack_ids.tolist())


def test_a_cold_iteration_without_a_limit_reads_the_table_while_one_scan_fills_the_cache(packed, tmp_path,
                                                                                         monkeypatch):
    lk, _ = packed
    monkeypatch.setattr(_cache, "WAIT_BYTES", -1)  # as a split too large to wait for its fill
    kw = dict(batch_packs=2, seed=6)
    want = list(lk.stream("train", **kw))
    gate = threading.Event()  # holds the fill's read until the iteration ends: every batch must come from the table
    pieces = _cache.ShardSource.pieces

    def held(self, s, count):
        gate.wait(timeout=120)
        yield from pieces(self, s, count)

    flush = _cache.NodeCache.flush

    def flushing(self):
        gate.set()
        flush(self)

    monkeypatch.setattr(_cache.ShardSource, "pieces", held)
    monkeypatch.setattr(_cache.NodeCache, "flush", flushing)
    before = dict(_cache.STATS)
    cold = lk.stream("train", cache_dir=tmp_path, shard_packs=3, prefetch=0, **kw)
    got = []
    for b in cold:
        assert not gate.is_set()  # not one batch waited for the fill
        got.append(b)
    _same(got, want)
    took = {k: _cache.STATS[k] - before[k] for k in before}
    assert took["takes"] == 1 and took["fetches"] == cold.cache.shards  # the whole split: one read, each shard once
    assert took["hits"] == 0  # no batch came from the cache
    assert len(_shards(tmp_path)) == cold.cache.shards and not list(tmp_path.rglob("*.tmp"))  # landed by its end
    monkeypatch.undo()
    monkeypatch.setattr(_cache, "WAIT_BYTES", -1)
    # unheld: once the fill has read every shard, the rest of the iteration comes from the shards, the same batches
    again = lk.stream("train", cache_dir=tmp_path / "again", shard_packs=3, prefetch=0, **kw)
    it = iter(again)
    got = [next(it)]
    while not again.cache.all_read():
        time.sleep(0.01)
    hits = _cache.STATS["hits"]
    got += list(it)
    _same(got, want)
    assert _cache.STATS["hits"] > hits
    before = dict(_cache.STATS)
    _same(list(lk.stream("train", cache_dir=tmp_path, shard_packs=3, **kw)), want)  # warm: from the files
    assert _cache.STATS["fetches"] == before["fetches"] and _cache.STATS["hits"] > before["hits"]
    # mostly warm (one shard missing): read through the cache, which fetches just that one
    _shards(tmp_path)[1].unlink()
    before = dict(_cache.STATS)
    _same(list(lk.stream("train", cache_dir=tmp_path, shard_packs=3, **kw)), want)
    assert _cache.STATS["fetches"] - before["fetches"] == 1 and _cache.STATS["hits"] > before["hits"]


@pytest.mark.parametrize("shuffle,batch_packs", [("random", 2), ("blocks:4", 3)])
def test_a_small_cold_split_is_read_once_its_iteration_served_from_the_fill(packed, tmp_path, monkeypatch, shuffle,
                                                                             batch_packs):
    # without a limit, from a local table, a split under WAIT_BYTES: the first batch is one take of its packs, every
    # other batch comes from the fill's one scan (its frames, or the files they land as), never from a second read
    lk, _ = packed
    kw = dict(batch_packs=batch_packs, seed=7, shuffle=shuffle)
    want = list(lk.stream("train", **kw))
    cold = lk.stream("train", cache_dir=tmp_path, shard_packs=3, **kw)
    assert cold.cache.fetch.pack_bytes() > 0
    assert cold.cache.fill_behind(cold.plan()) is None  # small: waited for (no fill started by asking)
    assert not list(tmp_path.rglob("shard-*.lks"))

    def no_table_reads(*args, **kwargs):
        raise AssertionError("a batch was read from the table beside the fill")

    monkeypatch.setattr(type(cold), "_grouped", no_table_reads)
    reads = []
    pieces = _cache.ShardSource.pieces

    def counted(self, s, count):
        reads.append((s, count))
        yield from pieces(self, s, count)

    monkeypatch.setattr(_cache.ShardSource, "pieces", counted)
    before = dict(_cache.STATS)
    got = list(cold)
    _same(got, want)  # the very batches Lance gives
    took = {k: _cache.STATS[k] - before[k] for k in before}
    assert reads == [(0, cold.cache.shards)]  # one read of the table, every shard in it
    assert took["direct"] == 1 and took["takes"] == 1 and took["fetches"] == cold.cache.shards
    assert len(_shards(tmp_path)) == cold.cache.shards and not list(tmp_path.rglob("*.tmp"))  # all landed by its end
    before = dict(_cache.STATS)
    _same(list(lk.stream("train", cache_dir=tmp_path, shard_packs=3, **kw)), want)  # warm: the files, same batches
    assert _cache.STATS["fetches"] == before["fetches"] and _cache.STATS["direct"] == before["direct"]
    # the same split counted as too large to wait for: the fill goes behind an iteration that reads the table
    monkeypatch.setattr(_cache, "WAIT_BYTES", 10 * 2**20)
    monkeypatch.setattr(_cache.ShardSource, "pack_bytes", lambda self: 2**20)  # 3 MiB a shard: 4+ shards too many
    other = lk.stream("train", cache_dir=tmp_path / "large", shard_packs=3, **kw)
    fill = other.cache.fill_behind(other.plan())
    assert fill is not None
    fill.finish()
    other.cache.flush()
    assert len(_shards(tmp_path / "large")) == other.cache.shards


def test_a_fill_without_a_limit_locks_a_bounded_number_of_shards_at_once(packed, tmp_path, monkeypatch):
    # each shard being fetched holds its lock file open: a whole split's at once could pass the open-file limit
    lk, _ = packed
    monkeypatch.setattr(_cache, "LOCKS", 2)
    most = [0]
    lock_missing = _cache.NodeCache._lock_missing

    def counted(self, t, held):
        got = lock_missing(self, t, held)
        here = _cache._landing()
        with here.cv:
            most[0] = max(most[0], len(here.coming))
        return got

    monkeypatch.setattr(_cache.NodeCache, "_lock_missing", counted)
    kw = dict(batch_packs=2, seed=3, prefetch=0)
    before = dict(_cache.STATS)
    loader = lk.stream("train", cache_dir=tmp_path, shard_packs=1, **kw)
    needed = len({int(p) for b in loader.plan(position=(0, 0, 0)) for p in b})  # one pack a shard
    _same(list(loader), list(lk.stream("train", **kw)))
    assert _cache.STATS["fetches"] - before["fetches"] == needed == len(_shards(tmp_path))  # each once, all
    assert 0 < most[0] <= 4 * _cache.LOCKS < needed  # prefetch, the read-ahead and a read: bounded


def test_with_a_limit_a_cold_start_s_first_batch_is_one_take_of_its_packs(packed, tmp_path):
    lk, _ = packed
    kw = dict(batch_packs=3, seed=2, shard_packs=4, cache_limit="1GB")
    before = _cache.STATS["direct"]
    _same(list(lk.stream("train", cache_dir=tmp_path, **kw)), list(lk.stream("train", batch_packs=3, seed=2)))
    assert _cache.STATS["direct"] - before == 1
    list(lk.stream("train", cache_dir=tmp_path, **kw))  # warm: every batch from the shards
    assert _cache.STATS["direct"] - before == 1


@pytest.mark.parametrize("level", [0, 1])
def test_a_prepared_shard_reads_like_the_file_it_is_written_as(packed, tmp_path, level):
    _, table = packed
    a, b = table.slice(0, 5), table.slice(5, 4)
    files = []
    for i, t in enumerate((a, b)):
        shardfile.write_frames(tmp_path / f"s{i}.lks", shardfile.Frames(t), level)
        files.append(shardfile.ShardFile(tmp_path / f"s{i}.lks"))
    mem = [shardfile.Frames(a), shardfile.Frames(b)]
    order = [(1, 3), (0, 0), (0, 4), (1, 0), (0, 2)]
    want = shardfile.read_batch([(files[s], i) for s, i in order])
    for mix in ([(mem[s], i) for s, i in order], [((mem if s == 0 else files)[s], i) for s, i in order]):
        got = shardfile.read_batch(mix)
        assert got.schema == want.schema and got.equals(want)
    assert pa.Table.from_batches([want]).select(a.column_names).equals(
        pa.concat_tables([(a, b)[s].slice(i, 1) for s, i in order]).combine_chunks())
    assert mem[0].packs == files[0].packs == 5 and np.array_equal(mem[0].sizes, files[0].sizes)
    for f in files:
        f.close()


def _child_sees(q) -> None:
    here = _cache._landing()
    q.put((len(here.coming), len(here.fresh), here.bytes))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_starts_with_none_of_its_parent_s_fetches(tmp_path):
    here = _cache._landing()
    key = (tmp_path, 0)
    with here.cv:
        here.coming.add(key)  # as while a fetch of this process is under way
    try:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_child_sees, args=(q,))
        p.start()
        got = q.get(timeout=60)
        p.join(timeout=60)
        assert got == (0, 0, 0) and p.exitcode == 0  # nothing to wait for: its parent's threads did not come
    finally:
        with here.cv:
            here.coming.discard(key)


_ENDS = """
import sys, threading, concurrent.futures.thread as pools, lake
from loaders import cache, shardfile
write, ending = shardfile.write_frames, threading.Event()
flush = cache.NodeCache.flush

def held_write(path, frames, *args, **kw):
    # every write held until this process is ending: its interpreter shutting down (after the last line below;
    # thread pools then refuse new work), or its loader waiting for its writes
    while not (pools._shutdown or ending.is_set()):
        ending.wait(0.01)
    return write(path, frames, *args, **kw)

def flushing(self):
    ending.set()
    return flush(self)

shardfile.write_frames, cache.NodeCache.flush = held_write, flushing
lk = lake.open(sys.argv[1])
loader = lk.stream("train", seed=2, cache_dir=sys.argv[2], shard_packs=2)
n = len(list(loader))
print(n, cache.STATS["fetches"], loader.cache.shards, len(list(loader.cache.dir.glob("shard-*.lks"))), flush=True)
"""


def test_a_process_that_ends_right_after_a_cold_epoch_leaves_every_shard_it_fetched(packed, tmp_path):
    # The double fetch seen in test_cache's two-process test: a process ended while its shards were still being
    # written; at interpreter exit those writes failed (a thread pool refuses work then), the shards' locks were
    # released with no file, and the other process fetched them again. And an iteration ended before its last
    # shards had landed, so counting the files right after it undercounted them.
    lk, _ = packed
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'loaders'}"}
    out = subprocess.run([sys.executable, "-c", _ENDS, lk.uri, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    batches, fetches, shards, landed = map(int, out.stdout.split())
    assert batches > 0 and fetches == shards  # each shard read from the table once
    assert landed == shards  # on disk when the iteration ended (the never-evicts test's probe counts them then)
    assert len(_shards(tmp_path)) == shards and not list(tmp_path.rglob("*.tmp"))  # and every one landed
    before = dict(_cache.STATS)
    list(lk.stream("train", seed=2, cache_dir=tmp_path, shard_packs=2))
    assert _cache.STATS["fetches"] == before["fetches"]  # another process finds them all
