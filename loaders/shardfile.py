"""One cached shard on local disk: the packs of a shard, column by column, each piece a zstd frame.

Layout: ``MAGIC | schema length (int64) | schema (Arrow IPC) | frames | offsets (int64, k*F+1) |
sizes (int64, k*F) | big columns (int64, F-1) | checksums (int64, k*F) | boot id (16 bytes) | k | F | level (int64
each) | MAGIC``. Pack ``i`` is ``F``
consecutive frames: frames ``1..F-1`` hold the raw values of its *big* columns: flat ones (``list<T>`` /
``list<fixed_size_list<T>>`` of a number type) holding at least ``BIG_SHARE`` of the shard's bytes (the image
payload), in schema order; frame 0 of pack 0 holds the other columns of every pack of the shard (an Arrow IPC
stream of one record batch of ``k`` rows), frame 0 of the other packs is empty. ``sizes`` are the frames'
decompressed sizes. (A frame per small column would cost more in zstd set-up than it saves; one per pack cost a
parse per pack read, more than reading a PushT pack's image payload: measured.)

Why column frames: a batch of ``k`` packs (``read_batch``) allocates one buffer per flat column and decompresses
each pack's frame straight into its slice, so the batch's columns come out contiguous and the decompression is
the only copy: no per-pack buffers joined afterwards (that join cost as much as the decompression, measured in
benchmarks/RESULTS.md, "Streaming vs MosaicML Streaming"). Level 0 stores frames raw (same layout): they are
``preadv``'d into the slices, one copy from the page cache.

A file is written whole under a temporary name and renamed (``write``), without an fsync: a process killed
mid-write (even ``kill -9``) leaves only the temporary file, and until the machine goes down the page cache
serves every reader the whole file. Only a crash or power loss can leave a renamed file whose frames never reached
the disk, and it also reboots the kernel: so the footer carries the boot id of the kernel that wrote the file
(``/proc/sys/kernel/random/boot_id``) and a checksum of every stored frame. A file of the current boot is served as
is; one of an earlier boot has each frame's checksum verified when it is first opened, and is then stamped with
the current boot id (or, where it cannot be rewritten, remembered by this process), so the check runs once.
``ShardFile`` also checks both magics and the offsets before serving anything: a torn file, a file whose frames
do not match their checksums, and a file of another layout (e.g. ``LKSHARD2``, before checksums, ``LKSHARD3``,
CRC-32, or ``LKSHARD4``, a small-columns frame per pack) are refused (``TornShard``) and fetched again. Where the
kernel has no boot id, files are fsync'ed and stamped ``SYNCED``.

Why XXH3-64 (``xxhash``, stored in 64-bit slots): a checksum is computed for every byte a cold fill writes, and
XXH3 runs at ~20 GB/s on this machine against ~3.9 GB/s for zlib's CRC-32 (``LKSHARD3``: ~9% of a cold epoch's
CPU from a local lake, profiled with perf) and ~0.56 GB/s for BLAKE2b-64 (measured on 64 MiB); a torn frame (zeros
or stale blocks) passes it with probability 2**-64. It guards against torn writes and bit rot, not tampering (the
cache folder is the node's own).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from xxhash import xxh3_64_intdigest

from .batch import READ_COLUMNS, Rows
from .tensors import _NUMPY_BY_ID, list_parts

MAGIC = b"LKSHARD5"
_BOOT = 16  # bytes of the boot id in the footer
_FOOTER = _BOOT + 8 * 3 + len(MAGIC)
SYNCED = b"\xff" * _BOOT  # the boot id of a file fsync'ed before its rename (where the kernel has no boot id)
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
LEVEL = 1  # zstd level chosen by measurement (benchmarks/RESULTS.md, "Streaming vs MosaicML Streaming"): on the
#            PushT packs' payload level 1 compresses at ~590 MB/s to 0.166 of the bytes, 3 at ~400 MB/s to 0.157,
#            decompression ~1.7 GB/s at both. A cold epoch from a local lake is bound by writing the cache, so
#            the faster level wins; 6+ (0.12) would make writing the bottleneck even on a network download.
BIG_SHARE = 0.05
_LIST_ID, _FSL_ID = pa.list_(pa.int8()).id, pa.list_(pa.int8(), 2).id
_LOCAL = threading.local()
_SCHEMAS: dict[bytes, pa.Schema] = {}  # parsed once per process (every open of a shard would parse it again)
_INDEXES: dict[tuple, tuple] = {}  # (path, size) -> (index + footer bytes, what they say)
SMALL_BYTES = 64 * 2**20  # shards' small columns (parsed) a process keeps, least recently used out
_SMALL: "OrderedDict[tuple, list]" = OrderedDict()  # (path, index + footer) -> [small columns parsed, Rows]
_SMALL_HELD = [0]  # bytes in _SMALL
_SMALL_LOCK = threading.Lock()  # read-ahead threads read batches at once


class TornShard(RuntimeError):
    """A shard file whose structure or checksums do not check out (never served)."""


_BOOT_ID: list = []  # this kernel's boot id, read once per process


def boot_id() -> bytes | None:
    """The running kernel's boot id (16 bytes; a new one at every boot), None where the kernel has none."""
    if not _BOOT_ID:
        try:
            _BOOT_ID.append(uuid.UUID(Path(BOOT_ID_FILE).read_text().strip()).bytes)
        except (OSError, ValueError):
            _BOOT_ID.append(None)
    return _BOOT_ID[0]


