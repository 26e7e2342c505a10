"""Arrow list columns -> torch tensors that share the Arrow buffers (no copy).

A ``ListArray`` is an offsets buffer plus a child values buffer. The values of rows ``a..b`` are the child's
elements ``offsets[a]..offsets[b]`` (plus the child's own slice offset), one contiguous run: a batch of
consecutive rows becomes one tensor view, and merging the packs of a batch costs nothing. What forces a copy,
and is counted in ``COPIES`` (tests assert it stays 0): a column split into several chunks. What is refused:
nulls (a packed table has none), and boolean columns (bit-packed in Arrow; the packer stores masks as uint8).

Tensors made here are read-only views: clone before writing in place.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

COPIES = {"count": 0, "bytes": 0}
"""Copies made on the way from Arrow to torch (process-wide counters, for tests and benchmarks)."""

_NUMPY = {
    pa.int8(): np.int8, pa.uint8(): np.uint8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.float16(): np.float16, pa.float32(): np.float32, pa.float64(): np.float64,
}

_NUMPY_BY_ID = {t.id: np.dtype(v) for t, v in _NUMPY.items()}  # these type ids are unique
_LIST_ID, _FSL_ID = pa.list_(pa.int8()).id, pa.list_(pa.int8(), 2).id

# torch warns on every view of read-only memory; these views are read-only by design (documented above).
warnings.filterwarnings("ignore", message="The given (NumPy array|buffer) is not writable", category=UserWarning)


def single_chunk(col: pa.ChunkedArray | pa.Array, name: str) -> pa.Array:
    """The column as one Arrow array; concatenating several chunks is a counted copy."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        arr = col.combine_chunks()
        COPIES["count"] += 1
        COPIES["bytes"] += arr.nbytes
        return arr
    return col


def _buffer_view(buf: pa.Buffer, dtype, start: int, count: int) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    if count == 0:
        return np.empty(0, dtype)
    return np.frombuffer(buf, dtype=dtype, count=count, offset=start * itemsize)


def primitive(arr: pa.Array, name: str) -> np.ndarray:
    """A primitive (non-bool, null-free) Arrow array as a numpy view of its data buffer."""
    if arr.type not in _NUMPY:
        raise TypeError(f"column {name!r}: {arr.type} has no zero-copy view (packed columns are ints / floats)")
    if arr.null_count:
        raise ValueError(f"column {name!r} has {arr.null_count} null values; a packed table has none")
    return _buffer_view(arr.buffers()[1], _NUMPY[arr.type], arr.offset, len(arr))


def list_offsets(arr: pa.Array, name: str) -> np.ndarray:
    """The ``len(arr) + 1`` offsets of a (possibly sliced) ListArray, as a view; they need not start at 0."""
    if not pa.types.is_list(arr.type):
        raise TypeError(f"column {name!r} is {arr.type}, expected a list")
    if arr.null_count:
        raise ValueError(f"column {name!r} has {arr.null_count} null rows; a packed table has none")
    return _buffer_view(arr.buffers()[1], np.int32, arr.offset, len(arr) + 1)


def list_values(arr: pa.Array, name: str) -> np.ndarray:
    """All values of a ListArray's rows, concatenated, as a numpy view (respects slicing of the array).

    ``list<T>`` gives a 1-D view; ``list<fixed_size_list<T, w>>`` a 2-D ``(items, w)`` view. (Called ~15 times
    per batch: written for few pyarrow calls.)"""
    return list_parts(arr, name)[1]


def list_parts(arr: pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(list_offsets(arr), list_values(arr))`` with one reading of the offsets (both views)."""
    if arr.type.id != _LIST_ID:
        raise TypeError(f"column {name!r} is {arr.type}, expected a list")
    if arr.null_count:
        raise ValueError(f"column {name!r} has {arr.null_count} null rows; a packed table has none")
    offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
    child = arr.values  # the whole child: ignores arr's slice offset, hence the offsets math
    lo, hi = int(offsets[0]), int(offsets[-1])
    fixed = child.type.id == _FSL_ID
    width, leaf, start = 1, child, child.offset + lo
    if fixed:  # .values ignores child's slice offset too: scale it ourselves
        width, leaf = child.type.list_size, child.values
        start = leaf.offset + (child.offset + lo) * width
    dtype = _NUMPY_BY_ID.get(leaf.type.id)
    if dtype is None:
        raise TypeError(f"column {name!r}: list of {child.type} has no zero-copy view")
    if (child.null_count and child.slice(lo, hi - lo).null_count) or (
            fixed and leaf.null_count and leaf.slice(start - leaf.offset, (hi - lo) * width).null_count):
        raise ValueError(f"column {name!r} holds null values; a packed table has none")
    count = (hi - lo) * width
    flat = np.frombuffer(leaf.buffers()[1], dtype, count, start * dtype.itemsize) if count else np.empty(0, dtype)
    return offsets, (flat.reshape(hi - lo, width) if fixed else flat)


def to_torch(a: np.ndarray):
    """numpy -> torch sharing memory (read-only views allowed)."""
    import torch

    return torch.from_numpy(a)


def buffer_range(arr: pa.Array) -> tuple[int, int]:
    """[start, end) addresses of the data buffer an array's values live in (for zero-copy checks)."""
    data = arr.values if pa.types.is_list(arr.type) else arr
    data = data.values if pa.types.is_fixed_size_list(data.type) else data
    buf = data.buffers()[1]
    return buf.address, buf.address + buf.size
