"""lake.stream end to end on a synthetic packed table: coverage, determinism, resume, time travel, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lake
import loaders
from loaders import PackedTableNotFound, World
from packed_tables import LAYOUT, synthetic_packs, write_packed_table


def _split_ids(table, split: str) -> list[int]:
    return sorted(p for p, s in zip(table["pack_id"].to_pylist(), table["split"].to_pylist()) if s == split)


def _ids(batches) -> list[list[int]]:
    return [b.pack_ids.tolist() for b in batches]


def _flat(xs) -> list[int]:
    return [p for b in xs for p in b]


@pytest.mark.parametrize("world_size,batch_packs", [(1, 1), (2, 2), (3, 1), (4, 3)])
def test_every_pack_of_the_split_is_delivered_exactly_once_across_ranks(packed, world_size, batch_packs):
    lk, table = packed
    got = []
    for rank in range(world_size):
        loader = lk.stream("train", batch_packs=batch_packs, rank=rank, world_size=world_size, seed=3)
        n = len(loader)
        batches = list(loader)
        assert len(batches) == n >= 1
        got += _flat(_ids(batches))
        for b in batches:  # each batch's samples are exactly its packs' samples
            rows = table.filter(np.isin(table["pack_id"].to_numpy(), b.pack_ids.numpy()))
            assert sorted(b.origin) == sorted(zip(rows["origin_episode"].combine_chunks().flatten().to_pylist(),
                                                  rows["origin_frame"].combine_chunks().flatten().to_pylist()))
    assert sorted(got) == _split_ids(table, "train")
    assert len(got) == len(set(got))


def test_order_is_a_function_of_seed_and_epoch_and_a_new_epoch_reshuffles(packed):
    lk, table = packed
    a = lk.stream("val", seed=5)
    first = _ids(a)
    assert first == _ids(lk.stream("val", seed=5)) == _ids(lk.stream("val", seed=5, prefetch=0))
    assert first != _ids(lk.stream("val", seed=6))
    second = _ids(a)  # iterating again = the next epoch
    assert a.state_dict()["epoch"] == 1 and second != first and sorted(_flat(second)) == sorted(_flat(first))
    assert second == _ids(lk.stream("val", seed=5, epoch=1))
    a.set_epoch(0)
    assert _ids(a) == first
    assert _flat(_ids(lk.stream("val", shuffle=False))) == _split_ids(table, "val")


def _run(lk, world_size, steps=None, state=None, **kw):
    """Per rank: pack ids of the batches yielded (the first ``steps`` only, if given), and rank 0's state."""
    out, states = [], []
    for rank in range(world_size):
        loader = lk.stream("train", rank=rank, world_size=world_size, **kw)
        if state is not None:
            loader.load_state_dict(state)
        got = []
        for b in loader:
            got.append(b.pack_ids.tolist())
            if steps is not None and len(got) == steps:
                break
        out.append(got)
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states)  # every rank checkpoints the same numbers
    return out, states[0]


@pytest.mark.parametrize("order", [{}, {"shuffle": "strata:8", "partition": "nodes:2"}])
def test_resume_mid_epoch_yields_exactly_the_remaining_packs_in_order(packed, order):
    lk, _ = packed
    full, _ = _run(lk, 2, batch_packs=2, seed=1, **order)
    head, state = _run(lk, 2, steps=2, batch_packs=2, seed=1, **order)
    assert state["consumed"] == 2 * 2 * 2 and state["epoch"] == 0
    tail, end = _run(lk, 2, state=json.loads(json.dumps(state)), batch_packs=2, seed=99, **order)  # seed: from state
    for r in range(2):
        assert head[r] + tail[r] == full[r]
    assert end["consumed"] == end["packs"]


@pytest.mark.parametrize("order", [{}, {"shuffle": "strata:8", "partition": "nodes:2"}])
def test_resume_with_another_world_size_covers_each_remaining_pack_exactly_once(packed, order):
    lk, table = packed
    head, state = _run(lk, 3, steps=1, batch_packs=1, seed=2, **order)
    mid, state2 = _run(lk, 2, steps=2, state=state, batch_packs=2, seed=2, **order)  # 3 ranks -> 2, bigger batches
    assert state2["consumed"] == 3 + 2 * 2 * 2
    tail, _ = _run(lk, 4, state=state2, batch_packs=1, seed=2, **order)  # -> 4 ranks
    got = [p for part in (head, mid, tail) for rank in part for batch in rank for p in batch]
    assert sorted(got) == _split_ids(table, "train") and len(got) == len(set(got))


def test_state_dict_is_a_handful_of_json_numbers_and_guards_against_another_table(packed):
    lk, _ = packed
    loader = lk.stream("train")
    state = loader.state_dict()
    assert json.loads(json.dumps(state)) == state and len(json.dumps(state)) < 400
    with pytest.raises(ValueError, match="split"):
        lk.stream("val").load_state_dict(state)
    with pytest.raises(ValueError, match="shuffle"):
        lk.stream("train", shuffle=False).load_state_dict(state)
    with pytest.raises(ValueError, match="consumed"):
        loader.load_state_dict({**state, "consumed": 10_000})