def _flat(t: pa.DataType) -> tuple[pa.DataType, int] | None:
    """(leaf type, values per list item) of a flat column type, else None."""
    if t.id != _LIST_ID:
        return None
    child = t.value_type
    width = 1
    if child.id == _FSL_ID:
        width, child = child.list_size, child.value_type
    return (child, width) if child.id in _NUMPY_BY_ID else None


def _big(table: pa.Table) -> list[int]:
    """Indices of the columns that get frames of their own (see the module doc)."""
    total = max(1, table.nbytes)
    return [i for i, f in enumerate(table.schema)
            if _flat(f.type) is not None and table.column(i).nbytes >= BIG_SHARE * total]


def checksum(data) -> int:
    """XXH3-64 of ``data`` (bytes or a buffer) as a signed 64-bit integer (the index's slot type)."""
    x = xxh3_64_intdigest(data)
    return x - ((x >> 63) << 64)


def _dctx():
    """This thread's zstd decompressor (making one per frame costs more than a small frame's decompression)."""
    import zstandard

    d = getattr(_LOCAL, "dctx", None)
    if d is None:
        d = _LOCAL.dctx = zstandard.ZstdDecompressor()
    return d


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


class _Kept:
    """``small`` and ``rows`` of a shard in memory (``Frames``) or on disk (``ShardFile``), over ``_kept()``:
    ``[its small columns parsed (a record batch of every pack), their batch.Rows or None]``."""

    def small(self, i: int) -> pa.RecordBatch:
        """Pack ``i``'s small columns: a row of the shard's, parsed once (shared: ``read_batch`` copies them)."""
        return self._kept()[0].slice(i, 1)

    def rows(self) -> "Packs":
        """The shard's packs as ``batch.gathered_batch`` reads them (``Packs``)."""
        kept = self._kept()
        if kept[1] is None:  # (two readers at once may both make them: the same rows either way)
            kept[1] = Rows(kept[0])
        return Packs(self, kept[1])


