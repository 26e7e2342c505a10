"""The dynamic batcher of a rollout worker: action requests from whichever envs are ready, one forward pass
per batch. Plain asyncio (no Ray), so its batching rules are testable on their own.

A batch is formed when the waiting requests hold ``max_batch_size`` rows, or ``timeout_s`` after the oldest
waiting request arrived, whichever is first; requests are never split, and FIFO order is kept. In
*lockstep* (the synchronous baseline) a batch is formed only once every expected worker has a request
waiting: the global per-step barrier of a classic vectorized rollout.

``pause()`` holds requests (they wait, episodes are not drained); ``resume()`` lets them through; ``stop()``
answers every waiting and future request with ``stop=True``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ActRequest:
    """``obs``: feature -> (n, ...) rows of one env worker; ``seeds`` (n,) one sampling seed per row."""

    worker: int
    obs: dict
    seeds: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class ActReply:
    """Per-row actions (env units), raw samples, behaviour log-probs and values, and the policy version."""

    actions: np.ndarray | None = None
    raw: np.ndarray | None = None
    logprob: np.ndarray | None = None
    value: np.ndarray | None = None
    version: int = -1
    stop: bool = False


STOP = ActReply(stop=True)


@dataclass(frozen=True)
class BatcherStats:
    batches: int
    rows: int
    busy_s: float  # inside the forward pass
    wall_s: float
    mean_batch_rows: float
    max_batch_rows: int
    mean_wait_ms: float  # request arrival -> batch start


class DynamicBatcher:
    """``infer(requests) -> replies`` (same order) runs synchronously on the event loop, one batch at a time."""

    def __init__(self, infer: Callable[[list[ActRequest]], list[ActReply]], max_batch_size: int, timeout_s: float):
        self.infer, self.max_batch_size, self.timeout_s = infer, int(max_batch_size), float(timeout_s)
        self._queue: list[tuple[ActRequest, asyncio.Future, float]] = []
        self._wake = asyncio.Event()
        self._open = True
        self._stopped = False
        self._lockstep: set[int] | None = None
        self._t0 = time.perf_counter()
        self._batches = self._rows = self._max_rows = 0
        self._busy = self._wait = 0.0
        self._served = 0

    # --- control ----------------------------------------------------------------------------------------

    async def submit(self, req: ActRequest) -> ActReply:
        if self._stopped:
            return STOP
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((req, fut, time.perf_counter()))
        self._wake.set()
        return await fut

    def pause(self) -> None:
        """No batch starts until ``resume``. Forward passes are synchronous, so none is running now."""
        self._open = False

    def resume(self) -> None:
        self._open = True
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        for _, fut, _ in self._queue:
            if not fut.done():
                fut.set_result(STOP)
        self._queue.clear()
        self._wake.set()

    def expect(self, workers) -> None:
        """Lockstep: from now on a batch needs one request from each of ``workers``."""
        self._lockstep = set(workers)
        self._wake.set()

    def leave(self, worker: int) -> None:
        """Lockstep: ``worker`` is done for this round (or died); stop waiting for it."""
        if self._lockstep is not None:
            self._lockstep.discard(worker)
            self._wake.set()

    def join(self, worker: int) -> None:
        if self._lockstep is not None:
            self._lockstep.add(worker)

    def stats(self) -> BatcherStats:
        return BatcherStats(self._batches, self._rows, self._busy, time.perf_counter() - self._t0,
                            self._rows / max(self._batches, 1), self._max_rows,
                            1000 * self._wait / max(self._served, 1))

    # --- the loop ---------------------------------------------------------------------------------------

    def _take(self) -> tuple[list, float | None]:
        """(requests to run now, or [] and how long to wait at most before looking again (None: until woken))."""
        if not self._queue or not self._open:
            return [], None
        if self._lockstep is not None:
            waiting = {r.worker for r, _, _ in self._queue}
            if not self._lockstep or not self._lockstep <= waiting:
                return [], None
            take, seen = [], set()
            for item in self._queue:
                if item[0].worker in self._lockstep and item[0].worker not in seen:
                    take.append(item)
                    seen.add(item[0].worker)
            return sorted(take, key=lambda it: it[0].worker), None  # fixed order: reproducible batches
        rows = sum(r.rows for r, _, _ in self._queue)
        due = self._queue[0][2] + self.timeout_s - time.perf_counter()
        if rows < self.max_batch_size and due > 0:
            return [], due
        take, n = [], 0
        for item in self._queue:
            if take and n + item[0].rows > self.max_batch_size:
                break
            take.append(item)
            n += item[0].rows
        return take, None

    async def run(self) -> None:
        """Serve batches until cancelled."""
        while True:
            self._wake.clear()
            take, wait = self._take()
            if not take:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            chosen = {id(it) for it in take}
            self._queue = [it for it in self._queue if id(it) not in chosen]
            start = time.perf_counter()
            try:
                replies = self.infer([r for r, _, _ in take])
            except Exception as e:  # noqa: BLE001 - the callers get the error, the batcher keeps serving
                for _, fut, _ in take:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            end = time.perf_counter()
            rows = sum(r.rows for r, _, _ in take)
            self._batches, self._rows, self._max_rows = self._batches + 1, self._rows + rows, max(self._max_rows, rows)
            self._busy += end - start
            self._wait += sum(start - t for _, _, t in take)
            self._served += len(take)
            for (_, fut, _), rep in zip(take, replies):
                if not fut.done():
                    fut.set_result(rep)
