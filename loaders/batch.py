"""``PackedBatch``: the packs of one training step as torch tensors, merged into one varlen batch.

Built from an Arrow table of pack rows (``packers.schema``) without copying payloads: every per-token and
per-modality column of consecutive rows is one contiguous run of its Arrow child buffer (``tensors``).
Merging ``k`` packs shifts ``cu_seqlens`` by each pack's token offset and ``segment_ids`` by each pack's
sample offset (small new tensors); all other tensors are views of the Arrow buffers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from . import tensors as _t

if TYPE_CHECKING:
    import torch

TENSOR_FIELDS = ("cu_seqlens", "position_ids", "segment_ids", "modality", "loss_mask", "prefix_lens", "text_ids",
                 "image_patches", "image_embeds", "state", "state_is_pad", "actions", "action_is_pad",
                 "action_bins", "pack_ids", "mixture_slot")


@dataclass(frozen=True)
class PackedBatch:
    """Samples packed end to end: ``n`` samples, ``T`` tokens (sample ``i`` is ``cu_seqlens[i]:cu_seqlens[i+1]``).

    Per sample: ``cu_seqlens`` int32 (n+1,), ``prefix_lens`` int32 (n,) (image + text tokens, attended
    bidirectionally), ``origin`` [(episode_id, frame_index)] (n). Per token: ``position_ids`` int32 (restart
    at 0 per sample), ``segment_ids`` int32 (sample index in the batch), ``modality`` int8
    (``packers.schema.MODALITIES``), ``loss_mask`` uint8. Payloads, in token order of their modality:
    ``image_patches`` uint8 (n_image_tokens, token_dim) or ``image_embeds`` float16 (n_image_tokens, dim),
    ``text_ids`` int32 (n_text_tokens,), ``state`` float32 (n_state_tokens, state_dim) with ``state_is_pad``
    uint8, ``actions`` float32 (n_action_tokens, action_dim) with ``action_is_pad`` uint8, and ``action_bins``
    int32 (n_action_tokens, action_dim) when the recipe discretizes. ``pack_ids`` int64 (packs,).
    ``mixture_slot`` int64 (n,): each sample's pool slot, in a table packed for a per-epoch mixture draw
    (``packers.mixture``; the loader keeps only the epoch's draw, ``loaders.mixture_epoch``), else None.

    CPU tensors are read-only views of Arrow memory: ``.clone()`` before writing in place.
    """

    cu_seqlens: torch.Tensor
    max_seqlen: int
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    modality: torch.Tensor
    loss_mask: torch.Tensor
    prefix_lens: torch.Tensor
    text_ids: torch.Tensor
    state: torch.Tensor
    state_is_pad: torch.Tensor
    actions: torch.Tensor
    action_is_pad: torch.Tensor
    pack_ids: torch.Tensor
    origin: list[tuple[str, int]]
    image_patches: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    action_bins: torch.Tensor | None = None
    mixture_slot: torch.Tensor | None = None

    @property
    def n_samples(self) -> int:
        return len(self.origin)

    @property
    def n_tokens(self) -> int:
        return int(self.position_ids.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the batch's tensors."""
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def _tensors(self) -> dict:
        return {f: getattr(self, f) for f in TENSOR_FIELDS if getattr(self, f) is not None}

    def to(self, device, non_blocking: bool = False) -> "PackedBatch":
        """The batch on ``device`` (one host-to-device copy per tensor; ``non_blocking`` needs pinned memory)."""
        return dataclasses.replace(self, **{k: v.to(device, non_blocking=non_blocking) for k, v in self._tensors().items()})

    def __reduce__(self):
        """Pickle the tensors as one byte buffer: a DataLoader worker then hands a batch to the main process
        as one shared-memory segment and file descriptor, not ~15 (one per tensor; fds run out with many
        workers and deep prefetch). Either way it is one copy: Arrow memory cannot be shared as is. A batch
        ``gathered_batch`` built (a uniform shuffle's, in a worker: in shared memory) is that buffer already and
        goes as it is."""
        import torch

        packed = self.__dict__.get("_buffer")  # built in one buffer already (``gathered_batch``): no copy
        if packed is not None and (packed[0].is_shared() or torch.utils.data.get_worker_info() is None):
            buf, meta = packed
            held = self._tensors()
            rest = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in held}
            return _from_buffer, (buf, meta, rest)
        tensors = {k: v.contiguous() for k, v in self._tensors().items()}
        meta, offset = [], 0
        for name, t in tensors.items():
            offset = -(-offset // 64) * 64  # aligned for every dtype's view
            meta.append((name, offset, t.dtype, tuple(t.shape)))
            offset += t.numel() * t.element_size()
        if torch.utils.data.get_worker_info() is not None:
            buf = _shared(max(offset, 1))  # in shared memory now, rather than copied there when pickled
        else:
            buf = torch.empty(offset, dtype=torch.uint8)
        for (name, start, _, _), t in zip(meta, tensors.values()):
            n = t.numel() * t.element_size()
            if n:
                buf[start:start + n].copy_(t.reshape(-1).view(torch.uint8))
        rest = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in tensors}
        return _from_buffer, (buf, meta, rest)

    def pin_memory(self) -> "PackedBatch":
        """The batch in page-locked memory (one copy), for asynchronous ``.to(cuda, non_blocking=True)``."""
        return dataclasses.replace(self, **{k: v.pin_memory() for k, v in self._tensors().items()})