class Frames(_Kept):
    """A shard prepared in memory: the frames ``write_frames`` stores, readable like an open ``ShardFile``
    (``read_batch`` takes either). A cold fill serves its first reads of a shard from these while the file is
    written behind (``cache``), and the batches are the very ones the file gives: the same frames, assembled
    by the same code. Holds views of ``table``'s big columns (the small ones serialized, one IPC stream for the
    shard); frames are raw whatever the level (compression happens when written)."""

    level = 0

    def __init__(self, table: pa.Table, path="<memory>"):
        self.path, self.schema, self.big = path, table.schema, tuple(_big(table))
        small = [i for i in range(table.num_columns) if i not in self.big]
        # the small columns joined into one record batch (a copy of them alone), serialized once for the shard
        smalls = table.select(small)
        head = memoryview(_ipc(pa.concat_batches(smalls.to_batches()) if smalls.num_rows
                               else pa.RecordBatch.from_pylist([], schema=smalls.schema)))
        self.raw = []  # per pack: its frames
        # row by row through the record batches as they are: a shard cut from a scan's batches spans several,
        # and joining them first (combine_chunks) copied every byte (~0.1-0.2 CPU-s per cold fill of PushT)
        for rb in table.to_batches():
            # each big column's offsets and values read once per record batch, each row a view of them
            parts = [list_parts(rb.column(i), table.schema[i].name) for i in self.big]
            for r in range(rb.num_rows):
                frames = [head if not self.raw else memoryview(b"")]
                for offs, vals in parts:
                    lo, hi = int(offs[r] - offs[0]), int(offs[r + 1] - offs[0])
                    frames.append(memoryview(np.ascontiguousarray(vals[lo:hi])).cast("B"))
                self.raw.append(frames)
        self.sizes = [[len(m) for m in frames] for frames in self.raw]
        self.frames = 1 + len(self.big)
        self.nbytes = sum(map(sum, self.sizes))
        self._small: list | None = None  # see ``_Kept``

    @property
    def packs(self) -> int:
        return len(self.raw)

    def _into(self, i: int, j: int, out: memoryview) -> None:
        out[:] = self.raw[i][j]

    def _kept(self) -> list:
        if self._small is None:  # (two readers at once may both parse it: the same batch either way)
            self._small = [_parse_small(bytearray(self.raw[0][0])), None]
        return self._small

    def close(self) -> None:
        pass


def write(path: Path, table: pa.Table, level: int = LEVEL) -> int:
    """Write ``table``'s rows (one pack each) to ``path`` atomically (see ``write_frames``). Returns the file's
    size in bytes."""
    return write_frames(path, Frames(table, path), level)


def write_frames(path: Path, shard: Frames, level: int = LEVEL, threads: int | None = None,
                 boot: bytes | None = None) -> int:
    """Write a prepared shard to ``path`` atomically: a temporary file in the same folder, renamed (see the module
    doc: no fsync; the footer carries ``boot``, default this kernel's boot id, and each frame's checksum).
    Frames are compressed on ``threads`` threads (default: all cores; zstd releases the GIL), 1: on the calling
    thread, no pool (the node cache's writer threads, which may still be writing while the interpreter exits,
    when thread pools refuse new work). Returns the file's size in bytes."""
    import zstandard

    path = Path(path)
    raws = [m for frames in shard.raw for m in frames]
    sizes = [len(m) for m in raws]

    def compress(m):
        return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(m)

    schema = shard.schema.serialize().to_pybytes()
    if boot is None:
        boot = boot_id()
    sync = boot is None  # no boot id to tell a crash by: the file reaches the disk before it is renamed
    if sync:
        boot = SYNCED
    if len(boot) != _BOOT:
        raise ValueError(f"a boot id is {_BOOT} bytes, got {len(boot)}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    threads = (os.cpu_count() or 1) if threads is None else int(threads)
    pool = ThreadPoolExecutor(max_workers=threads) if level > 0 and threads > 1 else None
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + np.int64(len(schema)).tobytes() + schema)
            offsets, sums = [f.tell()], []
            frames = raws if level == 0 else map(compress, raws) if pool is None else pool.map(compress, raws)
            for fr in frames:  # written in order, as they come
                f.write(fr)
                sums.append(checksum(fr))
                offsets.append(f.tell())
            f.write(np.asarray(offsets + sizes + list(shard.big) + sums, dtype="<i8").tobytes())
            f.write(boot + np.asarray([shard.packs, shard.frames, level], dtype="<i8").tobytes() + MAGIC)
            f.flush()
            if sync:
                os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)  # readers see no file or the whole file
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if tmp.exists():
            tmp.unlink()
    return size


