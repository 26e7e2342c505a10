"""PackedBatch from Arrow pack rows: zero-copy views, merged varlen layout, shapes from the layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from packed_tables import LAYOUT, LAYOUT_BINS, LAYOUT_EMBEDS, flat_payload_lists, synthetic_packs
from loaders import packed_batch, tensors
from packers.schema import MODALITIES, layout_of

VIEWS = ("position_ids", "modality", "loss_mask", "prefix_lens", "text_ids", "state", "state_is_pad", "actions",
         "action_is_pad", "image_patches", "image_embeds", "action_bins")


def _rows(table: pa.Table, name: str) -> list[np.ndarray]:
    """Each row's values, flat (2-D payloads are lists of per-token lists)."""
    return [np.asarray(v, dtype=object if name == "origin_episode" else None).ravel()
            for v in table[name].to_pylist()]


def _inside(t: torch.Tensor, lo: int, hi: int) -> bool:
    start = t.data_ptr()
    return lo <= start and start + t.numel() * t.element_size() <= hi


def test_batch_tensors_are_views_of_the_arrow_buffers_lance_returned(packed):
    lk, _ = packed
    ds = lk.table("packed_test")
    before = dict(tensors.COPIES)
    table = ds.take([3, 0, 7], columns=[n for n in ds.schema.names if n != "split"])  # rows of two fragments
    b = packed_batch(table, layout_of(ds.schema))
    assert tensors.COPIES == before  # no column needed concatenating
    for name in VIEWS:
        t = getattr(b, name)
        if t is None:
            continue
        lo, hi = tensors.buffer_range(table[name].chunk(0))
        assert _inside(t, lo, hi), (name, hex(t.data_ptr()), hex(lo), hex(hi))
    assert not _inside(b.cu_seqlens, *tensors.buffer_range(table["cu_seqlens"].chunk(0)))  # shifted: new


def test_a_single_pack_needs_no_new_tensor_for_cu_seqlens_or_segment_ids(packed):
    lk, _ = packed
    ds = lk.table("packed_test")
    table = ds.take([5], columns=["pack_id", "max_seqlen", "cu_seqlens", "prefix_lens", "origin_episode",
                                  "origin_frame", "modality", "position_ids", "segment_ids", "loss_mask",
                                  "image_patches", "text_ids", "state", "state_is_pad", "actions", "action_is_pad"])
    b = packed_batch(table, layout_of(ds.schema))
    for name in ("cu_seqlens", "segment_ids"):
        assert _inside(getattr(b, name), *tensors.buffer_range(table[name].chunk(0))), name


def test_merged_batch_equals_the_packs_laid_end_to_end(packed):
    _, table = packed
    picks = [4, 1, 9]
    rows = table.take(picks)
    b = packed_batch(rows)
    cus = _rows(rows, "cu_seqlens")
    want_cu = np.concatenate([cus[0][:-1]] + [c[:-1] + sum(x[-1] for x in cus[:k]) for k, c in enumerate(cus[1:], 1)]
                             + [[sum(c[-1] for c in cus)]])
    assert b.cu_seqlens.dtype == torch.int32 and b.cu_seqlens.tolist() == want_cu.tolist()
    assert b.n_tokens == b.cu_seqlens[-1] == sum(rows["n_tokens"].to_pylist())
    assert b.n_samples == sum(rows["n_samples"].to_pylist()) == len(b.origin)
    assert b.max_seqlen == max(rows["max_seqlen"].to_pylist()) == int(torch.diff(b.cu_seqlens).max())
    # segment ids: the sample's index in the batch, consistent with cu_seqlens
    want_seg = np.repeat(np.arange(b.n_samples), np.diff(want_cu))
    assert b.segment_ids.dtype == torch.int32 and b.segment_ids.tolist() == want_seg.tolist()
    assert b.origin == [(e, f) for e, f in zip(rows["origin_episode"].combine_chunks().flatten().to_pylist(),
                                               rows["origin_frame"].combine_chunks().flatten().to_pylist())]
    assert b.pack_ids.tolist() == rows["pack_id"].to_pylist()
    for name, dtype in [("position_ids", torch.int32), ("modality", torch.int8), ("loss_mask", torch.uint8),
                        ("prefix_lens", torch.int32), ("text_ids", torch.int32), ("state_is_pad", torch.uint8),
                        ("action_is_pad", torch.uint8)]:
        t = getattr(b, name)
        assert t.dtype == dtype, name
        assert t.tolist() == np.concatenate(_rows(rows, name)).tolist(), name
    counts = np.bincount(b.modality.numpy(), minlength=4)
    assert b.image_patches.dtype == torch.uint8 and b.image_patches.shape == (counts[MODALITIES["image"]], 768)
    assert b.state.shape == (counts[MODALITIES["state"]], 2) and b.actions.shape == (counts[MODALITIES["action"]], 2)
    assert np.array_equal(b.image_patches.numpy().ravel(), np.concatenate(_rows(rows, "image_patches")))
    assert np.array_equal(b.actions.numpy().ravel(), np.concatenate(_rows(rows, "actions")).astype(np.float32))
    assert b.image_embeds is None and b.action_bins is None