def _from_buffer(buf, meta, rest) -> PackedBatch:
    """Inverse of ``PackedBatch.__reduce__``: tensors are views of ``buf``."""
    views = {}
    for name, start, dtype, shape in meta:
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        views[name] = buf[start:start + n].view(dtype).view(shape)
    return PackedBatch(**views, **rest)


# two-dimensional payload -> the modality whose token count is its row count
_PAYLOAD_2D = {"image_patches": "image", "image_embeds": "image", "state": "state", "actions": "action",
               "action_bins": "action"}


def _width(name: str, vals: np.ndarray, n_rows: int, layout: dict) -> int:
    """Row width of a payload (flat, or 2-D from a list of fixed-size lists), from the layout (checked
    against the data) or from the data."""
    from packers.schema import WIDTH_KEYS

    key = WIDTH_KEYS[name]  # image_embeds: embed_dim; token_dim is the raw patch size, not the encoder's width
    dim = int(layout[key]) if layout.get(key) else (vals.shape[1] if vals.ndim == 2 else None)
    if dim is None:
        if n_rows == 0:
            return 0
        dim = vals.size // n_rows
    if vals.size != dim * n_rows or (vals.ndim == 2 and vals.shape[1] != dim):
        raise ValueError(f"column {name!r}: {vals.size} values are not {n_rows} tokens x width {dim} "
                         f"(layout {key}={layout.get(key)})")
    return dim


def _columns(table: pa.Table | pa.RecordBatch) -> dict[str, pa.Array]:
    """The columns as single Arrow arrays: free for a record batch or a table of one batch; a table chunked
    otherwise is combined (counted copies)."""
    if isinstance(table, pa.Table):
        batches = table.to_batches()
        if len(batches) != 1:
            return {name: _t.single_chunk(table[name], name) for name in table.column_names}
        table = batches[0]
    return dict(zip(table.schema.names, table.columns))


def _merged_cu(cu: pa.Array) -> np.ndarray:
    """Per-pack cu_seqlens (each 0..n_tokens) -> one cu_seqlens over the packs laid end to end (a view for
    one pack). A loop over the few packs of a batch: cheaper than vectorizing at this size."""
    vals = _t.list_values(cu, "cu_seqlens")
    if len(cu) == 1:
        return vals
    offs = _t.list_offsets(cu, "cu_seqlens")
    offs = (offs - offs[0]).tolist()
    pieces, base = [], 0
    for lo, hi in zip(offs[:-1], offs[1:]):
        if hi <= lo:
            raise ValueError("cu_seqlens: every pack needs at least [0]")
        pieces.append(vals[lo:hi - 1] + base)
        base += int(vals[hi - 1])
    pieces.append(np.array([base], np.int32))
    return np.concatenate(pieces).astype(np.int32, copy=False)