def _decompress_into(frame: bytes, out: memoryview, what: str) -> None:
    """A zstd frame decompressed straight into ``out`` (exactly its size)."""
    import zstandard

    if zstandard.frame_content_size(frame) != len(out):
        raise TornShard(f"{what}: the frame does not hold the {len(out)} bytes the index says")
    done = 0
    with _dctx().stream_reader(frame) as r:
        while done < len(out):
            n = r.readinto(out[done:])
            if n == 0:
                raise TornShard(f"{what}: the frame ends after {done} of {len(out)} bytes")
            done += n


class ShardFile(_Kept):
    """An open shard: ``read(i)`` is pack ``i`` as a record batch; ``read_batch`` reads several packs (of
    several shards) as one.

    Holds the file descriptor, so the file may be evicted (unlinked) meanwhile: reads go on. Raises
    TornShard when the file's structure is damaged or of another layout, or when a file of an earlier boot
    fails its checksums (see the module doc)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(self.fd).st_size
            key = (str(self.path), size)
            known = _INDEXES.get(key)  # a shard is opened for every batch that reads it: parse (and, from an
            # earlier boot, verify) it once, and later only check that its index and footer are still those bytes
            if known is None or os.pread(self.fd, len(known[0]), size - len(known[0])) != known[0]:
                known = self._parse(size)
                if len(_INDEXES) >= 4096:
                    _INDEXES.clear()
                _INDEXES[key] = known
            _, self.size, self.level, self.schema, self.offsets, self.sizes, self.big, self.frames = known
            self._key = (str(self.path), known[0])
        except BaseException:
            os.close(self.fd)
            raise

    def _parse(self, size: int) -> tuple:
        if size < len(MAGIC) + 8 + _FOOTER:
            raise TornShard(f"shard {self.path} is {size} bytes: too short")
        head = os.pread(self.fd, len(MAGIC) + 8, 0)
        tail = os.pread(self.fd, _FOOTER, size - _FOOTER)
        boot, tail = tail[:_BOOT], tail[_BOOT:]
        k, F, level = (int(v) for v in np.frombuffer(tail[:24], "<i8"))
        n_schema = int(np.frombuffer(head[len(MAGIC):], "<i8")[0])
        index = 8 * (3 * k * F + F)
        start = size - _FOOTER - index
        if (head[:len(MAGIC)] != MAGIC or tail[24:] != MAGIC or k < 0 or F < 1 or n_schema < 0
                or start < len(MAGIC) + 8 + n_schema):
            raise TornShard(f"shard {self.path} is damaged or of another layout (magic or footer)")
        raw = os.pread(self.fd, n_schema, len(MAGIC) + 8)
        schema = _SCHEMAS.get(raw)
        if schema is None:
            schema = pa.ipc.read_schema(pa.py_buffer(raw))
            if len(_SCHEMAS) < 64:
                _SCHEMAS[raw] = schema
        idx = np.frombuffer(os.pread(self.fd, index, start), "<i8")
        offsets, sizes = idx[:k * F + 1], idx[k * F + 1:k * F + 1 + k * F].reshape(k, F)
        big = tuple(int(c) for c in idx[2 * k * F + 1:2 * k * F + F])
        sums = idx[2 * k * F + F:]
        if (offsets[0] != len(MAGIC) + 8 + n_schema or offsets[-1] != start or np.any(np.diff(offsets) < 0)
                or np.any(sizes < 0) or any(not 0 <= c < len(schema) or _flat(schema[c].type) is None for c in big)):
            raise TornShard(f"shard {self.path} is damaged (offsets)")
        if boot not in (boot_id(), SYNCED):  # written before the last boot: a crash may have torn it
            self._verify(offsets, sums)
            self._stamp(size)
        return os.pread(self.fd, index + _FOOTER, start), size, level, schema, offsets.tolist(), sizes.tolist(), big, F

    def _verify(self, offsets: np.ndarray, sums: np.ndarray) -> None:
        """Every stored frame against its checksum; TornShard on the first that differs."""
        for j in range(len(offsets) - 1):
            lo, hi = int(offsets[j]), int(offsets[j + 1])
            data = os.pread(self.fd, hi - lo, lo)
            if len(data) != hi - lo or checksum(data) != int(sums[j]):
                raise TornShard(f"shard {self.path} (written before the last boot): frame {j} does not match its "
                                "checksum")

    def _stamp(self, size: int) -> None:
        """Mark a verified file as of this boot, so no process verifies it again (until the next boot). Written
        through a descriptor of the same file (a refetch may have replaced the name meanwhile); where that is
        refused (a read-only cache), this process remembers it instead (``_INDEXES``)."""
        now = boot_id()
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return
        try:
            mine, theirs = os.fstat(self.fd), os.fstat(fd)
            if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
                return
            if now is None:  # no boot id to stamp: on disk now, for good
                os.fsync(fd)
                now = SYNCED
            os.pwrite(fd, now, size - _FOOTER)
        except OSError:
            pass
        finally:
            os.close(fd)

    @property
    def packs(self) -> int:
        return len(self.sizes)

    def _frame(self, i: int, j: int) -> bytes:
        lo, hi = self.offsets[i * self.frames + j], self.offsets[i * self.frames + j + 1]
        data = os.pread(self.fd, hi - lo, lo)
        if len(data) != hi - lo:
            raise TornShard(f"shard {self.path}: pack {i} is cut short")
        return data

    def _into(self, i: int, j: int, out: memoryview) -> None:
        """Frame ``j`` of pack ``i`` into ``out`` (its decompressed size)."""
        what = f"shard {self.path}, pack {i}"
        if self.level > 0:
            _decompress_into(self._frame(i, j), out, what)
        elif len(out) and os.preadv(self.fd, [out], self.offsets[i * self.frames + j]) != len(out):
            raise TornShard(f"{what} is cut short")

    def _kept(self) -> list:
        """See ``_Kept``: parsed once per process while the file's index and footer are these bytes (they hold
        every frame's checksum: the same index, the same frames), up to ``SMALL_BYTES`` of shards, least
        recently used out."""
        with _SMALL_LOCK:
            kept = _SMALL.get(self._key)
            if kept is not None:
                _SMALL.move_to_end(self._key)
                return kept
        raw = bytearray(self.sizes[0][0])
        self._into(0, 0, memoryview(raw))
        head = _parse_small(raw)
        if head.num_rows != self.packs:
            raise TornShard(f"shard {self.path}: its small columns hold {head.num_rows} packs, not {self.packs}")
        with _SMALL_LOCK:
            kept = _SMALL.get(self._key)
            if kept is None:
                kept = _SMALL[self._key] = [head, None]
                _SMALL_HELD[0] += head.nbytes
            while _SMALL_HELD[0] > SMALL_BYTES and len(_SMALL) > 1:
                _, old = _SMALL.popitem(last=False)
                _SMALL_HELD[0] -= old[0].nbytes
        return kept

    def read(self, i: int) -> pa.RecordBatch:
        return read_batch([(self, i)])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Piece:
    """One pack's values of a big column, still in its frame: ``into(out)`` reads them into ``out`` (an array of
    ``shape`` and ``dtype``, contiguous: a slice of a batch's one buffer), decompressing if need be."""

    __slots__ = ("shard", "i", "j", "shape", "dtype")

    def __init__(self, shard, i: int, j: int, dtype: np.dtype, width: int | None):
        size = shard.sizes[i][j]
        unit = dtype.itemsize * (width or 1)
        if size % unit:
            raise TornShard(f"shard {shard.path}: pack {i}, frame {j} holds {size} bytes, not whole items of {unit}")
        self.shard, self.i, self.j, self.dtype = shard, i, j, dtype
        self.shape = (size // unit,) if width is None else (size // unit, width)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def into(self, out: np.ndarray) -> None:
        self.shard._into(self.i, self.j, memoryview(out.reshape(-1).view(np.uint8)))


class Packs:
    """A shard's packs as ``batch.gathered_batch`` reads them (like ``batch.Rows``): the small columns as the
    ``Rows`` of its small-columns frame (kept per process: ``gathered_batch`` copies from them, never hands them
    out), the big ones as ``Piece``s still in their frames, read straight into the batch's buffer. Valid while the
    shard is open."""

    __slots__ = ("num_rows", "lists", "prims", "episodes", "schema", "big", "_shard")

    def __init__(self, shard, rows: Rows):
        self.num_rows, self.lists, self.prims, self.episodes = rows.num_rows, rows.lists, rows.prims, rows.episodes
        self.schema, self._shard = shard.schema, shard
        self.big = {shard.schema[c].name: (j, c) for j, c in enumerate(shard.big, start=1)}

    @property
    def gatherable(self) -> bool:
        """Whether ``gathered_batch`` can build from these (no column it reads lies in a big frame; else
        ``read_batch``)."""
        return not READ_COLUMNS.intersection(self.big)

    def pieces(self, name: str, start: int, count: int) -> list[Piece]:
        j, c = self.big[name]
        leaf, width = _flat(self.schema[c].type)
        fixed = self.schema[c].type.value_type.id == _FSL_ID
        dtype = np.dtype(_NUMPY_BY_ID[leaf.id])
        return [Piece(self._shard, i, j, dtype, width if fixed else None) for i in range(start, start + count)]


def _parse_small(raw: bytearray) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(raw)).read_next_batch()


