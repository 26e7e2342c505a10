"""``gathered_batch``: a batch built from pack rows scattered over several record batches (a group's scan) equals
``packed_batch`` of those rows gathered into one table (the reference), and its tensors share one buffer that
pickles as is."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from packed_tables import LAYOUT, LAYOUT_BINS, LAYOUT_EMBEDS, flat_payload_lists, synthetic_packs
from loaders import tensors
from loaders.batch import Rows, gathered_batch, packed_batch


def _with_slots(table: pa.Table) -> pa.Table:
    """The table with a ``mixture_slot`` column (one int64 per sample), as a per-epoch mixture pool has."""
    n = [len(c) - 1 for c in table["cu_seqlens"].to_pylist()]
    slots = [list(range(100 * i, 100 * i + k)) for i, k in enumerate(n)]
    return table.append_column("mixture_slot", pa.array(slots, pa.list_(pa.int64())))


def _record_batches(table: pa.Table, rng) -> list[pa.RecordBatch]:
    """The table cut into record batches of 1-5 rows, some of them slices of a bigger one (offsets not at 0)."""
    out, i = [], 0
    whole = table.combine_chunks().to_batches()[0]
    while i < table.num_rows:
        k = int(rng.integers(1, 6))
        out.append(whole.slice(i, k))
        i += k
    return out


def _reference(rbs, picks, layout):
    """packed_batch of the picked rows gathered into one table (what grouped reads did before)."""
    table = pa.Table.from_batches([rbs[w].slice(start, count) for w, start, count in picks]).combine_chunks()
    return packed_batch(table, layout)


def _assert_same(got, want):
    assert got.origin == want.origin and got.max_seqlen == want.max_seqlen
    assert set(got._tensors()) == set(want._tensors())
    for name, t in want._tensors().items():
        u = getattr(got, name)
        assert u.dtype == t.dtype and u.shape == t.shape and torch.equal(u, t), name


def _random_picks(rbs, rng, max_rows: int = 6):
    """Up to ``max_rows`` distinct rows, in random order, as (record batch, first row, count) pieces; neighbours
    of one record batch sometimes one piece."""
    where = [(w, r) for w, rb in enumerate(rbs) for r in range(rb.num_rows)]
    chosen = [where[i] for i in rng.choice(len(where), int(rng.integers(1, max_rows + 1)), replace=False)]
    if rng.random() < 0.5:
        chosen.sort()
    picks = []
    for w, r in chosen:
        if picks and picks[-1][0] == w and picks[-1][1] + picks[-1][2] == r:
            picks[-1] = (w, picks[-1][1], picks[-1][2] + 1)
        else:
            picks.append((w, r, 1))
    return picks


@pytest.mark.parametrize("kind", ["patches", "embeds", "bins", "flat", "slots"])
def test_gathered_batches_equal_packed_batch_of_the_gathered_rows(kind):
    layout = {"patches": LAYOUT, "embeds": LAYOUT_EMBEDS, "bins": LAYOUT_BINS, "flat": LAYOUT,
              "slots": LAYOUT}[kind]
    table = synthetic_packs(layout, episodes=10, seed=11)
    table = flat_payload_lists(table) if kind == "flat" else _with_slots(table) if kind == "slots" else table
    table = table.drop_columns(["split", "n_samples", "n_tokens"])
    rng = np.random.default_rng(0)
    rbs = _record_batches(table, rng)
    rows = [Rows(rb) for rb in rbs]
    cases = [[(0, 0, 1)],  # one pack: its own cu_seqlens and segment ids
             [(len(rbs) - 1, rbs[-1].num_rows - 1, 1), (0, 0, 1)],  # last row first, then the first
             [(1, 0, rbs[1].num_rows)]]  # one piece of several rows
    cases += [_random_picks(rbs, rng) for _ in range(40)]
    for picks in cases:
        for lay in (layout, None):  # the layout given, or read from the schema
            got = gathered_batch([(rows[w], start, count) for w, start, count in picks], lay)
            _assert_same(got, _reference(rbs, picks, lay))


def test_a_gathered_batch_is_one_counted_copy_in_one_buffer_that_pickles_as_is():
    table = synthetic_packs(LAYOUT_BINS, episodes=6, seed=12).drop_columns(["split", "n_samples", "n_tokens"])
    rbs = _record_batches(table, np.random.default_rng(1))
    rows = [Rows(rb) for rb in rbs]
    picks = [(rows[2], 0, 1), (rows[0], 0, 1), (rows[1], 0, 1)]
    before = dict(tensors.COPIES)
    b = gathered_batch(picks, LAYOUT_BINS)
    assert tensors.COPIES["count"] == before["count"] + 1
    buf, _ = b.__dict__["_buffer"]
    lo, hi = buf.data_ptr(), buf.data_ptr() + buf.numel()
    for name, t in b._tensors().items():  # every tensor inside the one buffer: nothing else was allocated
        assert lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi, name
    fn, (sent, meta, rest) = b.__reduce__()
    assert sent is buf  # sent as it is, no second copy
    got = pickle.loads(pickle.dumps(b))
    _assert_same(got, b)
    assert len({getattr(got, n).untyped_storage().data_ptr() for n in b._tensors()}) == 1
    # tensors are writable views of the buffer: a write shows in the pickled bytes (no stale copy)
    b.state_is_pad[0] = 7
    assert pickle.loads(pickle.dumps(b)).state_is_pad[0] == 7


def test_gathered_batches_refuse_what_packed_batch_refuses():
    table = synthetic_packs(LAYOUT, episodes=4, seed=13).drop_columns(["split", "n_samples", "n_tokens"])
    rb = table.combine_chunks().to_batches()[0]
    with pytest.raises(ValueError, match="lack columns"):
        gathered_batch([(Rows(rb.drop_columns(["loss_mask"])), 0, 2)], LAYOUT)
    with pytest.raises(ValueError, match="token_dim|image_patches"):
        gathered_batch([(Rows(rb), 0, 2)], {**LAYOUT, "token_dim": 500})
    cu = rb.schema.get_field_index("cu_seqlens")
    empty = rb.set_column(cu, "cu_seqlens", pa.array([[]] + rb["cu_seqlens"].to_pylist()[1:], pa.list_(pa.int32())))
    with pytest.raises(ValueError, match="at least"):
        gathered_batch([(Rows(empty), 0, 2)], LAYOUT)