def packed_batch(table: pa.Table | pa.RecordBatch, layout: dict | None = None) -> PackedBatch:
    """Merge the pack rows of ``table`` (packed-table columns) into one PackedBatch.

    ``layout`` gives the payload widths (default: the table's schema metadata; else inferred from the
    token counts). Raises ValueError when columns disagree with each other or with the layout.
    """
    from packers.schema import MODALITIES, layout_of

    if layout is None:
        layout = layout_of(table.schema)
    if table.num_rows == 0:
        raise ValueError("a PackedBatch needs at least one pack")
    cols = _columns(table)
    missing = [c for c in ("cu_seqlens", "modality", "position_ids", "segment_ids", "loss_mask", "prefix_lens",
                           "origin_episode", "origin_frame", "pack_id", "max_seqlen") if c not in cols]
    if missing:
        raise ValueError(f"pack rows lack columns {missing}")
    pack_ids = _t.primitive(cols["pack_id"], "pack_id")
    cu = _merged_cu(cols["cu_seqlens"])
    n_samples, n_tokens = len(cu) - 1, int(cu[-1])
    if len(cols["cu_seqlens"]) == 1:  # one pack: its own segment ids, as a view
        segment = _t.list_values(cols["segment_ids"], "segment_ids")
    else:  # merged: sample indices over the whole batch (a small new array)
        segment = np.repeat(np.arange(n_samples, dtype=np.int32), cu[1:] - cu[:-1])
    per_token = {name: _t.list_values(cols[name], name) for name in ("modality", "position_ids", "loss_mask")}
    per_token["segment_ids"] = segment
    for name, values in per_token.items():
        if len(values) != n_tokens:
            raise ValueError(f"column {name!r} has {len(values)} tokens but cu_seqlens says {n_tokens} "
                             f"(packs {pack_ids.tolist()})")
    modality = per_token["modality"]

    episodes = cols["origin_episode"].flatten().to_pylist()  # strings: Python objects are the point here
    frames = _t.list_values(cols["origin_frame"], "origin_frame").tolist()
    if len(episodes) != n_samples or len(frames) != n_samples:
        raise ValueError(f"origin has {len(episodes)} samples but cu_seqlens {n_samples} (packs {pack_ids.tolist()})")

    T = _t.to_torch
    out = {}
    for name, modality_name in _PAYLOAD_2D.items():
        if name not in cols:
            continue
        vals = _t.list_values(cols[name], name)
        width = _width(name, vals, int(np.count_nonzero(modality == MODALITIES[modality_name])), layout)
        out[name] = T(vals.reshape(-1, width) if width else vals.reshape(0, 0))
    view = lambda name: T(_t.list_values(cols[name], name))  # noqa: E731
    return PackedBatch(
        cu_seqlens=T(cu), max_seqlen=int(_t.primitive(cols["max_seqlen"], "max_seqlen").max()),
        position_ids=T(per_token["position_ids"]), segment_ids=T(segment), modality=T(modality),
        loss_mask=T(per_token["loss_mask"]), prefix_lens=view("prefix_lens"),
        text_ids=view("text_ids") if "text_ids" in cols else T(np.empty(0, np.int32)),
        state_is_pad=view("state_is_pad"), action_is_pad=view("action_is_pad"),
        pack_ids=T(pack_ids), origin=list(zip(episodes, frames)), **out,
        mixture_slot=view("mixture_slot") if "mixture_slot" in cols else None,
    )


# --- gathering a batch from rows scattered over several record batches (``reads.Group``) --------------------------

READ_COLUMNS = frozenset(("cu_seqlens", "origin_frame"))  # list columns ``gathered_batch`` reads; the others it
#                                                            only copies (so they may still lie in a file: ``_slices``)
_LISTS = ("cu_seqlens", "prefix_lens", "origin_frame", "modality", "position_ids", "segment_ids", "loss_mask",
          "text_ids", "image_patches", "image_embeds", "state", "state_is_pad", "actions", "action_is_pad",
          "action_bins", "mixture_slot")


