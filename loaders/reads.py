"""Reading a rank's batches from Lance: sorted takes, allow-list scans of ascending runs, read-ahead.

Which read is cheap (measured in benchmarks/RESULTS.md, Streaming): Lance reorders the rows of an unsorted
``take`` with a copy of every column, so a batch's rows are always asked for in table order (the plan sorts
them). Consecutive batches that ascend through the table (``runs``) are read with one scan restricted to
their rows by a row-address allow-list: Lance plans it like a filtered scan, pipelining reads and decodes
over its threads, and hands back one record batch per batch. A block shuffle (``shuffle.blocks``) or none
gives long runs; a uniform one mostly single batches, read with one take each.

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


def _scan_batches(ds, addrs: list[np.ndarray], columns: list[str], filter, batch_size: int) -> Iterator:
    if not addrs:
        return iter(())
    allow = serialize_row_addrs(np.concatenate(addrs).tolist())
    return iter(ds.scanner(columns=columns, row_addr_allowlist=allow, filter=filter, batch_size=batch_size,
                           with_row_address=True, scan_in_order=True).to_batches())


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
