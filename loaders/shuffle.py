"""Epoch orders of the packs of a split: pure functions of (number of packs, seed, epoch).

Each algorithm returns a permutation of ``range(n)`` as int64. ``get_shuffle(name)`` is the one dispatcher.
Packs are already mixtures of random samples (the packer shuffles before binning), so a permutation of
whole packs is all the randomness the loader adds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Shuffle = Callable[[int, int, int], np.ndarray]


def none(n: int, seed: int, epoch: int) -> np.ndarray:
    """Table order, every epoch."""
    return np.arange(n, dtype=np.int64)


def random(n: int, seed: int, epoch: int) -> np.ndarray:
    """A fresh uniform permutation per (seed, epoch), reproducible on any machine (PCG64)."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed} epoch={epoch}")
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n).astype(np.int64)


def blocks(n: int, seed: int, epoch: int, size: int = 8) -> np.ndarray:
    """Runs of ``size`` consecutive packs (table order) in a random order per (seed, epoch).

    Batches then read neighbouring rows (fewer, larger reads: cheaper on object storage and for Lance's
    decoder) at the price of less mixing between the packs of a batch.
    """
    starts = random(-(-n // size), seed, epoch) * size
    idx = (starts[:, None] + np.arange(size, dtype=np.int64)).ravel()
    return idx[idx < n]


SHUFFLES: dict[str, Shuffle] = {"none": none, "random": random, "blocks": blocks}


def get_shuffle(name: str) -> Shuffle:
    """The shuffle called ``name``. Raises ValueError naming the known ones."""
    try:
        return SHUFFLES[name]
    except KeyError:
        raise ValueError(f"unknown shuffle {name!r} (known: {sorted(SHUFFLES)})") from None
