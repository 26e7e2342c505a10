"""Bin packing of variable-length samples into packs of at most ``budget`` tokens (a sample is never split).

``bfd`` is exact best-fit-decreasing, vectorized by length: samples are taken longest first, and each goes
to the open pack with the least room that still fits it. Packs with equal room are interchangeable, so
the state is "which packs have r tokens left" (a sorted set of r values, each with a FIFO of packs). A
pack with r left that is best fit for a sample of length L stays best fit for the next samples of length L
until less than L is left, so it takes floor(r / L) of them at once: the work is O(n log n) for the sort
plus O(distinct lengths × distinct rooms) numpy steps, not a Python step per sample.

Registry: ``get_packer(name)``; every packer is ``(lengths, budget, max_per_pack, seed) -> list of index
arrays`` (one per pack), deterministic for a seed, packs in a seeded random order.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from itertools import islice
from typing import Callable

import numpy as np

Packer = Callable[..., list[np.ndarray]]


class SampleTooLong(ValueError):
    """A sample has more tokens than the pack budget."""


def _check(lengths: np.ndarray, budget: int) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if len(lengths) and lengths.min() <= 0:
        raise ValueError(f"sample lengths must be positive (sample {int(np.argmin(lengths))} has {lengths.min()})")
    if len(lengths) and lengths.max() > budget:
        i = int(np.argmax(lengths))
        raise SampleTooLong(f"sample {i} has {lengths[i]} tokens, more than the budget of {budget}")
    return lengths


def _order(lengths: np.ndarray, seed: int) -> np.ndarray:
    """Longest first; ties in a seeded random order (so equal-length samples mix across episodes)."""
    tie = np.random.default_rng(seed).permutation(len(lengths))
    return np.lexsort((tie, -lengths))


def bfd(lengths, budget: int, max_per_pack: int | None = None, seed: int = 0) -> list[np.ndarray]:
    lengths = _check(lengths, budget)
    cap = max_per_pack or max(1, len(lengths))
    order = _order(lengths, seed)
    sorted_len = lengths[order]
    starts = np.flatnonzero(np.r_[True, sorted_len[1:] != sorted_len[:-1]]) if len(lengths) else np.array([], int)
    ends = np.r_[starts[1:], len(sorted_len)]
    rooms: list[int] = []  # sorted distinct remaining capacities of open packs
    by_room: dict[int, deque] = {}  # room -> packs with that room, FIFO
    count = np.zeros(max(16, len(lengths) // 4), dtype=np.int64)  # samples per pack (grown on demand)
    n_packs = 0
    assign = np.empty(len(lengths), dtype=np.int64)  # pack of each sample, in sorted order

    for s, e in zip(starts.tolist(), ends.tolist()):
        L, pos = int(sorted_len[s]), s
        while pos < e:
            left = e - pos
            k = bisect_left(rooms, L)
            if k < len(rooms):  # best fit: the open packs with the least room that fits L
                room = rooms[k]
                queue = by_room[room]
                packs = np.fromiter(islice(queue, left), dtype=np.int64)
            else:  # none fits: open fresh packs
                room = budget
                n_new = -(-left // min(budget // L, cap))
                if n_packs + n_new > len(count):
                    count = np.concatenate([count, np.zeros(max(len(count), n_new), np.int64)])
                packs = np.arange(n_packs, n_packs + n_new)
                n_packs += n_new
            # each pack keeps taking L-samples while it stays the best fit: floor(room / L) of them
            takes = np.minimum(room // L, cap - count[packs])
            cum = np.cumsum(takes)
            used = min(int(np.searchsorted(cum, left)) + 1, len(packs))
            takes = takes[:used]
            takes[-1] -= max(0, int(cum[used - 1]) - left)
            n = int(takes.sum())
            assign[pos:pos + n] = np.repeat(packs[:used], takes)
            pos += n
            count[packs[:used]] += takes
            if room != budget:
                for _ in range(used):
                    queue.popleft()
                if not queue:
                    del by_room[room]
                    rooms.pop(k)
            for p, t in zip(packs[:used].tolist(), takes.tolist()):
                new_room = room - t * L
                if new_room > 0 and count[p] < cap:
                    if new_room not in by_room:
                        by_room[new_room] = deque()
                        insort(rooms, new_room)
                    by_room[new_room].append(p)
    pack_of = np.empty(len(lengths), dtype=np.int64)
    pack_of[order] = assign
    idx = np.argsort(pack_of, kind="stable")
    bounds = np.searchsorted(pack_of[idx], np.arange(n_packs + 1))
    packs = [idx[bounds[i]:bounds[i + 1]] for i in range(n_packs)]
    return [packs[i] for i in np.random.default_rng(seed + 1).permutation(n_packs)]


def sequential(lengths, budget: int, max_per_pack: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Fill packs in the given order (no sorting): the simple streaming baseline."""
    lengths = _check(lengths, budget)
    cap = max_per_pack or len(lengths) or 1
    packs, cur, used = [], [], 0
    for i, L in enumerate(lengths.tolist()):
        if used + L > budget or len(cur) == cap:
            packs.append(np.asarray(cur, dtype=np.int64))
            cur, used = [], 0
        cur.append(i)
        used += L
    if cur:
        packs.append(np.asarray(cur, dtype=np.int64))
    return packs


def padded(lengths, budget: int, max_per_pack: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """No packing: one sample per row (what padding to the max length does)."""
    lengths = _check(lengths, budget)
    return [np.asarray([i]) for i in range(len(lengths))]


PACKERS: dict[str, Packer] = {"bfd": bfd, "sequential": sequential, "padded": padded}


def get_packer(name: str) -> Packer:
    if name not in PACKERS:
        raise KeyError(f"unknown packer {name!r} (have: {', '.join(PACKERS)})")
    return PACKERS[name]


def fill(lengths, packs: list[np.ndarray], budget: int) -> float:
    """Real tokens / (packs × budget)."""
    lengths = np.asarray(lengths)
    return float(sum(lengths[p].sum() for p in packs)) / (len(packs) * budget) if packs else 0.0