@pytest.mark.parametrize("layout", [LAYOUT_EMBEDS, LAYOUT_BINS], ids=["image_embeds", "action_bins"])
def test_optional_payloads_take_their_dtype_and_width_from_the_layout(layout):
    table = synthetic_packs(layout, episodes=3, seed=1)
    b = packed_batch(table.slice(1, 2))  # a sliced table: offsets no longer start at 0
    n_img = int((b.modality == MODALITIES["image"]).sum())
    n_act = int((b.modality == MODALITIES["action"]).sum())
    if layout.get("image_encoder") == "frozen":
        assert b.image_patches is None and b.image_embeds.dtype == torch.float16
        assert b.image_embeds.shape == (n_img, layout["embed_dim"])
        want = np.concatenate([np.asarray(v, np.float16).ravel() for v in table["image_embeds"].to_pylist()[1:3]])
        assert np.array_equal(b.image_embeds.numpy().ravel(), want)
    else:
        assert b.action_bins.dtype == torch.int32 and b.action_bins.shape == (n_act, layout["action_dim"])
        want = np.concatenate([np.asarray(v).ravel() for v in table["action_bins"].to_pylist()[1:3]])
        assert np.array_equal(b.action_bins.numpy().ravel(), want)


def test_widths_are_inferred_from_token_counts_when_the_layout_is_missing():
    table = synthetic_packs(LAYOUT, episodes=2, seed=2).replace_schema_metadata(None)
    b = packed_batch(table.slice(0, 1), layout={})
    assert b.image_patches.shape[1] == 768 and b.state.shape[1] == 2 and b.actions.shape[1] == 2
    embeds = synthetic_packs(LAYOUT_EMBEDS, episodes=2, seed=2)  # the packer's layout has no embed_dim (yet)
    layout = {k: v for k, v in LAYOUT_EMBEDS.items() if k != "embed_dim"}
    assert packed_batch(embeds.slice(0, 1), layout=layout).image_embeds.shape[1] == 64


def test_a_layout_that_disagrees_with_the_data_is_an_error():
    table = synthetic_packs(LAYOUT, episodes=2, seed=2)
    with pytest.raises(ValueError, match="image_patches"):
        packed_batch(table.slice(0, 1), layout={**LAYOUT, "token_dim": 500})


def test_chunked_columns_are_a_counted_copy_and_nulls_are_refused():
    table = synthetic_packs(LAYOUT, episodes=3, seed=3)
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 1)])
    before = tensors.COPIES["count"]
    b = packed_batch(chunked)
    assert tensors.COPIES["count"] > before and b.pack_ids.tolist() == table["pack_id"].to_pylist()[:2]
    broken = table.slice(0, 2).set_column(table.schema.get_field_index("text_ids"), "text_ids",
                                          pa.array([None, [1, 2]], pa.list_(pa.int32())))
    with pytest.raises(ValueError, match="text_ids.*null"):
        packed_batch(broken)


def test_to_moves_every_tensor_and_keeps_origin(packed):
    _, table = packed
    b = packed_batch(table.slice(0, 2))
    moved = b.to("cpu", non_blocking=True)
    assert moved.origin == b.origin and moved.max_seqlen == b.max_seqlen
    half = b.to(torch.device("meta"))
    assert half.image_patches.device.type == "meta" and half.cu_seqlens.device.type == "meta"
    assert b.nbytes == sum(getattr(b, f).numel() * getattr(b, f).element_size()
                           for f in ("cu_seqlens", "position_ids", "segment_ids", "modality", "loss_mask",
                                     "prefix_lens", "text_ids", "image_patches", "state", "state_is_pad", "actions",
                                     "action_is_pad", "pack_ids"))


@pytest.mark.parametrize("layout", [LAYOUT, LAYOUT_EMBEDS, LAYOUT_BINS], ids=["patches", "embeds", "bins"])
def test_tables_with_flat_payload_lists_read_the_same(layout):
    new = synthetic_packs(layout, episodes=3, seed=4)
    assert pa.types.is_fixed_size_list(new.schema.field("actions").type.value_type)
    old = flat_payload_lists(new)
    assert not pa.types.is_fixed_size_list(old.schema.field("actions").type.value_type)
    a, b = packed_batch(new.slice(1, 3)), packed_batch(old.slice(1, 3))
    for name in ("image_patches", "image_embeds", "state", "actions", "action_bins", "text_ids", "cu_seqlens"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or (x.shape == y.shape and torch.equal(x, y)), name


def test_a_pickled_batch_travels_as_one_buffer_and_reads_back_equal():
    import pickle

    table = synthetic_packs(LAYOUT_BINS, episodes=3, seed=5)
    b = packed_batch(table.slice(0, 3))
    got = pickle.loads(pickle.dumps(b))
    assert got.origin == b.origin and got.max_seqlen == b.max_seqlen
    storages = set()
    for name, t in b._tensors().items():
        u = getattr(got, name)
        assert u.dtype == t.dtype and u.shape == t.shape and torch.equal(u, t), name
        storages.add(u.untyped_storage().data_ptr())
    assert len(storages) == 1  # one segment, not one per tensor


def test_a_shared_buffer_is_made_in_shared_memory_at_its_size():
    from loaders.batch import _shared

    for n in (1, 4096, 3 * 2**20 + 5):
        buf = _shared(n)
        assert buf.is_shared() and buf.dtype == torch.uint8 and buf.shape == (n,)
        buf[-1] = 7
        assert int(buf[-1]) == 7