def test_reads_the_packed_table_of_a_pinned_lake_version_or_tag(tmp_path):
    lk = lake.open(tmp_path / "lake")
    a, b = synthetic_packs(LAYOUT, episodes=4, seed=1), synthetic_packs(LAYOUT, episodes=5, seed=2)
    v1 = write_packed_table(lk, a, name="packed_aaaa", recipe_hash="aaaa1111")
    lk.tag("first-pack")
    v2 = write_packed_table(lk, b, name="packed_bbbb", recipe_hash="bbbb2222")
    assert v2 == v1 + 1 == lk.version

    def episodes(loader):
        return {e for batch in loader for e, _ in batch.origin}

    ep_a = set(a["origin_episode"].combine_chunks().flatten().to_pylist())
    ep_b = set(b["origin_episode"].combine_chunks().flatten().to_pylist())
    assert episodes(lk.stream("train")) | episodes(lk.stream("val")) == ep_b  # newest
    assert episodes(lk.stream("train", version="first-pack")) <= ep_a
    assert episodes(lk.stream("train", version=v1)) | episodes(lk.stream("val", version=v1)) == ep_a
    assert episodes(lk.stream("train", recipe="aaaa1111")) <= ep_a  # older recipe, still at head
    assert episodes(lk.checkout("first-pack").stream("train", recipe="aaaa")) <= ep_a  # hash prefix
    recipe = type("Recipe", (), {"hash": "bbbb2222"})()
    assert lk.stream("train", recipe=recipe).source.table == "packed_bbbb"
    assert lk.stream("train", version=v1).source.lake_version == v1
    with pytest.raises(PackedTableNotFound, match="bbbb2222"):
        lk.stream("train", version=v1, recipe="bbbb2222")
    with pytest.raises(PackedTableNotFound, match=r"lk\.pack\(\)"):
        lk.stream("train", version=0)


def test_a_lake_without_packed_tables_says_to_run_pack(tmp_path):
    with pytest.raises(PackedTableNotFound, match=r"lk\.pack\(\) \(or `lake pack`\)"):
        lake.open(tmp_path / "empty").stream("train")


def test_an_unknown_split_is_an_error_naming_the_splits(packed):
    lk, _ = packed
    with pytest.raises(ValueError, match=r"no packs in split 'test'.*\['train', 'val'\]"):
        lk.stream("test")


def test_rank_and_world_size_default_to_the_environment(packed, monkeypatch):
    lk, _ = packed
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert lk.stream("train").world == World(1, 3)
    assert lk.stream("train", rank=0).world == World(0, 3)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert lk.stream("train").world == World(0, 1)


def test_module_level_lake_stream_opens_lake_uri(packed, monkeypatch):
    lk, _ = packed
    monkeypatch.setenv("LAKE_URI", lk.uri)
    assert _ids(lake.stream("val", seed=4)) == _ids(loaders.stream(lk, "val", seed=4))


def test_stopping_early_and_iterating_again_continues_the_epoch(packed):
    lk, _ = packed
    full = _ids(lk.stream("train", seed=8))
    loader = lk.stream("train", seed=8)
    it = iter(loader)
    first = [next(it).pack_ids.tolist() for _ in range(3)]
    it.close()
    assert first + _ids(loader) == full


def test_pin_memory_without_an_accelerator_warns_and_streams_pageable_batches(packed):
    lk, _ = packed
    with pytest.warns(UserWarning, match="pin_memory"):
        batches = list(lk.stream("val", pin_memory=True, device="cpu"))
    assert batches and all(b.image_patches.device.type == "cpu" for b in batches)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_batches_reach_the_device_with_one_copy(packed):
    lk, table = packed
    for b in lk.stream("val", pin_memory=True, device="cuda", seed=1):
        assert all(getattr(b, f).is_cuda for f in ("cu_seqlens", "image_patches", "actions", "pack_ids"))
    cpu = next(iter(lk.stream("val", seed=1)))
    pinned = cpu.pin_memory()
    assert pinned.image_patches.is_pinned() and torch.equal(pinned.to("cuda").image_patches.cpu(), cpu.image_patches)


@pytest.mark.parametrize("shuffle", ["random", "blocks:8", "none"])
def test_reading_ahead_changes_nothing_delivered(packed, shuffle):
    """Batches read on the consumer's thread or up to 3 ahead on threads: the same batches, in order, with the
    same bytes (scans of ascending runs are shared by the threads in order)."""
    lk, _ = packed
    want = list(lk.stream("train", batch_packs=3, seed=2, shuffle=shuffle, prefetch=0))
    got = list(lk.stream("train", batch_packs=3, seed=2, shuffle=shuffle, prefetch=3))
    assert [b.pack_ids.tolist() for b in got] == [b.pack_ids.tolist() for b in want]
    for a, b in zip(got, want):
        assert a.origin == b.origin
        for name, t in b._tensors().items():
            assert torch.equal(getattr(a, name), t), name


def test_the_retired_read_bytes_option_still_works_with_a_warning(packed):
    lk, _ = packed
    with pytest.warns(DeprecationWarning, match="read_bytes"):
        old = lk.stream("val", seed=1, read_bytes=1 << 20)
    assert _ids(old) == _ids(lk.stream("val", seed=1))
