"""Streaming a mixture: every epoch delivers each source's weighted sample count exactly, over any number of
ranks, in a deterministic order that resumes exactly mid-epoch."""

from __future__ import annotations

import collections
import shutil

import pytest

import lake
from packers import Recipe

RECIPE = Recipe(image_size=(32, 32), patch_size=16, action_horizon=4, token_budget=256, episodes_per_group=3,
                name="mix")
WEIGHTS = {"pusht_v3": 1.0, "other": 3.0}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, two_sources):
    dst = tmp_path_factory.mktemp("mix") / "lake"
    shutil.copytree(two_sources.uri, dst)
    lk = lake.open(dst)
    rep = lk.pack(RECIPE, mixture=WEIGHTS, progress=False)
    t = lk.episodes(columns=["episode_id", "source"])
    source = dict(zip(t["episode_id"].to_pylist(), t["source"].to_pylist()))
    return lk, rep, source


def _epoch(lk, rep, source, world_size, **kw) -> collections.Counter:
    c = collections.Counter()
    for rank in range(world_size):
        for b in lk.stream("train", recipe=rep.recipe_hash, rank=rank, world_size=world_size, **kw):
            c.update(source[e] for e, _ in b.origin)
    return c


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_packs", [1, 2])
def test_each_epoch_delivers_the_weighted_counts_over_any_world(mixed, world_size, batch_packs):
    lk, rep, source = mixed
    want = {s["name"]: s["target"]["train"] for s in rep.mixture["sources"]}
    natural = {s["name"]: s["samples"]["train"] for s in rep.mixture["sources"]}
    total = sum(natural.values())
    for epoch in (0, 1):
        got = _epoch(lk, rep, source, world_size, batch_packs=batch_packs, seed=7, epoch=epoch)
        assert dict(got) == want
        for name, w in WEIGHTS.items():  # within one sample of the exact weighted share
            assert abs(got[name] - total * w / sum(WEIGHTS.values())) < 1


