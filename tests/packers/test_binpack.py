"""Bin packing: every sample exactly once, never over budget, exact best-fit-decreasing, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packers.binpack import SampleTooLong, bfd, bfd_refine, fill, fill_bound, get_packer


def reference_bfd_fills(lengths, budget, cap=None):
    """O(n^2) textbook best-fit-decreasing; returns the sorted pack fills (independent of tie-breaking)."""
    rooms, counts = [], []
    for L in sorted(lengths, reverse=True):
        fits = [p for p, r in enumerate(rooms) if r >= L and (cap is None or counts[p] < cap)]
        if fits:
            p = min(fits, key=lambda q: rooms[q])
        else:
            rooms.append(budget)
            counts.append(0)
            p = len(rooms) - 1
        rooms[p] -= L
        counts[p] += 1
    return sorted(budget - r for r in rooms)


lengths_st = st.integers(1, 400).flatmap(lambda budget: st.tuples(
    st.just(budget), st.lists(st.integers(1, budget), min_size=0, max_size=300)))


@settings(max_examples=150, deadline=None)
@given(lengths_st, st.sampled_from([None, 1, 2, 5]), st.sampled_from(["bfd", "bfd_refine", "sequential", "padded"]),
       st.integers(0, 3))
def test_every_sample_lands_in_exactly_one_pack_within_budget(case, cap, name, seed):
    budget, lengths = case
    lengths = np.asarray(lengths, dtype=np.int64)
    packs = get_packer(name)(lengths, budget, cap, seed)
    flat = np.concatenate(packs) if packs else np.zeros(0, int)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(lengths[p].sum() <= budget for p in packs)
    assert all(len(p) >= 1 for p in packs)
    if cap is not None and name != "padded":
        assert all(len(p) <= cap for p in packs)


@settings(max_examples=150, deadline=None)
@given(lengths_st, st.sampled_from([None, 2, 3]))
def test_bfd_equals_textbook_best_fit_decreasing(case, cap):
    budget, lengths = case
    packs = bfd(np.asarray(lengths, dtype=np.int64), budget, cap)
    assert sorted(int(np.asarray(lengths)[p].sum()) for p in packs) == reference_bfd_fills(lengths, budget, cap)


@pytest.mark.parametrize("dist, at_least", [("uniform", 0.99), ("pi05", 0.95)])
def test_bfd_fills_packs_far_better_than_padding(dist, at_least):
    rng = np.random.default_rng(0)
    if dist == "uniform":
        lengths = rng.integers(50, 600, 20000)
    else:  # π0.5-like: 3 cameras x 256 image tokens, instruction 5-200, 50 action tokens (narrow: 8-9 per pack)
        lengths = 3 * 256 + rng.integers(5, 201, 20000) + 50
    budget = 8192
    assert fill(lengths, bfd(lengths, budget), budget) > at_least
    assert fill(lengths, get_packer("padded")(lengths, budget), budget) < 0.2


# narrow lengths (a few distinct values, few samples a pack): where bfd_refine's greedies run instead of BFD
narrow_st = st.integers(20, 3000).flatmap(lambda budget: st.tuples(
    st.just(budget),
    st.lists(st.integers(max(1, budget // 12), max(1, budget // 2)), min_size=1, max_size=6).flatmap(
        lambda values: st.lists(st.sampled_from(values), min_size=0, max_size=600))))


@settings(max_examples=200, deadline=None)
@given(narrow_st, st.sampled_from([None, 2, 3, 7]), st.integers(0, 3))
def test_bfd_refine_exactly_once_within_budget_never_worse_than_bfd(case, cap, seed):
    budget, lengths = case
    lengths = np.asarray(lengths, dtype=np.int64)
    packs = bfd_refine(lengths, budget, cap, seed)
    flat = np.concatenate(packs) if packs else np.zeros(0, int)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(len(p) >= 1 and lengths[p].sum() <= budget for p in packs)
    if cap is not None:
        assert all(len(p) <= cap for p in packs)
    assert len(packs) <= len(bfd(lengths, budget, cap, seed))
    assert [p.tolist() for p in bfd_refine(lengths, budget, cap, seed)] == [p.tolist() for p in packs]
    if len(lengths):
        assert fill(lengths, packs, budget) <= fill_bound(lengths, budget, cap) + 1e-12


@settings(max_examples=150, deadline=None)
@given(lengths_st, st.sampled_from([None, 2, 3]))
def test_no_packer_beats_the_fill_bound(case, cap):
    budget, lengths = case
    if lengths:
        bound = fill_bound(lengths, budget, cap)
        for name in ("bfd", "bfd_refine", "sequential"):
            assert fill(lengths, get_packer(name)(lengths, budget, cap), budget) <= bound + 1e-12


@pytest.mark.parametrize("budget, at_least", [(2048, 0.898), (4096, 0.898), (8192, 0.997), (16384, 0.999)])
def test_bfd_refine_reaches_the_bound_on_pi05_lengths(budget, at_least):
    lengths = 3 * 256 + np.random.default_rng(0).integers(5, 201, 20000) + 50  # 823..1018 tokens
    packs = bfd_refine(lengths, budget)
    assert fill(lengths, packs, budget) >= at_least
    assert fill_bound(lengths, budget) - fill(lengths, packs, budget) < 0.001
    assert len(packs) <= len(bfd(lengths, budget))


def test_bfd_refine_on_pusht_lengths_and_its_seed():
    # 2 cameras x 16 patches + byte-tokenized task (+BOS/EOS) + 1 state + 16 actions: 3 distinct lengths
    lengths = 49 + np.random.default_rng(0).choice([28, 40, 27], 50000)
    packs = bfd_refine(lengths, 2048, seed=3)
    assert fill(lengths, packs, 2048) > 0.999 > fill(lengths, bfd(lengths, 2048), 2048)
    again, other = bfd_refine(lengths, 2048, seed=3), bfd_refine(lengths, 2048, seed=4)
    assert [x.tolist() for x in again] == [x.tolist() for x in packs]
    assert [x.tolist() for x in other] != [x.tolist() for x in packs]


def test_same_seed_same_packs_other_seed_other_order():
    lengths = np.random.default_rng(1).integers(1, 100, 5000)
    a, b, c = bfd(lengths, 512, seed=3), bfd(lengths, 512, seed=3), bfd(lengths, 512, seed=4)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert [x.tolist() for x in a] != [x.tolist() for x in c]


def test_too_long_sample_is_a_clear_error():
    with pytest.raises(SampleTooLong, match="sample 1 has 600 tokens, more than the budget of 512"):
        bfd(np.array([10, 600, 3]), 512)
    with pytest.raises(KeyError):
        get_packer("nope")