class Rows:
    """The pack rows of one record batch as numpy views (list columns: row offsets from 0 and all values;
    ``pack_id`` / ``max_seqlen``: values; ``origin_episode``: offsets and the strings), made once and shared by
    every batch ``gathered_batch`` takes rows of (a group's scan hands out record batches of a few rows, each
    read by several batches)."""

    __slots__ = ("num_rows", "lists", "prims", "episodes", "schema")

    def __init__(self, rb: pa.RecordBatch):
        self.num_rows, self.schema = rb.num_rows, rb.schema
        self.lists, self.prims, self.episodes = {}, {}, None
        for name, arr in zip(rb.schema.names, rb.columns):
            if name in _LISTS:
                offs, vals = _t.list_parts(arr, name)
                self.lists[name] = (offs - offs[0] if offs[0] else offs, vals)
            elif name in ("pack_id", "max_seqlen"):
                self.prims[name] = _t.primitive(arr, name)
            elif name == "origin_episode":
                offs = _t.list_offsets(arr, name)
                self.episodes = (offs - offs[0], arr.flatten().to_pylist())


def _slices(picks, name: str) -> list:
    """The values of column ``name`` of every picked row, in order: views, or pieces still to be read (``into``,
    from rows that keep some columns elsewhere, as a shard file's big ones: ``shardfile.Packs``)."""
    out = []
    for rows, start, count in picks:
        got = rows.lists.get(name)
        if got is None:
            out += rows.pieces(name, start, count)
        else:
            offs, vals = got
            out.append(vals[offs[start]:offs[start + count]])
    return out


def _fill(out: np.ndarray, pieces: list) -> None:
    """``pieces`` laid end to end into ``out`` (rows along the first axis); a piece with ``into`` reads itself."""
    if not any(hasattr(p, "into") for p in pieces):
        if len(pieces) == 1:
            out[...] = pieces[0]
        else:
            np.concatenate(pieces, out=out)
        return
    at = 0
    for p in pieces:
        n = len(p)
        if hasattr(p, "into"):
            p.into(out[at:at + n])
        else:
            out[at:at + n] = p
        at += n


def _gathered_cu(picks) -> tuple[np.ndarray, int]:
    """Per-pack cu_seqlens of the picked rows -> one cu_seqlens over them laid end to end (as ``_merged_cu``;
    a loop over the few packs of a batch: cheaper than vectorizing at this size, measured), and the number of
    packs."""
    pieces, base, n = [], 0, 0
    for rows, start, count in picks:
        offs, vals = rows.lists["cu_seqlens"]
        for lo, hi in zip(offs[start:start + count].tolist(), offs[start + 1:start + count + 1].tolist()):
            if hi <= lo:
                raise ValueError("cu_seqlens: every pack needs at least [0]")
            pieces.append(vals[lo:hi - 1] + base if n else vals[lo:hi - 1])
            base += int(vals[hi - 1])
            n += 1
    if n == 1:
        return np.append(pieces[0], base).astype(pieces[0].dtype), 1
    pieces.append(np.array([base], np.int32))
    return np.concatenate(pieces).astype(np.int32, copy=False), n


def _shared(nbytes: int):
    """A torch uint8 buffer of ``nbytes`` made in shared memory, as torch's own collate makes its batches there:
    ``torch.empty(n).share_memory_()`` makes a private buffer, then copies it into a new shared one (touching
    every page twice: ~40% of a W=2 worker's page faults, measured with perf)."""
    import torch

    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)  # (torch's private API: fall back without it)
    if new_shared is None:
        return torch.empty(nbytes, dtype=torch.uint8).share_memory_()
    return torch.empty(0, dtype=torch.uint8).set_(new_shared(nbytes), 0, (nbytes,))


def _buffer(nbytes: int):
    """(torch uint8 buffer, numpy view of it) for a gathered batch: in shared memory inside a DataLoader worker
    (the batch is then pickled to the main process as it is, see ``PackedBatch.__reduce__``), else from Arrow's
    allocator (it reuses freed memory: no page faults per batch, where a fresh torch/numpy buffer of a few MiB
    faults in every page, measured)."""
    import torch

    if torch.utils.data.get_worker_info() is not None:
        buf = _shared(max(nbytes, 1))
    else:
        buf = torch.frombuffer(pa.allocate_buffer(max(nbytes, 1)), dtype=torch.uint8)
    return buf, buf.numpy()


