"""stream(cache_dir=...): a local copy of the split gives the very batches Lance does, is written once, and fails
clearly when damaged."""

from __future__ import annotations

import pytest
import torch

from loaders import cache as _cache


def _same(got, want) -> None:
    assert [b.pack_ids.tolist() for b in got] == [b.pack_ids.tolist() for b in want]
    for a, b in zip(got, want):
        assert a.origin == b.origin and a.max_seqlen == b.max_seqlen
        for name, t in b._tensors().items():
            assert torch.equal(getattr(a, name), t), name


@pytest.mark.parametrize("shuffle,batch_packs,world_size", [("random", 3, 1), ("blocks:8", 2, 2), ("none", 1, 1)])
def test_cached_streams_deliver_the_same_batches_as_lance(packed, tmp_path, shuffle, batch_packs, world_size):
    lk, _ = packed
    for rank in range(world_size):
        kw = dict(batch_packs=batch_packs, seed=4, shuffle=shuffle, rank=rank, world_size=world_size)
        _same(list(lk.stream("train", cache_dir=tmp_path, progress=False, **kw)), list(lk.stream("train", **kw)))
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".arrow"  # one file for the split, no temporary left


def test_the_cache_is_written_once_per_table_version_and_split(packed, tmp_path, monkeypatch):
    lk, _ = packed
    first = lk.stream("train", seed=1, cache_dir=tmp_path, progress=False)
    path = first.cache.path
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(_cache.pa.ipc, "new_file", lambda *a, **k: pytest.fail("the cache was written again"))
    again = lk.stream("train", seed=1, epoch=1, cache_dir=tmp_path, progress=False)
    assert again.cache.path == path and path.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    val = lk.stream("val", seed=1, cache_dir=tmp_path, progress=False)
    assert val.cache.path != path and len(list(tmp_path.glob("*.arrow"))) == 2
    # resuming from a state_dict reads the rest from the cache, as without it
    it = iter(first)
    next(it)
    state = first.state_dict()
    resumed = lk.stream("train", seed=1, cache_dir=tmp_path, progress=False)
    resumed.load_state_dict(state)
    plain = lk.stream("train", seed=1)
    plain.load_state_dict(state)
    _same(list(resumed), list(plain))


def test_a_damaged_cache_file_is_an_error_that_says_what_to_do(packed, tmp_path):
    lk, _ = packed
    path = lk.stream("val", seed=1, cache_dir=tmp_path, progress=False).cache.path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RuntimeError, match=r"cache .* is unreadable .* delete it"):
        list(lk.stream("val", seed=1, cache_dir=tmp_path, progress=False))


def test_spawned_workers_read_the_cache(packed, tmp_path):
    lk, _ = packed
    want = list(lk.stream("train", batch_packs=2, seed=5))
    _same(list(lk.stream("train", batch_packs=2, seed=5, num_workers=2, cache_dir=tmp_path, progress=False)), want)
