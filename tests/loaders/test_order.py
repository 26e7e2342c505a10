"""The epoch order as pure functions: shuffle determinism, partition coverage, prefix consumption, balance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders import World, get_partition, get_shuffle
from loaders.partition import batches_of, steps_in


def _tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(700, 1025, n)


def test_shuffle_is_a_pure_function_of_seed_and_epoch():
    shuffle = get_shuffle("random")
    a = shuffle(1000, 7, 3)
    assert np.array_equal(a, shuffle(1000, 7, 3))
    assert sorted(a.tolist()) == list(range(1000))
    assert not np.array_equal(a, shuffle(1000, 7, 4)) and not np.array_equal(a, shuffle(1000, 8, 3))
    assert np.array_equal(get_shuffle("none")(5, 1, 2), np.arange(5))
    b = get_shuffle("blocks")(100, 7, 3)
    assert sorted(b.tolist()) == list(range(100)) and np.array_equal(b, get_shuffle("blocks")(100, 7, 3))
    runs = np.split(b, np.flatnonzero(np.diff(b) != 1) + 1)
    assert all(r[0] % 8 == 0 for r in runs) and not np.array_equal(b, np.arange(100))  # whole runs of 8, moved
    # pinned: checkpoints hold (seed, epoch, consumed), so the order must never change under an upgrade
    assert shuffle(10, 0, 0).tolist() == [4, 6, 2, 7, 3, 5, 9, 0, 8, 1]


def test_sized_blocks_are_runs_of_that_many_packs():
    b = get_shuffle("blocks:16")(203, 5, 2)
    assert sorted(b.tolist()) == list(range(203)) and np.array_equal(b, get_shuffle("blocks:16")(203, 5, 2))
    runs = np.split(b, np.flatnonzero(np.diff(b) != 1) + 1)
    assert all(r[0] % 16 == 0 and (len(r) % 16 == 0 or r[-1] == 202) for r in runs)
    assert np.array_equal(get_shuffle("blocks")(203, 5, 2), get_shuffle("blocks:8")(203, 5, 2))


def test_unknown_strategy_names_are_errors_that_list_the_known_ones():
    with pytest.raises(ValueError, match="random"):
        get_shuffle("fancy")
    for bad in ("random:4", "blocks:0", "blocks:x", "window", "windows:8/2", "strata:0", "strata:8/0", "strata:8/x",
                "strata:/2"):
        with pytest.raises(ValueError, match="shuffle"):
            get_shuffle(bad)
    with pytest.raises(ValueError, match="balanced"):
        get_partition("fancy")


def _deal(n: int, world_size: int, workers: int, batch_packs: int, partition: str = "balanced", seed: int = 0):
    order = get_shuffle("random")(n, seed, 0)
    tokens = _tokens(n, seed)[order]
    return {(r, w): batches_of(order, tokens, World(r, world_size, w, workers), batch_packs, partition)
            for r in range(world_size) for w in range(workers)}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), world_size=st.integers(1, 8), workers=st.integers(1, 4), batch_packs=st.integers(1, 5),
       partition=st.sampled_from(["balanced", "interleave"]))
def test_every_pack_goes_to_exactly_one_rank_and_worker_per_epoch(n, world_size, workers, batch_packs, partition):
    dealt = _deal(n, world_size, workers, batch_packs, partition)
    got = np.concatenate([b for bs in dealt.values() for b in bs] or [np.empty(0, np.int64)])
    assert sorted(got.tolist()) == list(range(n))
    assert all(1 <= len(b) <= batch_packs for bs in dealt.values() for b in bs)
    assert all((np.diff(b) > 0).all() for bs in dealt.values() for b in bs)  # a batch's packs in table order


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), world_size=st.integers(1, 8), batch_packs=st.integers(1, 5))
def test_after_k_steps_on_every_rank_the_consumed_packs_are_a_prefix_of_the_order(n, world_size, batch_packs):
    order = get_shuffle("random")(n, 1, 0)
    tokens = _tokens(n)[order]
    per_rank = [batches_of(order, tokens, World(r, world_size), batch_packs) for r in range(world_size)]
    steps = steps_in(n, world_size, batch_packs)
    assert max(len(b) for b in per_rank) == steps and min(len(b) for b in per_rank) >= steps - 1
    for k in range(steps + 1):
        consumed = sorted(p for bs in per_rank for b in bs[:k] for p in b.tolist())
        assert consumed == sorted(order[:min(k * world_size * batch_packs, n)].tolist())


def test_workers_split_a_rank_round_robin_so_the_rank_order_does_not_depend_on_them():
    order = get_shuffle("random")(101, 0, 0)
    tokens = _tokens(101)[order]
    one = batches_of(order, tokens, World(1, 3), 2)
    for workers in (2, 3, 5):
        parts = [batches_of(order, tokens, World(1, 3, w, workers), 2) for w in range(workers)]
        interleaved = [parts[i % workers][i // workers] for i in range(len(one))]
        assert all(np.array_equal(a, b) for a, b in zip(interleaved, one))
        assert sum(len(p) for p in parts) == len(one)


def test_balanced_partition_keeps_rank_token_totals_within_one_pack():
    n, world_size, batch_packs = 4000, 8, 2
    order = get_shuffle("random")(n, 0, 0)
    tokens = _tokens(n)
    totals = {}
    for name in ("balanced", "interleave"):
        per = [sum(int(tokens[b].sum()) for b in batches_of(order, tokens[order], World(r, world_size), batch_packs, name))
               for r in range(world_size)]
        totals[name] = max(per) - min(per)
    assert totals["balanced"] <= tokens.max()  # over 250 steps: within one pack
    assert totals["balanced"] < totals["interleave"] / 4
    # and inside each step, which is what a synchronous step waits on
    step, rank = get_partition("balanced")(tokens[order], world_size, batch_packs)
    for s in range(0, 250, 25):
        per = [tokens[order][(step == s) & (rank == r)].sum() for r in range(world_size)]
        assert max(per) - min(per) <= tokens.max() - tokens.min()


def test_world_validates_rank_and_worker():
    with pytest.raises(ValueError, match="rank"):
        World(2, 2)
    with pytest.raises(ValueError, match="worker"):
        World(0, 1, 1, 1)


def test_windows_permute_inside_aligned_windows_and_keep_a_short_last_one_last():
    w = get_shuffle("windows:16")(203, 5, 2)
    assert sorted(w.tolist()) == list(range(203)) and np.array_equal(w, get_shuffle("windows:16")(203, 5, 2))
    blocks = [w[i:i + 16] for i in range(0, 203, 16)]
    assert all(len(set((b // 16).tolist())) == 1 for b in blocks)  # each window: the packs of one aligned block
    assert set(blocks[-1].tolist()) == set(range(192, 203))  # the short one last: alignment kept
    assert not np.array_equal(w, get_shuffle("windows:16")(203, 5, 3))
    assert any(not (np.diff(b) > 0).all() for b in blocks)  # mixed inside windows


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), world_size=st.integers(1, 20), batch_packs=st.integers(1, 4),
       node_size=st.integers(1, 8), workers=st.integers(1, 3))
def test_node_partition_deals_every_pack_once_and_consumes_prefixes(n, world_size, batch_packs, node_size, workers):
    order = get_shuffle("windows:8")(n, 3, 1)
    tokens = _tokens(n)[order]
    part = f"nodes:{node_size}"
    per_rank = [batches_of(order, tokens, World(r, world_size), batch_packs, part) for r in range(world_size)]
    got = sorted(p for bs in per_rank for b in bs for p in b.tolist())
    assert got == list(range(n))
    steps = steps_in(n, world_size, batch_packs)
    for k in range(steps + 1):
        consumed = sorted(p for bs in per_rank for b in bs[:k] for p in b.tolist())
        assert consumed == sorted(order[:min(k * world_size * batch_packs, n)].tolist())
    by_workers = [b for r in range(world_size) for w in range(workers)
                  for b in batches_of(order, tokens, World(r, world_size, w, workers), batch_packs, part)]
    assert sorted(p for b in by_workers for p in b.tolist()) == list(range(n))


def test_node_partition_keeps_each_shard_on_few_nodes():
    n, shard, world_size, node_size, batch_packs = 4096, 4, 64, 8, 4
    order = get_shuffle("windows:64")(n, 0, 0)
    tokens = _tokens(n)[order]
    readers: dict[int, set] = {}
    for r in range(world_size):
        for b in batches_of(order, tokens, World(r, world_size), batch_packs, f"nodes:{node_size}"):
            for p in b.tolist():
                readers.setdefault(p // shard, set()).add(r // node_size)
    spread = np.array([len(v) for v in readers.values()])
    assert spread.max() <= 2 and spread.mean() < 1.2  # ~one node per shard; "balanced" spreads over all 8
    balanced_spread = {}
    for r in range(world_size):
        for b in batches_of(order, tokens, World(r, world_size), batch_packs):
            for p in b.tolist():
                balanced_spread.setdefault(p // shard, set()).add(r // node_size)
    assert np.mean([len(v) for v in balanced_spread.values()]) > 2


def _nodes_reference(tokens, world_size, batch_packs, packs, node_size):
    """``nodes`` as first written: a loop over steps and nodes calling ``balanced`` (the vectorised one must
    deal exactly the same, or a resumed job would see another deal of the same steps)."""
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


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 400), world_size=st.integers(1, 40), batch_packs=st.integers(1, 5),
       node_size=st.integers(1, 12), tied=st.booleans(), seed=st.integers(0, 3))
def test_vectorised_node_partition_deals_exactly_as_the_step_by_step_one(n, world_size, batch_packs, node_size,
                                                                          tied, seed):
    order = get_shuffle("windows:16")(n, seed, 0)
    tokens = np.random.default_rng(seed).integers(1, 4, n) if tied else _tokens(n, seed)  # ties: table order
    step, rank = get_partition(f"nodes:{node_size}")(tokens, world_size, batch_packs, packs=order)
    want_step, want_rank = _nodes_reference(tokens, world_size, batch_packs, order, node_size)
    assert np.array_equal(step, want_step) and np.array_equal(rank, want_rank)


# --- strata: a stratified window shuffle, so that a node's slices stay on one range of each window ----------------

def test_strata_is_a_pure_permutation_of_seed_and_epoch_over_the_windows_order():
    s = get_shuffle("strata:16")
    a = s(203, 5, 2)
    assert sorted(a.tolist()) == list(range(203)) and np.array_equal(a, s(203, 5, 2))
    assert not np.array_equal(a, s(203, 5, 3)) and not np.array_equal(a, s(203, 6, 2))
    w = get_shuffle("windows:16")(203, 5, 2)
    assert np.array_equal(a[::16] // 16, w[::16] // 16)  # the same windows, in the same order, as windows:16
    assert all(set(a[i:i + 16] // 16) == {a[i] // 16} for i in range(0, 203, 16))
    assert np.array_equal(get_shuffle("strata")(600, 1, 0), get_shuffle("strata:256/1")(600, 1, 0))
    assert not np.array_equal(get_shuffle("strata:16/4")(203, 5, 2), a)
    # pinned: checkpoints hold (seed, epoch, consumed), so the order must never change under an upgrade
    assert get_shuffle("strata:8")(20, 0, 0).tolist() == [3, 5, 1, 6, 2, 4, 0, 7, 8, 13, 10, 15, 9, 12, 11, 14,
                                                          16, 19, 17, 18]
    assert get_shuffle("strata:8/2")(20, 0, 0).tolist() == [2, 4, 0, 6, 3, 5, 1, 7, 8, 14, 10, 12, 9, 15, 11, 13,
                                                            16, 19, 17, 18]


@pytest.mark.parametrize("size,leaf,runs", [(256, 1, [2 ** j for j in range(9)]), (256, 4, [1, 2, 4, 16, 64]),
                                            (256, 16, [2, 4, 8, 16]), (192, 1, [3, 6, 12, 24, 48, 96, 192]),
                                            (360, 1, [5, 15, 45, 90, 180, 360]), (96, 2, [3, 6, 12, 24, 48])])
def test_every_aligned_run_of_strata_takes_one_pack_per_block_of_its_window(size, leaf, runs):
    n = 8 * size + 100
    order = get_shuffle(f"strata:{size}/{leaf}")(n, 3, 1)
    full = order[:n // size * size]
    for run in runs:  # a product of the window's first radices (odd primes first, then 2s), above the leaves
        blocks = (full % size) // (size // run)  # which of the window's `run` aligned blocks each pack is in
        assert (np.sort(blocks.reshape(-1, run), axis=1) == np.arange(run)).all(), run
    assert sorted(order[n // size * size:].tolist()) == list(range(n // size * size, n))  # short last window last


@pytest.mark.parametrize("name", ["strata:{K}", "strata:{K}/8"])
@pytest.mark.parametrize("world_size,batch_packs,size", [(16, 1, 256), (64, 1, 256), (64, 2, 256), (128, 1, 256),
                                                         (48, 1, 192), (48, 2, 384), (24, 1, 96), (40, 1, 320)])
def test_with_strata_and_nodes_each_node_reads_one_fixed_range_of_every_window(name, world_size, batch_packs, size):
    # the window is world_size x batch_packs x a power of two: exact for any number of nodes
    n, node_size = 16 * size + 40, 8
    nodes = world_size // node_size
    order = get_shuffle(name.format(K=size))(n, 0, 0)
    tokens = _tokens(n)[order]
    for node in range(nodes):
        packs = np.concatenate([b for r in range(node * node_size, (node + 1) * node_size)
                                for b in batches_of(order, tokens, World(r, world_size), batch_packs, "nodes:8")])
        packs = packs[packs < n // size * size]  # the short last window is dealt as it falls
        inside = (packs % size) // (size // nodes)  # which nodes-th of its window each pack is in
        assert (inside == node).all() and len(packs) == n // size * size // nodes
    # windows wanders: a node's packs spread over several ranges of each window
    order = get_shuffle(f"windows:{size}")(n, 0, 0)
    packs = np.concatenate([b for r in range(node_size) for b in batches_of(order, _tokens(n)[order],
                                                                             World(r, world_size), batch_packs, "nodes:8")])
    assert len(set(((packs % size) // (size // nodes)).tolist())) > 1


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), size=st.sampled_from([4, 16, 64, 100, 96, 7]), leaf=st.sampled_from([1, 2, 16]),
       first=st.integers(1, 24), then=st.integers(1, 24), batch_packs=st.integers(1, 3), steps=st.integers(0, 8),
       partition=st.sampled_from(["balanced", "nodes:8", "nodes:3"]), workers=st.integers(1, 2),
       seed=st.integers(0, 2**32 - 1))
def test_strata_deals_every_pack_exactly_once_through_a_change_of_world_size(n, size, leaf, first, then, batch_packs,
                                                                             steps, partition, workers, seed):
    order = get_shuffle(f"strata:{size}/{leaf}")(n, seed, 4)
    assert sorted(order.tolist()) == list(range(n))
    tokens = _tokens(n)
    # `first` ranks take `steps` global steps, then the job resumes on `then` ranks from what was consumed
    head = [b for r in range(first) for w in range(workers)
            for b in batches_of(order, tokens[order], World(r, first, w, workers), batch_packs, partition)
            [:len(range(w, steps, workers))]]  # worker w reads the rank's batches w, w + workers, ...
    consumed = min(steps * first * batch_packs, n)
    rest = order[consumed:]
    tail = [b for r in range(then) for w in range(workers)
            for b in batches_of(rest, tokens[rest], World(r, then, w, workers), batch_packs, partition)]
    got = [p for b in head + tail for p in b.tolist()]
    assert sorted(got) == list(range(n))
    assert sorted(p for b in head for p in b.tolist()) == sorted(order[:consumed].tolist())
