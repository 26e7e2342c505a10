"""The dynamic batcher: size / timeout / lockstep rules, pause without draining, stop."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from training.rl.batcher import ActReply, ActRequest, DynamicBatcher


def _req(worker, rows=1):
    return ActRequest(worker, {"x": np.full((rows, 1), worker, np.float32)}, np.arange(rows))


class _Recorder:
    def __init__(self):
        self.batches = []

    def __call__(self, reqs):
        self.batches.append([(r.worker, r.rows) for r in reqs])
        return [ActReply(actions=r.obs["x"], version=len(self.batches)) for r in reqs]


def _run(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def _running(**opts):
    """(recorder, batcher) with the batcher's loop running for the block."""
    rec = _Recorder()
    b = DynamicBatcher(rec, **opts)
    task = asyncio.create_task(b.run())
    try:
        yield rec, b
    finally:
        task.cancel()


def test_a_full_batch_goes_without_waiting_for_the_timeout():
    async def main():
        async with _running(max_batch_size=4, timeout_s=10.0) as (rec, b):
            t = time.perf_counter()
            replies = await asyncio.gather(*[b.submit(_req(w, 2)) for w in range(2)])
        return rec, replies, time.perf_counter() - t

    rec, replies, dt = _run(main())
    assert dt < 1.0 and rec.batches == [[(0, 2), (1, 2)]]
    assert [r.actions[0, 0] for r in replies] == [0, 1]  # each caller gets its own rows back


def test_a_partial_batch_goes_at_the_timeout_and_requests_are_never_split():
    async def main():
        async with _running(max_batch_size=4, timeout_s=0.05) as (rec, b):
            t = time.perf_counter()
            await b.submit(_req(0, 1))
            waited = time.perf_counter() - t
            await asyncio.gather(*[b.submit(_req(w, 3)) for w in (1, 2)])  # 3 + 3 > 4: two batches, FIFO
        return rec, waited

    rec, waited = _run(main())
    assert 0.04 <= waited < 1.0
    assert rec.batches == [[(0, 1)], [(1, 3)], [(2, 3)]]


def test_lockstep_waits_for_every_expected_worker_and_orders_rows_by_worker():
    async def main():
        async with _running(max_batch_size=1, timeout_s=0.0) as (rec, b):  # size/timeout do not apply in lockstep
            b.expect([0, 1, 2])
            futs = [asyncio.create_task(b.submit(_req(w))) for w in (2, 0)]
            await asyncio.sleep(0.05)
            early = list(rec.batches)
            b.leave(1)  # worker 1 finished its round: the others go on without it
            await asyncio.gather(*futs)
        return rec, early

    rec, early = _run(main())
    assert early == [] and rec.batches == [[(0, 1), (2, 1)]]


def test_pause_holds_requests_until_resume():
    async def main():
        async with _running(max_batch_size=1, timeout_s=0.0) as (_, b):
            b.pause()
            fut = asyncio.create_task(b.submit(_req(0)))
            await asyncio.sleep(0.05)
            held = not fut.done()
            b.resume()
            rep = await fut
        return held, rep

    held, rep = _run(main())
    assert held and not rep.stop and rep.version == 1


def test_stop_answers_waiting_and_later_requests():
    async def main():
        async with _running(max_batch_size=1, timeout_s=0.0) as (_, b):
            b.pause()
            fut = asyncio.create_task(b.submit(_req(0)))
            await asyncio.sleep(0.01)
            b.stop()
            first, later = await fut, await b.submit(_req(1))
        return first, later

    first, later = _run(main())
    assert first.stop and later.stop
