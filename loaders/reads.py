"""Reading a rank's batches from Lance: sorted takes, allow-list scans of ascending runs and of groups of
batches, read-ahead.

Which read is cheap (measured in benchmarks/RESULTS.md, Streaming): Lance reorders the rows of an unsorted
``take`` with a copy of every column, so a batch's rows are always asked for in table order (the plan sorts
them). Consecutive batches that ascend through the table (``runs``) are read with one scan restricted to
their rows by a row-address allow-list: Lance plans it like a filtered scan, pipelining reads and decodes
over its threads, and hands back one record batch per batch. A block shuffle (``shuffle.blocks``) or none
gives long runs; a uniform one mostly single batches. Those are read in groups (``Group``): one allow-list
scan of all the rows of up to ``GROUP_BYTES`` of consecutive batches, each batch then gathered from it
straight into its tensors' one buffer (``batch.gathered_batch``: one copy). A Lance call costs far more than
its bytes: a take of one 4-pack batch pays ~1 ms per column (measured; 16 columns) where the group's scan
pays that once for dozens of batches. A lone batch is one take.

A scan is lazy (memory does not grow with a run's length) and resumable: after a transient I/O error it
backs off and scans what is left of its run, so nothing is lost or read twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

import numpy as np
import pyarrow as pa
from lance.dataset import serialize_row_addrs

from . import retry as _retry
from .batch import Rows
from .retry import Backoff, retrying, transient

T = TypeVar("T")


def runs(batches: list[np.ndarray], batch_packs: int) -> Iterator[list[np.ndarray]]:
    """Consecutive batches, grouped into runs one scan returns in order, batch after batch: inside a run
    every batch is sorted, starts above the end of the one before, and all but the last have
    ``batch_packs`` packs (a scan's batches all have one size, the last excepted)."""
    run: list[np.ndarray] = []
    for b in batches:
        ascending = len(b) > 0 and bool(np.all(b[1:] > b[:-1]))
        fits = (ascending and bool(run) and len(run[-1]) == batch_packs and int(b[0]) > int(run[-1][-1])
                and (len(run) > 1 or bool(np.all(run[0][1:] > run[0][:-1]))))
        if run and not fits:
            yield run
            run = []
        run.append(b)
    if run:
        yield run


def take(ds, rows: np.ndarray, columns: list[str], what: str, backoff: Backoff) -> pa.Table:
    """Rows ``rows`` (table positions, in that order) with one Lance take, retried on transient errors."""
    return retrying(lambda: ds.take(rows, columns=columns), f"reading {what}", backoff)


def scan(ds, rows: list[np.ndarray], addrs: list[np.ndarray], columns: list[str], filter, what: str,
         backoff: Backoff) -> Iterator[pa.Table]:
    """One table per batch of a run (``rows``: table positions, ``addrs``: row addresses, both ascending
    from batch to batch), in order: a batch inside one fragment from one scan of all such batches restricted
    to their rows, a batch that straddles two fragments with a take. On a transient error, backs off and
    goes on from the first batch not yet handed out.

    Why the takes: Lance's scan batching restarts at every fragment, so after a straddling batch every record
    batch would hold the end of one batch and the start of the next (each a copy to join);
    ``strict_batch_size`` rebatches inside Lance but cost 15-20% of the whole scan (measured). Without the
    straddlers, each fragment's rows are whole batches and every record batch is exactly one batch (rows
    split otherwise are still joined, with a counted copy). ``filter`` must hold on every row; it is there for
    speed: with a filter Lance reads the selected rows of the other columns by position (late
    materialization), without one whole pages of every column, 3x the time for a dense selection (measured)."""
    straddles = [len(a) > 0 and (int(a[0]) >> 32) != (int(a[-1]) >> 32) for a in addrs]
    done, failures = 0, 0
    while done < len(addrs):
        try:
            batches = _scan_batches(ds, [a for a, st in zip(addrs[done:], straddles[done:]) if not st], columns,
                                    filter, batch_size=max(len(a) for a in addrs))
            pieces: list[pa.RecordBatch] = []  # rows read but not handed out yet: the start of batch ``done``
            while done < len(addrs):
                if straddles[done]:
                    table = ds.take(rows[done], columns=columns)
                else:
                    while sum(p.num_rows for p in pieces) < len(addrs[done]):
                        rb = next(batches, None)
                        if rb is None:
                            raise RuntimeError(f"scan of {what} ended before batch {done} of {len(addrs)}")
                        pieces.append(rb)
                    need = len(addrs[done]) - sum(p.num_rows for p in pieces[:-1])
                    last = pieces[-1]
                    table = _checked(pieces[:-1] + [last.slice(0, need)], addrs[done], what)
                    pieces = [last.slice(need)] if need < last.num_rows else []
                yield table
                done += 1
        except Exception as e:  # noqa: BLE001 - classified just below
            if not transient(e):
                raise
            if failures == backoff.attempts - 1:
                raise OSError(f"reading {what}: still failing after {backoff.attempts} tries: {e}") from e
            _retry.STATS["retries"] += 1
            time.sleep(backoff.delay(failures))
            failures += 1


GROUP_BYTES = 32 << 20  # a group's rows, Arrow bytes, at most (once a first group has said what a pack weighs)
GROUP_ROWS = 8  # rows per record batch of a group's scan: small buffers, reused by the allocator (big ones fault)


def group_sizes(batch_packs: int, pack_bytes: Callable[[], float | None]) -> Iterator[int]:
    """How many batches each next group may take: 1, 2, 4, ... (the first batch comes after one take, as
    without groups), doubling up to what fits ``GROUP_BYTES`` at ``pack_bytes()`` (the mean Arrow bytes of a
    pack read so far; None before any read: no cap yet, the doubling is the bound). Endless."""
    size = 1
    while True:
        per = pack_bytes()
        cap = max(1, int(GROUP_BYTES // (per * batch_packs))) if per else size
        yield min(size, cap)
        size = min(size * 2, cap * 2)


class Gathered:
    """A batch's rows as they lie in a group's record batches: ``picks``, ``(batch.Rows, first row, count)`` in
    batch order; ``batch.gathered_batch`` copies them into the batch's one buffer (the only copy)."""

    __slots__ = ("picks",)

    def __init__(self, picks: list[tuple[Rows, int, int]]):
        self.picks = picks


class Group:
    """Consecutive batches (``rows``: table positions, ``addrs``: row addresses, each sorted) read with one
    allow-list scan of all their rows, in table order, on first use (or ``prime``); ``get(k)`` says where batch
    ``k``'s rows lie in it (a ``Gathered``: they lie apart in the table, so building the batch is one copy; a
    table view when they are neighbours in one record batch) and the scan's record batches are dropped once
    every batch is handed out. A group of one batch is a take (no copy on this side).
    Thread-safe; a failed read is retried (``retrying``) and an error is raised again by every later ``get``.
    ``source``: how rows are read, ``(take(rows) -> Table, scan(sorted addresses) -> [RecordBatch with
    _rowaddr])``: ``lance_source`` in a process that may use Lance, a helper process's otherwise (``forks``).
    ``on_read(rows, nbytes)`` hears what each read returned (for ``group_sizes``)."""

    def __init__(self, source: tuple[Callable, Callable], rows: list[np.ndarray], addrs: list[np.ndarray], what: str,
                 backoff: Backoff, on_read: Callable[[int, int], None] | None = None):
        (self._take, self._scan_rows), self.rows, self.addrs, self.what = source, rows, addrs, what
        self.backoff, self.on_read = backoff, on_read
        self._lock, self._read, self._error, self._left = threading.Lock(), None, None, len(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self):
        if self._error is not None:
            raise self._error
        if self._read is None:
            try:
                if len(self.rows) == 1:
                    self._read = retrying(lambda: self._take(self.rows[0]), f"reading {self.what}", self.backoff)
                    n, nbytes = self._read.num_rows, self._read.nbytes
                else:
                    self._read = retrying(self._scan, f"reading {self.what}", self.backoff)
                    n, nbytes = len(self._read[2]), sum(rb.nbytes for rb in self._read[0])
            except BaseException as e:
                self._error = e
                raise
            if self.on_read is not None:
                self.on_read(n, nbytes)
        return self._read

    def _scan(self):
        """(record batches of all the group's rows in table order, their ``batch.Rows`` (numpy views, made here
        on the reading thread), the rows' addresses, where each record batch starts)."""
        want = np.unique(np.concatenate(self.addrs))
        rbs = self._scan_rows(want)
        got = np.concatenate([rb.column("_rowaddr").to_numpy() for rb in rbs]) if rbs else np.empty(0, np.uint64)
        if not np.array_equal(got, want):
            raise RuntimeError(f"scan of {self.what} returned {len(got)} rows, not the {len(want)} asked for")
        rbs = [rb.drop_columns(["_rowaddr"]) for rb in rbs]
        return rbs, [Rows(rb) for rb in rbs], want, np.cumsum([0] + [rb.num_rows for rb in rbs])

    def prime(self) -> None:
        """Read the group now (if nobody has yet); an error is kept for ``get`` to raise."""
        with self._lock:
            try:
                self._load()
            except Exception:  # noqa: BLE001 - kept in self._error, raised by get
                pass

    def get(self, k: int) -> pa.Table | Gathered:
        with self._lock:
            read = self._load()
            self._left -= 1
            if self._left == 0:
                self._read = None  # the caller holds what it needs
        if len(self.rows) == 1:
            return read
        rbs, parts, addrs, starts = read
        pos = np.searchsorted(addrs, self.addrs[k])
        which = np.searchsorted(starts, pos, side="right") - 1
        picks, i = [], 0
        while i < len(pos):  # neighbouring rows of one record batch in one slice
            j = i + 1
            while j < len(pos) and which[j] == which[i] and pos[j] == pos[j - 1] + 1:
                j += 1
            picks.append((int(which[i]), int(pos[i] - starts[which[i]]), j - i))
            i = j
        if len(picks) == 1:  # a single piece stays a view of the scan's record batch
            w, start, count = picks[0]
            return pa.Table.from_batches([rbs[w].slice(start, count)])
        return Gathered([(parts[w], start, count) for w, start, count in picks])


def lance_source(ds, columns: list[str]) -> tuple[Callable, Callable]:
    """How a ``Group`` reads ``columns`` of ``ds`` in this process: a take, and an allow-list scan of sorted row
    addresses in record batches of ``GROUP_ROWS`` with their ``_rowaddr`` (Lance's I/O buffering bounded by
    ``GROUP_BYTES`` too: its default is far larger)."""
    return (lambda rows: ds.take(rows, columns=columns),
            lambda addrs: list(_scan_batches(ds, [addrs], columns, None, GROUP_ROWS, io_buffer_size=GROUP_BYTES)))


def _scan_batches(ds, addrs: list[np.ndarray], columns: list[str], filter, batch_size: int, **options) -> Iterator:
    if not addrs:
        return iter(())
    allow = serialize_row_addrs(np.concatenate(addrs).tolist())
    return iter(ds.scanner(columns=columns, row_addr_allowlist=allow, filter=filter, batch_size=batch_size,
                           with_row_address=True, scan_in_order=True, **options).to_batches())


def _checked(pieces: list[pa.RecordBatch], want: np.ndarray, what: str) -> pa.Table:
    """The batch's table (without the row addresses), after checking they are the rows asked for. Several
    pieces make a table of several chunks, which ``packed_batch`` joins (a counted copy)."""
    got = np.concatenate([p.column("_rowaddr").to_numpy() for p in pieces])
    if not np.array_equal(got, want):
        raise RuntimeError(f"scan of {what} returned rows at {got.tolist()}, expected {want.tolist()}")
    return pa.Table.from_batches([p.drop_columns(["_rowaddr"]) for p in pieces])


class Ordered:
    """Items of an iterator by index, from any thread: ``get(k)`` returns item ``k``, advancing the
    iterator (under a lock) as far as needed. Each item is handed out once and then forgotten; an error
    from the iterator is raised again by every later ``get``."""

    def __init__(self, it: Iterator):
        self._it, self._lock, self._ready, self._next, self._error = it, threading.Lock(), {}, 0, None

    def _advance(self) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._ready[self._next] = next(self._it)
        except StopIteration:
            self._error = RuntimeError(f"the iterator ended after {self._next} items")
            raise self._error from None
        except BaseException as e:
            self._error = e
            raise
        self._next += 1

    def get(self, k: int):
        with self._lock:
            while k not in self._ready:
                self._advance()
            return self._ready.pop(k)

    def prime(self) -> None:
        """Read item 0 ahead (if nobody has yet), so that a later ``get(0)`` finds it ready; an error is
        kept for ``get`` to raise."""
        with self._lock:
            if self._next == 0 and self._error is None:
                try:
                    self._advance()
                except Exception:  # noqa: BLE001 - kept in self._error, raised by get
                    pass


def read_ahead(units: Iterator[Callable[[], T]], prefetch: int) -> Iterator[T]:
    """``unit()`` for every unit, in order, with up to ``prefetch`` units running ahead on threads."""
    if prefetch == 0:
        for unit in units:
            yield unit()
        return
    pool = ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="loaders-read")
    pending: deque = deque()
    try:
        for unit in units:
            pending.append(pool.submit(unit))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
