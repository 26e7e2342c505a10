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

    The loader reads a block's batches with one sequential scan, about as fast as reading the table in
    order (``random`` reads rows one batch at a time: 2-3x the cost, see benchmarks/RESULTS.md, Streaming).
    The price is mixing, as with MosaicML Streaming's or WebDataset's shard shuffles: a batch holds
    neighbouring packs (each already a mixture of the samples of a group of episodes: the packer shuffles
    before binning) and consecutive batches come from the same block. ``"blocks:64"`` sets the size.
    """
    starts = random(-(-n // size), seed, epoch) * size
    idx = (starts[:, None] + np.arange(size, dtype=np.int64)).ravel()
    return idx[idx < n]


def windows(n: int, seed: int, epoch: int, size: int = 64) -> np.ndarray:
    """Windows of ``size`` consecutive packs in a random order per (seed, epoch), the packs of each window
    in a uniform random order; a short last window stays last, so windows start at multiples of ``size``
    in the order as in the table (steps and shards line up when the sizes divide each other).

    For many nodes with a shard cache (``loaders.cache``) and the ``"nodes:R"`` partition: a node reads the
    shards of the windows its slices of each step cover, not the whole split (MosaicML Streaming's
    ``py1e``/``py1br`` idea: contiguous shard ranges per node, mixing inside a window). ``"windows:256"``.
    """
    k = -(-n // size)
    full = n // size
    starts = np.concatenate([random(full, seed, epoch), np.arange(full, k, dtype=np.int64)]) * size
    rng = np.random.Generator(np.random.PCG64([seed, epoch, size]))
    out = []
    for s in starts.tolist():
        out.append(s + rng.permutation(min(size, n - s)).astype(np.int64))
    return np.concatenate(out) if out else np.empty(0, np.int64)


SHUFFLES: dict[str, Shuffle] = {"none": none, "random": random, "blocks": blocks, "windows": windows}
SIZED = ("blocks", "windows")  # take a size: "blocks:64"


def get_shuffle(name: str) -> Shuffle:
    """The shuffle called ``name``; ``"blocks:64"`` sets the block size. Raises ValueError
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