def test_order_is_deterministic_and_depends_on_seed_and_epoch(mixed):
    lk, rep, _ = mixed

    def order(**kw):
        return [tuple(b.origin) for b in lk.stream("train", recipe=rep.recipe_hash, **kw)]

    a = order(seed=1, epoch=0)
    assert a == order(seed=1, epoch=0)
    assert a != order(seed=2, epoch=0) and a != order(seed=1, epoch=1)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_resume_mid_epoch_is_exact(mixed, world_size):
    lk, rep, source = mixed
    for rank in range(world_size):
        full = [tuple(b.origin) for b in lk.stream("train", recipe=rep.recipe_hash, rank=rank,
                                                   world_size=world_size, seed=3)]
        first = lk.stream("train", recipe=rep.recipe_hash, rank=rank, world_size=world_size, seed=3)
        it = iter(first)
        k = max(1, len(full) // 2)
        head = [tuple(next(it).origin) for _ in range(k)]
        state = first.state_dict()
        again = lk.stream("train", recipe=rep.recipe_hash, rank=rank, world_size=world_size, seed=0)
        again.load_state_dict(state)
        assert head + [tuple(b.origin) for b in again] == full


# --- draw: "epoch": a fresh draw every epoch ---------------------------------------------------------------------

EPOCH_MIX = {"sources": {"pusht_v3": 1.0, "other": {"weight": 3.0, "replacement": True}}, "draw": "epoch"}


@pytest.fixture(scope="module")
def redrawn(tmp_path_factory, two_sources):
    dst = tmp_path_factory.mktemp("mix_epoch") / "lake"
    shutil.copytree(two_sources.uri, dst)
    lk = lake.open(dst)
    rep = lk.pack(RECIPE, mixture=EPOCH_MIX, progress=False)
    t = lk.episodes(columns=["episode_id", "source"])
    return lk, rep, dict(zip(t["episode_id"].to_pylist(), t["source"].to_pylist()))


def _drawn(lk, rep, world_size, **kw) -> list:
    """Every (episode, frame) the ranks of one epoch deliver, rank after rank."""
    out = []
    for rank in range(world_size):
        for b in lk.stream("train", recipe=rep.recipe_hash, rank=rank, world_size=world_size, **kw):
            assert b.n_samples == len(b.mixture_slot) == b.cu_seqlens.shape[0] - 1
            assert b.segment_ids.shape[0] == b.n_tokens == int(b.cu_seqlens[-1])
            out += b.origin
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_packs", [1, 2])
def test_epoch_draw_delivers_the_weighted_counts_every_epoch_over_any_world(redrawn, world_size, batch_packs):
    lk, rep, source = redrawn
    want = {s["name"]: s["target"]["train"] for s in rep.mixture["sources"]}
    total = sum(s["samples"]["train"] for s in rep.mixture["sources"])
    for epoch in (0, 1, 2):
        got = collections.Counter(source[e] for e, _ in _drawn(lk, rep, world_size, batch_packs=batch_packs,
                                                                seed=7, epoch=epoch))
        assert dict(got) == want
        for name, w in (("pusht_v3", 1.0), ("other", 3.0)):  # within one sample of the exact weighted share
            assert abs(got[name] - total * w / 4.0) < 1


def test_epoch_draw_is_fresh_per_epoch_deterministic_and_follows_the_replacement_rule(redrawn):
    lk, rep, source = redrawn
    src = {s["name"]: s for s in rep.mixture["sources"]}
    assert rep.mixture["draw"] == "epoch" and src["other"]["replacement"] and not src["pusht_v3"]["replacement"]
    draws = {e: collections.Counter(_drawn(lk, rep, 1, seed=3, epoch=e)) for e in range(3)}
    assert draws[0] != draws[1] != draws[2]
    assert _drawn(lk, rep, 1, seed=3, epoch=1) == _drawn(lk, rep, 1, seed=3, epoch=1)  # same order too
    assert collections.Counter(_drawn(lk, rep, 1, seed=4, epoch=1)) != draws[1]
    for d in draws.values():
        n, t = src["pusht_v3"]["samples"]["train"], src["pusht_v3"]["target"]["train"]
        reps = [c for (e, _), c in d.items() if source[e] == "pusht_v3"]
        assert len(reps) == min(n, t) and set(reps) <= {t // n, t // n + 1}  # without replacement: distinct
        copies = src["other"]["copies"]["train"]
        assert max(c for (e, _), c in d.items() if source[e] == "other") <= copies
    # over epochs every sample of the downsampled source comes up: not one fixed subset
    seen = {k for d in draws.values() for k in d if source[k[0]] == "pusht_v3"}
    assert len(seen) > max(sum(1 for k in d if source[k[0]] == "pusht_v3") for d in draws.values())


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_epoch_draw_resumes_mid_epoch_exactly(redrawn, world_size):
    lk, rep, _ = redrawn
    for rank in range(world_size):
        kw = dict(recipe=rep.recipe_hash, rank=rank, world_size=world_size)
        full = [tuple(b.origin) for b in lk.stream("train", seed=5, epoch=1, **kw)]
        first = lk.stream("train", seed=5, epoch=1, **kw)
        it = iter(first)
        k = max(1, len(full) // 2)
        head = [tuple(next(it).origin) for _ in range(k)]
        again = lk.stream("train", seed=0, **kw)
        again.load_state_dict(first.state_dict())
        assert head + [tuple(b.origin) for b in again] == full


def test_epoch_draw_is_the_same_in_dataloader_workers(redrawn):
    lk, rep, _ = redrawn
    plain = [tuple(b.origin) for b in lk.stream("train", recipe=rep.recipe_hash, seed=2, epoch=1)]
    workers = lk.stream("train", recipe=rep.recipe_hash, seed=2, epoch=1, num_workers=2)
    assert [tuple(b.origin) for b in workers] == plain


def test_pack_time_draw_tables_have_no_slots(mixed):
    lk, rep, _ = mixed
    assert all(b.mixture_slot is None for b in lk.stream("train", recipe=rep.recipe_hash))


def test_epoch_draw_through_ray_data_keeps_the_same_counts(redrawn):
    from loaders import packed_batches, ray_dataset
    from packers import layout_of

    lk, rep, source = redrawn
    layout = layout_of(lk.table(rep.table).schema)
    ds = ray_dataset(lk, "train", recipe=rep.recipe_hash)
    got = collections.Counter(source[e] for b in packed_batches(ds, 2, layout, split="train", seed=7, epoch=1)
                              for e, _ in b.origin)
    assert dict(got) == {s["name"]: s["target"]["train"] for s in rep.mixture["sources"]}
    with pytest.raises(ValueError, match="per-epoch mixture pool"):
        next(iter(packed_batches(ds, 2, layout)))


def test_epoch_draw_is_the_same_through_the_shard_cache(redrawn, tmp_path):
    lk, rep, _ = redrawn
    plain = [tuple(b.origin) for b in lk.stream("train", recipe=rep.recipe_hash, seed=2, epoch=3)]
    cached = [tuple(b.origin) for b in lk.stream("train", recipe=rep.recipe_hash, seed=2, epoch=3,
                                                 cache_dir=tmp_path / "cache")]
    assert cached == plain
