"""Rollout worker (a Ray async actor): serves env workers' action requests through the dynamic batcher.

Weights arrive as ``set_weights(version, weights)`` at any time and are swapped in *between* batches, so
episodes in flight continue under the new version (each step is tagged with the version that chose it) and
nothing is drained. Every reply carries the behaviour log-probs the trainer's importance correction needs; the
behaviour critic's values only where the policy cannot act without its critic (``policy.acting_keys``; the
trainer recomputes values under its own weights, so they are NaN otherwise).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from .batcher import ActReply, ActRequest, BatcherStats, DynamicBatcher
from .policy import acting_keys


@dataclass(frozen=True)
class RolloutStats:
    version: int
    weight_swaps: int
    batcher: BatcherStats


class BatcherHost:
    """The Ray-async-actor side of a ``DynamicBatcher``: created on the actor's event loop at the first call
    (the loop exists only once an async method runs), then every env-worker call forwarded to it. Subclasses
    say how to build it (``_new_batcher``)."""

    batcher: DynamicBatcher | None = None
    _task = None

    def _new_batcher(self) -> DynamicBatcher:
        raise NotImplementedError

    def _ensure(self) -> DynamicBatcher:
        if self.batcher is None:
            self.batcher = self._new_batcher()
            self._task = asyncio.get_running_loop().create_task(self.batcher.run())
        return self.batcher

    async def ready(self) -> bool:
        self._ensure()
        return True

    async def act(self, req: ActRequest) -> ActReply:
        return await self._ensure().submit(req)

    async def stop(self) -> None:
        self._ensure().stop()

    async def expect(self, workers: list[int]) -> None:
        self._ensure().expect(workers)

    async def leave(self, worker: int) -> None:
        self._ensure().leave(worker)

    async def join(self, worker: int) -> None:
        self._ensure().join(worker)


class RolloutWorker(BatcherHost):
    def __init__(self, spec, max_batch_size: int, batch_timeout_ms: float, lockstep: bool = False):
        import torch

        torch.set_num_threads(1)
        self.policy = spec.build().eval()  # its weights come from the trainer (version 0 first)
        # a policy that can act without its critic gets only its acting weights, and is asked for no values
        self._acting = acting_keys(self.policy) is not None
        self.version, self.swaps = -1, 0
        self._pending: tuple[int, dict] | None = None
        self._lockstep = lockstep
        self._cfg = (max_batch_size, batch_timeout_ms / 1000.0)

    def _new_batcher(self) -> DynamicBatcher:
        batcher = DynamicBatcher(self._infer, *self._cfg)
        if self._lockstep:
            batcher.expect(())
        return batcher

    async def set_weights(self, version: int, weights: dict) -> int:
        """Queue weights; the next batch uses them. Older versions than the queued one are ignored."""
        if self._pending is None or version > self._pending[0]:
            self._pending = (int(version), weights)
        if self.version < 0:  # the very first weights: apply now, nothing can be in flight yet
            self._swap()
        return int(version)

    async def pause(self) -> None:
        self._ensure().pause()

    async def resume(self) -> None:
        self._ensure().resume()

    async def stats(self) -> RolloutStats:
        return RolloutStats(self.version, self.swaps, self._ensure().stats())

    def _swap(self) -> None:
        if self._pending is not None and self._pending[0] > self.version:
            self.policy.set_weights(self._pending[1])
            self.version, self.swaps = self._pending[0], self.swaps + 1
        self._pending = None

    def _infer(self, reqs: list[ActRequest]) -> list[ActReply]:
        self._swap()  # between batches: in-flight episodes simply continue under the new version
        if self.version < 0:
            raise RuntimeError("rollout worker has no weights yet (the trainer publishes version 0 first)")
        return infer(self.policy, self._acting, self.version, reqs)


def infer(policy, acting: bool, version: int, reqs: list[ActRequest]) -> list[ActReply]:
    """One forward pass over the requests' rows (``acting``: without the critic, values NaN), split back into
    one reply per request, tagged ``version``. Shared by the rollout worker and the env worker's own acting
    (``training.rl.acting``), so both sample the same actions and log-probs for the same weights and seeds."""
    names = list(reqs[0].obs)
    obs = {n: np.concatenate([r.obs[n] for r in reqs]) for n in names}
    seeds = np.concatenate([r.seeds for r in reqs])
    act = policy.act_with_logprob
    s = act(obs, seeds, value=False) if acting else act(obs, seeds)
    out, start = [], 0
    for r in reqs:
        sl = slice(start, start + r.rows)
        out.append(ActReply(s.actions[sl], s.raw[sl], s.logprob[sl], s.value[sl], version))
        start += r.rows
    return out
