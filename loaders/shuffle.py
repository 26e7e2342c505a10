"""Epoch orders of the packs of a split: pure functions of (number of packs, seed, epoch).

Each algorithm returns a permutation of ``range(n)`` as int64. ``get_shuffle(name)`` is the one dispatcher.
Packs are already mixtures of random samples (the packer shuffles before binning), so a permutation of
whole packs is all the randomness the loader adds.
"""

from __future__ import annotations

import functools
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


def window(n: int, seed: int, epoch: int, size: int = 64) -> np.ndarray:
    """The uniform permutation of ``random``, each window of ``size`` consecutive entries sorted.

    Every window is a uniform random subset of the split, read in table order: batches of neighbouring
    windows entries come from one scan of ascending rows (the reads a sequential scan makes, with gaps),
    which Lance pipelines as fast as a full scan. The price is mixing inside a window: a batch's packs are
    neighbours among the window's (in a table of ``n`` packs, within about ``n * batch / size`` rows of each
    other), and a window's batches sweep the table from its start to its end. MosaicML Streaming's shard
    windows and WebDataset's shard shuffles trade the same; ``random`` does not.
    """
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    order = random(n, seed, epoch)
    full = n - n % size
    order[:full] = np.sort(order[:full].reshape(-1, size), axis=1).ravel()
    order[full:] = np.sort(order[full:])
    return order


SHUFFLES: dict[str, Shuffle] = {"none": none, "random": random, "blocks": blocks, "window": window}
SIZED = ("blocks", "window")  # take a size: "window:128"


def get_shuffle(name: str) -> Shuffle:
    """The shuffle called ``name``; ``"window:128"`` / ``"blocks:16"`` set the size. Raises ValueError
    naming the known ones."""
    base, _, size = name.partition(":")
    if base not in SHUFFLES or (size and base not in SIZED):
        raise ValueError(f"unknown shuffle {name!r} (known: {sorted(SHUFFLES)}; sized: "
                         f"{', '.join(s + ':N' for s in sorted(SIZED))})")
    if not size:
        return SHUFFLES[base]
    if not size.isdigit() or int(size) < 1:
        raise ValueError(f"shuffle {name!r}: the size after ':' must be a positive integer")
    return functools.partial(SHUFFLES[base], size=int(size))
