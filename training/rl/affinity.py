"""Pinning an actor's process to CPUs (``placement.<actor>.cpus``).

Why: on a small machine whose stages each hold a core (a simulator on one, the learner on the other), letting
the scheduler move them, and the small helpers (rollout inference, the lake writer) land on either core,
costs each stage cache warmth and time slices whenever both cores are busy; the same placement applies in every
mode, so ss and aa run on the same cores. ``os.sched_setaffinity`` acts on one thread, so every thread the
process already has is pinned (Ray starts its own before the actor's ``__init__``), and again after it (Mesa
starts its shader-cache thread with every CPU set, not the creator's); threads started later inherit the set
from the thread that starts them.
"""

from __future__ import annotations

import os


def pin(cpus) -> None:
    """Every thread of this process onto ``cpus`` (OSError naming them if this machine lacks one)."""
    cpus = set(int(c) for c in cpus)
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
        except OSError as e:
            raise OSError(e.errno, f"cannot pin to CPUs {sorted(cpus)} (this machine has "
                                   f"{sorted(os.sched_getaffinity(0))}): {e.strerror}") from None


def affinity() -> list[int]:
    """The CPUs any thread of this process may run on (the union over its threads)."""
    out: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            out |= os.sched_getaffinity(int(tid))
        except ProcessLookupError:
            pass
    return sorted(out)


def pinned(cls, cpus):
    """``cls`` whose instances first pin their process to ``cpus`` (empty: left where the OS puts it) and answer
    ``cpu_affinity()``; same name, so Ray's process titles (``ray::EnvWorker...``) stay the class's."""
    cpus = tuple(int(c) for c in cpus)

    class Pinned(cls):
        def __init__(self, *args, **kwargs):
            if cpus:
                pin(cpus)
            super().__init__(*args, **kwargs)
            if cpus:  # again: a library may start a thread with every CPU set (Mesa's shader-cache writer does)
                pin(cpus)

        def cpu_affinity(self) -> list[int]:
            return affinity()

    Pinned.__name__, Pinned.__qualname__, Pinned.__module__ = cls.__name__, cls.__qualname__, cls.__module__
    return Pinned
