"""How batches are read: runs of ascending batches by one allow-list scan, the rest by takes; both deliver
exactly what reading every batch on its own does, across fragments, deleted rows and world layouts."""

from __future__ import annotations

import lance
import numpy as np
import pytest
import torch

import lake
from loaders import World
from loaders.loader import SCAN_RUN, Loader
from loaders.packings import resolve
from loaders.batch import packed_batch
from loaders.reads import runs
from packed_tables import LAYOUT, synthetic_packs, write_packed_table


def _runs(batches, batch_packs):
    return [[b.tolist() for b in r] for r in runs([np.asarray(b) for b in batches], batch_packs)]


def test_runs_are_consecutive_ascending_batches_all_full_but_the_last():
    assert _runs([[0, 3], [5, 9], [10, 11], [2, 4], [6, 7], [8]], 2) == [[[0, 3], [5, 9], [10, 11]],
                                                                         [[2, 4], [6, 7], [8]]]
    assert _runs([[0], [1], [2]], 2) == [[[0]], [[1]], [[2]]]  # short batches end a run (a scan's batches are one size)
    assert _runs([[1, 4], [3, 5]], 2) == [[[1, 4]], [[3, 5]]]  # overlapping ranges: no run
    assert _runs([[4, 1], [5, 6]], 2) == [[[4, 1]], [[5, 6]]]  # an unsorted batch is read with a take


def _same(got, want):
    assert [b.pack_ids.tolist() for b in got] == [b.pack_ids.tolist() for b in want]
    for a, b in zip(got, want):
        assert a.origin == b.origin
        for name, t in b._tensors().items():
            assert torch.equal(getattr(a, name), t), name


def _by_takes(loader: Loader, world: World | None = None):
    """The reference: every batch of the plan read on its own, with one take."""
    return [loader.read(b) for b in loader.plan(world)]


@pytest.mark.parametrize("shuffle", ["blocks:8", "none", "random"])
@pytest.mark.parametrize("world_size,batch_packs", [(1, 3), (2, 2), (3, 1)])
def test_scans_deliver_what_takes_do(packed, shuffle, world_size, batch_packs):
    lk, _ = packed
    for rank in range(world_size):
        loader = lk.stream("train", batch_packs=batch_packs, shuffle=shuffle, seed=2, rank=rank,
                           world_size=world_size, prefetch=2)
        plan = loader.plan()
        if shuffle != "random":  # the case under test: most batches come from multi-batch scans
            assert sum(len(r) for r in runs(plan, batch_packs) if len(r) > 1) > len(plan) // 2
        want = _by_takes(loader)
        _same(list(loader), want)


def _fragmented_with_deletes(tmp_path):
    """(the packs written, their source pinned to the version after deletes): fragments of 5 rows, some deleted."""
    lk = lake.open(tmp_path / "lake")
    table = synthetic_packs(LAYOUT, episodes=20, seed=3)
    write_packed_table(lk, table, rows_per_file=5)
    src = resolve(lk)
    lance.dataset(src.table_uri, version=src.lance_version).delete("pack_id % 7 = 3")
    deleted = lance.dataset(src.table_uri)
    assert deleted.count_rows() < table.num_rows and len(deleted.get_fragments()) > 3
    return table, type(src)(src.uri, src.table, deleted.version, src.lake_version, src.recipe_hash, src.layout)


def test_scans_cross_fragments_and_skip_deleted_rows(tmp_path):
    """Fragments of 5 rows (batches straddle them) and deleted rows (row addresses are not positions)."""
    table, pinned = _fragmented_with_deletes(tmp_path)
    for shuffle in ("blocks:6", "none"):
        loader = Loader(pinned, "train", batch_packs=4, shuffle=shuffle, seed=1)
        want = _by_takes(loader)
        got = list(loader)
        assert all(p % 7 != 3 for b in got for p in b.pack_ids.tolist())
        want_ids = sorted(p for p, s in zip(table["pack_id"].to_pylist(), table["split"].to_pylist())
                          if s == "train" and p % 7 != 3)
        assert sorted(p for b in got for p in b.pack_ids.tolist()) == want_ids
        _same(got, want)


def test_lance_io_errors_from_a_scan_reader_are_transient_and_others_are_not():
    import pyarrow as pa

    from loaders.retry import transient

    assert transient(pa.ArrowInvalid("External error: LanceError(IO): Generic S3 error: error sending request"))
    assert not transient(pa.ArrowInvalid("External error: LanceError(IO): Not found: s3://b/x.lance"))
    assert not transient(pa.ArrowInvalid("Invalid: column types differ"))
    assert transient(OSError("LanceError(IO): connection reset")) and not transient(ValueError("LanceError(IO)"))


@pytest.fixture(scope="module")
def small_fragments(tmp_path_factory):
    """A lake whose packed table has fragments of 7 rows."""
    lk = lake.open(tmp_path_factory.mktemp("frags") / "lake")
    write_packed_table(lk, synthetic_packs(LAYOUT, episodes=60, seed=6), rows_per_file=7)
    return lk


