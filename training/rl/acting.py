"""Acting inside the env worker process (``workers.inference: env``): no rollout worker, no Ray hop per step.

With rollout workers, every env step is an actor call (``rollout.act``): ~3 ms of Ray's async-actor overhead per
call on top of the forward pass, and a third process to wake on a small machine, which the scheduler may put on
the learner's core while the simulator's core idles waiting for it. Here the env worker runs the same forward
(``rollout.infer``: same code, so the same actions, raw samples and behaviour log-probs for the same weights,
rows and seeds) on its own core, while it would otherwise wait. One difference: a rollout worker serving several
env workers runs their rows in one forward, and an elementwise op over another batch shape can round an action
1 ulp differently (measured: 3e-5 in PushT's 0-512 units); with one env worker per rollout worker, bit for bit.

What the rollout worker's control calls did reaches the env workers through the trainer's ``ControlBoard``: one
state ``(seq, version, [weights ref], paused, stopped)``, replaced as a whole on every change (publish, ``as``'s
pause / resume, the end of an async run), so no message can overtake another. Each env worker keeps one
long-poll call ``trainer.control(seen)`` outstanding (it returns once the board moves past ``seen``) and, before
each step's forward, checks it without blocking (``ray.wait(timeout=0)``: no actor call): new weights are swapped
in between steps, as the rollout worker swaps them between batches. The semantics per mode:

- ``aa``: the newest published weights, as soon as the worker sees them (the staleness bound is the trainer's);
- ``as``: a worker that sees ``paused`` waits for the resume before its next forward (a step already past its
  check finishes, as a step in flight does with a rollout worker; it acts with the version being trained on);
- ``ss``: each round is started with the version it must use (``require``: the worker blocks until it has it),
  so every step of a round is chosen by that version; with several env workers a ``Lockstep`` actor keeps the
  per-step barrier of a classic synchronous rollout (one call per step, like the rollout path's lockstep batch);
- a restarted worker (new process) reads the board at its first step: the newest weights and pause state.
"""

from __future__ import annotations

import threading
import time

from .batcher import STOP, ActReply, ActRequest, DynamicBatcher
from .policy import acting_keys
from .rollout import BatcherHost, RolloutStats, infer


class ControlBoard:
    """The acting state the trainer publishes to env workers that act themselves (thread-safe)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._state = (-1, -1, None, False, False)  # seq, version, [weights ref], paused, stopped

    def _set(self, **kw) -> None:
        with self._cv:
            seq, version, refs, paused, stopped = self._state
            self._state = (seq + 1, kw.get("version", version), kw.get("refs", refs), kw.get("paused", paused),
                           kw.get("stopped", stopped))
            self._cv.notify_all()

    def publish(self, version: int, refs: list) -> None:
        """``refs``: ``[ObjectRef]`` of the weights (in a list, so Ray passes the reference, not the value)."""
        self._set(version=int(version), refs=refs)

    def pause(self, paused: bool) -> None:
        self._set(paused=bool(paused))

    def halt(self) -> None:
        self._set(stopped=True)

    def control(self, seen: int, timeout_s: float = 10.0) -> tuple:
        """The state once its seq is past ``seen`` (or after ``timeout_s``: the same state, polled again)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._state[0] <= seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return self._state


class LocalActor:
    """The acting policy of one env worker process; ``board``: an actor handle with ``control(seen)`` (the
    trainer); ``barrier``: a ``Lockstep`` actor (``ss`` with several env workers) or None."""

    def __init__(self, spec, board, barrier=None):
        import torch

        torch.set_num_threads(1)  # as the rollout worker: one thread, the simulator's core
        self.policy = spec.build().eval()
        self._acting = acting_keys(self.policy) is not None
        self.board, self.barrier = board, barrier
        self.seq, self.version, self.swaps, self.paused, self.stopped = -1, -1, 0, False, False
        self._poll = None
        self.infer_s = 0.0

    def _apply(self, state) -> None:
        import ray

        seq, version, refs, paused, stopped = state
        if seq <= self.seq:
            return
        self.seq, self.paused, self.stopped = seq, paused, stopped
        if version > self.version:
            self.policy.set_weights(ray.get(refs[0]))
            self.version, self.swaps = version, self.swaps + 1

    def sync(self, block: bool) -> None:
        """Apply the board's newest state if it has arrived (``block``: wait for the next one)."""
        import ray

        if self._poll is None:
            self._poll = self.board.control.remote(self.seq)
        if not block and not ray.wait([self._poll], timeout=0)[0]:
            return
        ref, self._poll = self._poll, None
        self._apply(ray.get(ref))

    def require(self, version: int) -> None:
        """Block until the weights of ``version`` (or newer) are loaded (``ss``: a round's version)."""
        while self.version < version and not self.stopped:
            self.sync(block=True)

    def act(self, req: ActRequest) -> ActReply:
        import ray

        self.sync(block=self.version < 0)  # a new process waits for its first weights
        while self.version < 0 or (self.paused and not self.stopped):
            self.sync(block=True)
        if self.stopped:
            return STOP
        if self.barrier is not None and ray.get(self.barrier.act.remote(ActRequest(req.worker, {}, req.seeds[:1]))).stop:
            return STOP
        t = time.perf_counter()
        reply = infer(self.policy, self._acting, self.version, [req])[0]
        self.infer_s += time.perf_counter() - t
        return reply


class Lockstep(BatcherHost):
    """``ss``'s per-step barrier for env workers that act themselves (a Ray async actor): ``act`` returns once
    every expected worker has arrived at this step (the rollout worker's lockstep batcher, with no forward)."""

    def _new_batcher(self) -> DynamicBatcher:
        batcher = DynamicBatcher(lambda reqs: [ActReply() for _ in reqs], 1, 0.0)
        batcher.expect(())
        return batcher

    async def stats(self) -> RolloutStats:
        return RolloutStats(-1, 0, self._ensure().stats())