def gathered_batch(picks: list[tuple[Rows, int, int]], layout: dict | None = None) -> PackedBatch:
    """The PackedBatch of the pack rows ``picks`` (``(rows, first row, row count)``, in batch order), equal to
    ``packed_batch`` of those rows gathered into one table, built with one copy: every tensor is a view of one
    new buffer laid out as ``PackedBatch.__reduce__`` lays it out (so a DataLoader worker sends it on without
    another copy). Raises ValueError where ``packed_batch`` does."""
    from packers.schema import MODALITIES, layout_of

    if layout is None:
        layout = layout_of(picks[0][0].schema)
    have = picks[0][0]
    elsewhere = getattr(have, "big", ())  # columns still in their files (``_slices``)
    missing = [c for c in sorted(READ_COLUMNS) if c not in have.lists]
    missing += [c for c in ("modality", "position_ids", "segment_ids", "loss_mask", "prefix_lens")
                if c not in have.lists and c not in elsewhere]
    missing += [c for c in ("pack_id", "max_seqlen") if c not in have.prims]
    missing += ["origin_episode"] if have.episodes is None else []
    if missing or sum(count for _, _, count in picks) == 0:
        raise ValueError(f"pack rows lack columns {missing}" if missing else "a PackedBatch needs at least one pack")
    pack_ids = np.concatenate([rows.prims["pack_id"][start:start + count] for rows, start, count in picks])
    cu, n_packs = _gathered_cu(picks)
    n_samples, n_tokens = len(cu) - 1, int(cu[-1])
    max_seqlen = int(max(int(rows.prims["max_seqlen"][start:start + count].max()) for rows, start, count in picks))
    episodes = []
    for rows, start, count in picks:
        offs, names = rows.episodes
        episodes += names[offs[start]:offs[start + count]]
    frames = np.concatenate(_slices(picks, "origin_frame")).tolist()
    if len(episodes) != n_samples or len(frames) != n_samples:
        raise ValueError(f"origin has {len(episodes)} samples but cu_seqlens {n_samples} (packs {pack_ids.tolist()})")

    # every tensor's values: gathered slices (copied into the buffer) or small arrays computed here
    parts: dict[str, list[np.ndarray]] = {}
    for name in TENSOR_FIELDS:
        if name == "cu_seqlens":
            parts[name] = [cu]
        elif name == "segment_ids" and n_packs > 1:
            parts[name] = [np.repeat(np.arange(n_samples, dtype=np.int32), cu[1:] - cu[:-1])]
        elif name == "pack_ids":
            parts[name] = [pack_ids]
        elif name in have.lists or name in elsewhere:
            parts[name] = _slices(picks, name)
        elif name == "text_ids":
            parts[name] = [np.empty(0, np.int32)]
    for name in ("modality", "position_ids", "loss_mask", "segment_ids"):
        got = sum(len(p) for p in parts[name])
        if got != n_tokens:
            raise ValueError(f"column {name!r} has {got} tokens but cu_seqlens says {n_tokens} "
                             f"(packs {pack_ids.tolist()})")
    layout_in, offset = [], 0
    for name, pieces in parts.items():
        first = pieces[0]
        rows = sum(len(p) for p in pieces)
        offset = -(-offset // 64) * 64  # aligned for every dtype's view, as PackedBatch.__reduce__
        nbytes = rows * first.itemsize * (first.shape[1] if first.ndim == 2 else 1)
        layout_in.append((name, offset, nbytes, first.dtype, (rows, *first.shape[1:])))
        offset += nbytes
    buf, raw = _buffer(offset)
    _t.COPIES["count"] += 1
    _t.COPIES["bytes"] += offset
    arrays = {}
    for name, start, nbytes, dtype, shape in layout_in:
        out = raw[start:start + nbytes].view(dtype).reshape(shape)
        if nbytes:
            _fill(out, parts[name])
        arrays[name] = out
    modality = arrays["modality"]
    for name, modality_name in _PAYLOAD_2D.items():
        if name in arrays:
            vals = arrays[name]
            width = _width(name, vals, int(np.count_nonzero(modality == MODALITIES[modality_name])), layout)
            arrays[name] = vals.reshape(-1, width) if width else vals.reshape(0, 0)
    T = _t.to_torch
    tensors = {name: T(a) for name, a in arrays.items()}
    batch = PackedBatch(max_seqlen=max_seqlen, origin=list(zip(episodes, frames)), **tensors)
    meta = [(name, start, tensors[name].dtype, tuple(tensors[name].shape)) for name, start, *_ in layout_in]
    object.__setattr__(batch, "_buffer", (buf, meta))  # for __reduce__: already one buffer
    return batch