@pytest.mark.parametrize("shuffle", ["none", "blocks:16"])
def test_scanned_batches_are_views_of_the_record_batches_lance_returned(small_fragments, shuffle):
    """Batches inside a fragment are record batches of one scan; one straddling two fragments is a take:
    either way one Arrow array per column, and no copy on this side."""
    from loaders import reads, tensors
    from loaders.loader import _split_filter

    loader = small_fragments.stream("train", batch_packs=4, shuffle=shuffle, seed=1, prefetch=0)
    run = max(runs(loader.plan(), 4), key=len)
    assert len(run) > 2 and any(len(set((loader.addrs[b] >> 32).tolist())) > 1 for b in run)  # one straddles
    tables = list(reads.scan(loader._dataset(), [loader.rows[b] for b in run], [loader.addrs[b] for b in run],
                             loader.columns, _split_filter("train"), "test", loader.source.backoff))
    before = dict(tensors.COPIES)
    for packs, table in zip(run, tables):
        b = packed_batch(table, loader.source.layout)
        assert b.pack_ids.tolist() == table["pack_id"].to_pylist() and table["pack_id"].num_chunks == 1
        for name in ("image_patches", "actions", "position_ids", "modality"):
            lo, hi = tensors.buffer_range(table[name].chunk(0))
            t = getattr(b, name)
            assert lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi, name
    assert tensors.COPIES == before


def test_ordered_hands_out_items_by_index_and_repeats_an_error_to_every_later_caller():
    from loaders.reads import Ordered

    def items():
        yield "a"
        yield "b"
        raise ValueError("bad row")

    o = Ordered(items())
    o.prime()
    assert o.get(1) == "b" and o.get(0) == "a"
    for _ in range(2):
        with pytest.raises(ValueError, match="bad row"):
            o.get(2)
    short = Ordered(iter(["x"]))
    with pytest.raises(RuntimeError, match="ended after 1"):
        short.get(1)


def _one_take_each(loader: Loader, plan):
    """The reference for grouped reads, independent of the loader's reading: one Lance take per batch."""
    from loaders import reads

    ds = loader._dataset()
    return [packed_batch(reads.take(ds, loader.rows[b], loader.columns, "reference", loader.source.backoff),
                         loader.source.layout) for b in plan]


@pytest.mark.parametrize("budget", [None, 1 << 20])  # the default group size, and groups of a few batches
@pytest.mark.parametrize("world_size,batch_packs", [(1, 4), (2, 3), (3, 2), (1, 1)])
def test_grouped_reads_deliver_exactly_the_batches_of_one_take_each(packed, monkeypatch, budget, world_size,
                                                                    batch_packs):
    """A uniform shuffle's batches are read in groups (one allow-list scan each) and gathered: the same batches,
    same order, same values as a take per batch; also after a mid-epoch resume."""
    from loaders import reads

    if budget is not None:
        monkeypatch.setattr(reads, "GROUP_BYTES", budget)
    scans = []
    scan = reads.Group._scan
    monkeypatch.setattr(reads.Group, "_scan", lambda self: scans.append(len(self)) or scan(self))
    lk, _ = packed
    for rank in range(world_size):
        loader = lk.stream("train", batch_packs=batch_packs, seed=5, rank=rank, world_size=world_size, prefetch=2)
        plan = loader.plan()
        # the case under test: lone batches, or short ascending runs (one pack per batch), read in groups
        assert sum(len(r) for r in runs(plan, batch_packs) if len(r) < SCAN_RUN) >= len(plan) // 3
        scans.clear()
        _same(list(loader), _one_take_each(loader, plan))
        assert sum(scans) >= len(plan) // 2  # groups of several batches were read (the first batch is a take)

        loader.set_epoch(1)
        epoch1 = loader.plan()
        it = iter(loader)
        [next(it) for _ in range(2)]
        state = loader.state_dict()
        resumed = lk.stream("train", batch_packs=batch_packs, seed=5, rank=rank, world_size=world_size)
        resumed.load_state_dict(state)
        want = _one_take_each(resumed, resumed.plan())
        assert [b.tolist() for b in resumed.plan()] == [b.tolist() for b in epoch1[2:]]
        _same(list(resumed), want)


def test_grouped_reads_cross_fragments_and_skip_deleted_rows(tmp_path, monkeypatch):
    """Fragments of 5 rows and deleted rows (row addresses are not positions), groups of a few batches."""
    from loaders import reads

    monkeypatch.setattr(reads, "GROUP_BYTES", 1 << 20)
    _, pinned = _fragmented_with_deletes(tmp_path)
    for batch_packs in (2, 3):
        loader = Loader(pinned, "train", batch_packs=batch_packs, shuffle="random", seed=1)
        want = _one_take_each(loader, loader.plan())
        got = list(loader)
        assert all(p % 7 != 3 for b in got for p in b.pack_ids.tolist())
        _same(got, want)


def test_group_sizes_double_from_one_up_to_the_byte_budget():
    from loaders import reads

    weight = [None]
    sizes = reads.group_sizes(4, lambda: weight[0])
    assert [next(sizes) for _ in range(5)] == [1, 2, 4, 8, 16]  # nothing read yet: the doubling is the bound
    weight[0] = reads.GROUP_BYTES // 40  # a pack weighs 1/40 of the budget: 10 batches of 4 fit
    assert [next(sizes) for _ in range(3)] == [10, 10, 10]
    weight[0] = reads.GROUP_BYTES * 2  # one pack over the budget: still one batch per group
    assert next(sizes) == 1
