"""stream(cache_dir=...) keeps its resolved start (packed table, Lance version, the split's pack index) beside the
shards: a warm start serves the very batches a fresh one does without opening the table, a new lake version is
resolved afresh (never served stale), an older version asked for by number gets its own index, a damaged file is
ignored, and the folder is pruned."""

from __future__ import annotations

import os

import pytest
import torch

from loaders import split_index
from packed_tables import LAYOUT, synthetic_packs, write_packed_table


def _batches(loader) -> list:
    return [(b.pack_ids.tolist(), b.origin, {k: t.clone() for k, t in b._tensors().items()}) for b in loader]


def _same(got, want) -> None:
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for (_, _, a), (_, _, b) in zip(got, want):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


@pytest.fixture
def small_lake(tmp_path):
    import lake

    lk = lake.open(tmp_path / "lake")
    write_packed_table(lk, synthetic_packs(LAYOUT, episodes=8, seed=1), rows_per_file=5)
    return lk


def test_a_warm_start_serves_the_same_batches_without_opening_the_table(small_lake, tmp_path):
    lk, cache = small_lake, tmp_path / "cache"
    kw = dict(batch_packs=2, seed=7, shard_packs=4, cache_dir=cache)
    cold = lk.stream("train", **kw)
    want = _batches(cold)
    assert len(list((cache / split_index.FOLDER).glob("*.arrow"))) == 1
    warm = lk.stream("train", **kw)
    assert warm._ds._value is None  # the index came from the cache folder: nothing opened
    _same(_batches(warm), want)
    assert warm._ds._value is None  # every shard was on disk: the table was never opened
    assert (warm.rows == cold.rows).all() and (warm.tokens == cold.tokens).all() and warm.columns == cold.columns
    assert warm.source == cold.source and warm.source.layout == cold.source.layout
    _same(want, _batches(lk.stream("train", batch_packs=2, seed=7)))  # and both are what Lance gives


def test_a_new_lake_version_is_resolved_afresh_never_served_stale(small_lake, tmp_path):
    import lake

    lk, cache = small_lake, tmp_path / "cache"
    first = lk.stream("train", batch_packs=2, seed=3, cache_dir=cache)
    old = _batches(first)
    writer = lake.open(lk.uri)  # another handle commits more packs to the same table: a new lake version
    write_packed_table(writer, synthetic_packs(LAYOUT, episodes=6, seed=9), rows_per_file=5)
    newest = lake.open(lk.uri)
    again = newest.stream("train", batch_packs=2, seed=3, cache_dir=cache)
    assert again.packs > first.packs and again.source.lance_version > first.source.lance_version
    _same(_batches(again), _batches(newest.stream("train", batch_packs=2, seed=3)))
    # the old version, by number, still streams its own packs (its own index, its own shards)
    back = newest.stream("train", version=lk.version, batch_packs=2, seed=3, cache_dir=cache)
    assert back.packs == first.packs
    _same(_batches(back), old)
    assert len(list((cache / split_index.FOLDER).glob("*.arrow"))) == 2


def test_a_lake_made_again_at_the_same_address_does_not_match_the_kept_index(tmp_path):
    import shutil

    import lake

    cache = tmp_path / "cache"
    lk = lake.open(tmp_path / "lake")
    write_packed_table(lk, synthetic_packs(LAYOUT, episodes=8, seed=1), rows_per_file=5)
    first = lk.stream("train", cache_dir=cache)
    shutil.rmtree(tmp_path / "lake")
    lk2 = lake.open(tmp_path / "lake")  # same address, same version numbers, other packs
    write_packed_table(lk2, synthetic_packs(LAYOUT, episodes=5, seed=2), rows_per_file=5)
    assert lk2.version == lk.version
    again = lk2.stream("train", batch_packs=2, cache_dir=cache)
    assert split_index.key(lk2, None, "train") != split_index.key(lk, None, "train")
    _same(_batches(again), _batches(lk2.stream("train", batch_packs=2)))
    assert again.packs != first.packs or not (again.tokens == first.tokens).all()


def test_a_damaged_index_file_is_ignored_and_written_again(small_lake, tmp_path):
    lk, cache = small_lake, tmp_path / "cache"
    want = _batches(lk.stream("train", batch_packs=3, seed=2, cache_dir=cache))
    (f,) = (cache / split_index.FOLDER).glob("*.arrow")
    f.write_bytes(f.read_bytes()[:100])  # torn
    assert split_index.load(cache, f.stem, "train") is None
    again = lk.stream("train", batch_packs=3, seed=2, cache_dir=cache)
    assert again._ds._value is not None  # resolved from the table again
    _same(_batches(again), want)
    assert split_index.load(cache, f.stem, "train") is not None  # and kept again, whole
    assert split_index.load(cache, f.stem, "val") is None  # a file answers only for its own split


def test_the_index_folder_keeps_the_most_recently_used_files(small_lake, tmp_path):
    lk, cache = small_lake, tmp_path / "cache"
    index = lk.stream("train", cache_dir=cache).split_index()
    for i in range(5):
        split_index.save(cache, f"k{i}", "train", index)
        os.utime(split_index.path(cache, f"k{i}"), ns=(i * 10**9, i * 10**9))
    (cache / split_index.FOLDER / f".x.arrow.{2**22 + 12345}.tmp").write_bytes(b"x")  # a dead writer's leftover
    split_index.prune(cache / split_index.FOLDER, keep=2)
    left = sorted(p.name for p in (cache / split_index.FOLDER).iterdir())
    assert left == sorted(p.name for p in (cache / split_index.FOLDER).glob("*.arrow")) and len(left) == 2
    assert split_index.path(cache, "k4").name in left  # the newest stays
