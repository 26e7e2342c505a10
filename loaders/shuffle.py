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
    ``strata`` reads fewer shards per node there: a node's slices of a window's steps do not wander.
    """
    k = -(-n // size)
    full = n // size
    starts = np.concatenate([random(full, seed, epoch), np.arange(full, k, dtype=np.int64)]) * size
    rng = np.random.Generator(np.random.PCG64([seed, epoch, size]))
    out = []
    for s in starts.tolist():
        out.append(s + rng.permutation(min(size, n - s)).astype(np.int64))
    return np.concatenate(out) if out else np.empty(0, np.int64)


def _radices(g: int) -> list[int]:
    """The prime factors of ``g``, odd ones first (largest first), then the 2s: the digits of the leaves'
    numbering, coarsest first. Odd factors first make every ``odd part x 2**j`` dividing ``g`` a level of
    strata, so a window of ``world_size x batch_packs x 2**c`` packs is stratified for any number of nodes."""
    out, p = [], 2
    while p * p <= g:
        while g % p == 0:
            out.append(p)
            g //= p
        p += 1
    if g > 1:
        out.append(g)
    return sorted(out, key=lambda f: (f == 2, -f))


def _stratified(count: int, m: int, leaf: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` independent stratified orders of ``range(m)``, shape ``(count, m)``.

    ``range(m)`` is cut into ``g`` leaves of ``leaf`` consecutive items; each leaf's items get a uniform random
    rank (round). Round ``q`` visits the ``q``-th item of every leaf, the leaves in a digit-reversed order with
    Owen scrambling (one scramble per order and round): number the leaves in mixed radix with the digits of
    ``_radices(g)`` (coarsest first) and visit ``t = 0, 1, ...`` the leaf whose digits are ``t``'s in reverse
    (the coarsest leaf digit is ``t``'s fastest), each digit permuted at random per value of the digits above
    it. So every aligned run of ``P = r1 x ... x rk`` visits (a product of the first radices) takes one leaf
    from each of the ``P`` aligned groups of ``g / P`` leaves, and a round is a whole number of such runs.
    """
    leaves = -(-m // leaf)
    rounds = min(leaf, m)
    u = np.arange(m, dtype=np.int64)
    of_leaf = u // leaf
    # sorted by (leaf, random): position i still belongs to leaf i // leaf, and its rank in the leaf is i % leaf
    items = np.argsort(of_leaf + rng.random((count, m)), axis=1, kind="stable")
    t = np.arange(leaves, dtype=np.int64)
    visit = np.zeros((count, rounds, leaves), dtype=np.int64)  # visit[c, q, t]: the leaf round q visits t-th
    above = np.zeros(leaves, dtype=np.int64)  # t's digits so far (the leaf's coarser digits), as one number
    below, stride = 1, leaves  # radices used so far (their product), place value of the current leaf digit
    for r in _radices(leaves):
        stride //= r
        digit = (t // below) % r
        if r == 2:  # a random flip per value of the digits above: one integer draw instead of a permutation
            scrambled = digit ^ rng.integers(0, 2, (count, rounds, below), dtype=np.int64)[:, :, above]
        else:
            perms = np.argsort(rng.random((count, rounds, below, r)), axis=3)
            scrambled = perms[:, :, above, digit]
        visit += scrambled * stride
        above, below = above * r + digit, below * r
    at = np.empty_like(visit)  # at[c, q, leaf]: when round q of order c visits that leaf
    np.put_along_axis(at, visit, np.broadcast_to(t, visit.shape), axis=2)
    rank = u % leaf
    key = rank * leaves + at[:, rank, of_leaf]
    return np.take_along_axis(items, np.argsort(key, axis=1, kind="stable"), axis=1)


def strata(n: int, seed: int, epoch: int, size: int = 256, leaf: int = 1) -> np.ndarray:
    """Windows of ``size`` consecutive packs in a random order per (seed, epoch), as ``windows`` (the same
    window order, a short last window last), each window's packs in a *stratified* random order: an aligned
    run of ``P`` packs of a window takes one pack from each aligned block of ``size / P`` packs of it (a random
    one, by a scrambled digit-reversed order, ``_stratified``), for every ``P`` that multiplies the first of
    the prime factors of ``size / leaf``, odd ones first: every power of two when ``size`` is one; 3, 6, 12, ...,
    192 for 192. Inside blocks of ``leaf`` packs the draw is uniform.

    Why: the ``"nodes:R"`` partition gives node ``j`` the ``j``-th slice, in table order, of each global step.
    With ``windows`` those slices wander over the window from step to step, so a node touches (and fetches
    whole shards of) most of the window. Here each step is an even sample of the window, so when the window is
    ``world_size x batch_packs x 2**c`` packs (any number of nodes), node ``j`` reads the same ``size / nodes``
    consecutive packs of the window at every step of it: whole shards, few of them, ``1/nodes`` of the window.
    The order does not depend on the world layout (resume and resizing stay exact); other sizes get nearly
    even strata.
    Mixing is the window's, as with ``windows``: every pack of a window is visited, each step a spread-out
    sample of it. ``"strata:256"``; ``"strata:256/16"`` draws uniformly inside leaves of 16 packs.
    """
    if leaf < 1:
        raise ValueError(f"strata leaf must be >= 1, got {leaf}")
    k, full = -(-n // size), n // size
    starts = random(full, seed, epoch) * size
    rng = np.random.Generator(np.random.PCG64([seed, epoch, size, leaf]))
    parts = [(starts[:, None] + _stratified(full, size, leaf, rng)).ravel()] if full else []
    if k > full:  # the short last window, last (alignment kept)
        parts.append(full * size + _stratified(1, n - full * size, leaf, rng)[0])
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


SHUFFLES: dict[str, Shuffle] = {"none": none, "random": random, "blocks": blocks, "windows": windows,
                                "strata": strata}
SIZED = ("blocks", "windows", "strata")  # take a size: "blocks:64"
LEAFED = ("strata",)  # also a leaf size: "strata:256/16"


def get_shuffle(name: str) -> Shuffle:
    """The shuffle called ``name``; ``"blocks:64"`` sets the block size, ``"strata:256/16"`` the window and
    leaf sizes. Raises ValueError naming the known ones."""
    base, _, arg = name.partition(":")
    size, slash, leaf = arg.partition("/")
    if base not in SHUFFLES or (arg and base not in SIZED) or (slash and base not in LEAFED):
        raise ValueError(f"unknown shuffle {name!r} (known: {sorted(SHUFFLES)}; sized: "
                         f"{', '.join(s + ':N' for s in sorted(SIZED))}; {', '.join(s + ':N/L' for s in LEAFED)})")
    if not arg:
        return SHUFFLES[base]
    if not all(v.isdigit() and int(v) >= 1 for v in ([size, leaf] if slash else [size])):
        raise ValueError(f"shuffle {name!r}: the sizes after ':' must be positive integers")
    kw = {"size": int(size), **({"leaf": int(leaf)} if slash else {})}
    return functools.partial(SHUFFLES[base], **kw)
