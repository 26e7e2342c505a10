"""One cached shard on local disk: the packs of a shard, each a zstd frame of an Arrow IPC stream.

Layout: ``MAGIC | frame_0 | ... | frame_{k-1} | offsets (int64, k+1) | k (int64) | level (int64) | MAGIC``.
Frame ``i`` is pack ``i`` of the shard (one record batch), compressed alone, so one pack is one ``pread`` and
one decompression whatever the shard size. The decompressed frame is a fresh buffer that Arrow reads in place
(``pa.py_buffer`` wraps it, the IPC reader slices it) and ``loaders.batch`` views as torch tensors: the
decompression is the only copy. Level 0 stores frames uncompressed (same layout).

A file is written whole under a temporary name and renamed (``write``); ``ShardFile`` checks both magics and
the offsets before serving anything, so a torn file (which the rename never publishes) would be refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

MAGIC = b"LKSHARD1"
_FOOTER = 8 * 2 + len(MAGIC)
LEVEL = 3  # zstd level chosen by measurement (benchmarks/RESULTS.md, "Node shard cache"), PushT packs: level 1
#            0.136 of the Arrow bytes at 289 MB/s, 3: 0.129 at 234 MB/s, 6: 0.122 at 87 MB/s; reads ~1 GB/s at
#            every level. 3 writes far faster than a node downloads; 6+ would make writing the bottleneck.


class TornShard(RuntimeError):
    """A shard file whose structure does not check out (never served)."""


def _frame(batch: pa.RecordBatch, cctx) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    raw = sink.getvalue()
    return raw.to_pybytes() if cctx is None else cctx.compress(raw)


def write(path: Path, table: pa.Table, level: int = LEVEL) -> int:
    """Write ``table``'s rows (one pack each) to ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then renamed. Returns the file's size in bytes."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True) if level > 0 else None
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    offsets = [len(MAGIC)]
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            for rb in table.combine_chunks().to_batches(max_chunksize=1):
                f.write(_frame(rb, cctx))
                offsets.append(f.tell())
            f.write(np.asarray(offsets, dtype="<i8").tobytes())
            f.write(np.asarray([len(offsets) - 1, level], dtype="<i8").tobytes())
            f.write(MAGIC)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)  # readers see no file or the whole file
    finally:
        if tmp.exists():
            tmp.unlink()
    return size


def _decompress(frame: bytes, what: str) -> np.ndarray:
    """A zstd frame decompressed straight into a fresh writable numpy buffer (torch views it without the
    read-only warning a ``bytes`` result would give)."""
    import zstandard

    size = zstandard.frame_content_size(frame)
    if size < 0:
        raise TornShard(f"{what}: the frame does not record its size")
    out = np.empty(size, dtype=np.uint8)
    view, done = memoryview(out), 0
    with zstandard.ZstdDecompressor().stream_reader(frame) as r:
        while done < size:
            n = r.readinto(view[done:])
            if n == 0:
                raise TornShard(f"{what}: the frame ends after {done} of {size} bytes")
            done += n
    return out


class ShardFile:
    """An open shard: ``read(i)`` is pack ``i`` as a record batch viewing its decompressed buffer.

    Holds the file descriptor, so the file may be evicted (unlinked) meanwhile: reads go on. Raises
    TornShard when the file's structure is damaged."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(self.fd).st_size
            if size < len(MAGIC) + 8 + _FOOTER:
                raise TornShard(f"shard {self.path} is {size} bytes: too short")
            tail = os.pread(self.fd, _FOOTER, size - _FOOTER)
            k, self.level = (int(v) for v in np.frombuffer(tail[:16], "<i8"))
            head = os.pread(self.fd, len(MAGIC), 0)
            if head != MAGIC or tail[16:] != MAGIC or k < 0 or size < len(MAGIC) + 8 * (k + 1) + _FOOTER:
                raise TornShard(f"shard {self.path} is damaged (magic or footer)")
            start = size - _FOOTER - 8 * (k + 1)
            self.offsets = np.frombuffer(os.pread(self.fd, 8 * (k + 1), start), "<i8")
            if self.offsets[0] != len(MAGIC) or self.offsets[-1] != start or np.any(np.diff(self.offsets) <= 0):
                raise TornShard(f"shard {self.path} is damaged (offsets)")
            self.size = size
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def packs(self) -> int:
        return len(self.offsets) - 1

    def read(self, i: int) -> pa.RecordBatch:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        data = os.pread(self.fd, hi - lo, lo)
        if len(data) != hi - lo:
            raise TornShard(f"shard {self.path}: pack {i} is cut short")
        if self.level > 0:
            data = _decompress(data, f"shard {self.path}, pack {i}")
        return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()  # views ``data``: no further copy

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