def read_batch(items: list[tuple[ShardFile, int]]) -> pa.RecordBatch:
    """Packs ``(shard, i)`` as one record batch, in that order; every flat column one fresh contiguous buffer
    (the decompression writes it: the only copy). The shards must share a schema."""
    first = items[0][0]
    schema, flat = first.schema, first.big
    for f, _ in items:
        if f.schema is not schema and f.schema != schema:
            raise TornShard(f"shard {f.path} has another schema than {first.path}")
        if f.big != flat:  # shards that split their columns differently: pack by pack, then joined (a copy)
            return pa.concat_batches([read_batch([(f, i)]) for f, i in items])
    # copied into new buffers, so the parsed small columns a process keeps are never handed out (a user may write
    # into a batch's tensors): joined, or taken for a batch of one pack
    rests = [f.small(i) for f, i in items]
    rest = pa.concat_batches(rests) if len(rests) > 1 else rests[0].take(pa.array([0]))
    columns: list = [None] * len(schema)
    for name, col in zip(rest.schema.names, rest.columns):
        columns[schema.get_field_index(name)] = col
    for j, c in enumerate(flat, start=1):
        leaf_type, width = _flat(schema[c].type)
        sizes = [f.sizes[i][j] for f, i in items]
        buf = pa.allocate_buffer(sum(sizes))  # Arrow's allocator reuses freed memory: no page faults per batch
        view, at = memoryview(buf).cast("B"), 0
        for (f, i), n in zip(items, sizes):
            f._into(i, j, view[at:at + n])
            at += n
        itemsize = _NUMPY_BY_ID[leaf_type.id].itemsize
        leaf = pa.Array.from_buffers(leaf_type, buf.size // itemsize, [None, buf])
        child = pa.FixedSizeListArray.from_arrays(leaf, width) if schema[c].type.value_type.id == _FSL_ID else leaf
        counts = np.asarray(sizes, np.int64) // (itemsize * width)
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32), pa.int32())
        columns[c] = pa.ListArray.from_arrays(offsets, child, type=schema[c].type)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
