"""Dealing an epoch's pack order to ranks, in steps, so that consumption is always a prefix of the order.

One *global step* takes the next ``world_size * batch_packs`` packs of the order; every rank's batch of that
step comes from them. So after ``k`` steps on every rank the packs consumed are exactly ``order[:k * per]``,
and a checkpoint is one number (MosaicML Streaming's ``sample_in_epoch``): resuming on any world re-deals
``order[consumed:]``. Inside a step, an algorithm decides which rank gets which pack; every algorithm returns,
per position of the order, ``(step, rank)``. Workers of a DataLoader then take every ``num_workers``-th batch
of their rank (``batches_of``), which keeps the rank's order whatever the number of workers.

``get_partition(name)`` is the one dispatcher.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from .world import World

Partition = Callable[[np.ndarray, int, int, int], tuple[np.ndarray, np.ndarray]]


def _steps(n: int, world_size: int, batch_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Global step of each position and its index inside the step."""
    per = world_size * batch_packs
    pos = np.arange(n, dtype=np.int64)
    return pos // per, pos % per


def balanced(tokens: np.ndarray, world_size: int, batch_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the step's packs largest first, dealt in rounds of ``world_size``: in each round the largest
    pack left goes to the rank with the fewest tokens so far (this epoch segment), the next to the next, ...

    ``tokens`` are the packs' token counts in order. Every rank gets ``batch_packs`` packs per full step (the
    last, partial step gives each rank the floor or ceiling of its share). Dealing by running totals keeps
    both each step and the epoch's totals within about one pack's tokens across ranks (greedy LPT under a
    per-step cardinality). Packs never move between steps, which keeps consumption a prefix of the order.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    step, _ = _steps(n, world_size, batch_packs)
    if world_size == 1:
        return step, np.zeros(n, dtype=np.int64)
    by = np.lexsort((np.arange(n), -tokens, step))  # by step, then tokens descending, ties by order
    sorted_tokens = tokens[by]
    rank = np.empty(n, dtype=np.int64)
    totals = np.zeros(world_size, dtype=np.int64)
    for lo in range(0, n, world_size):  # rounds never straddle steps: a step is batch_packs whole rounds
        hi = min(lo + world_size, n)
        ranks = np.argsort(totals, kind="stable")[: hi - lo]
        rank[by[lo:hi]] = ranks
        totals[ranks] += sorted_tokens[lo:hi]
    return step, rank


def interleave(tokens: np.ndarray, world_size: int, batch_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per step, pack ``j`` goes to rank ``j % world_size``: no balancing (reference / debugging)."""
    step, j = _steps(len(tokens), world_size, batch_packs)
    return step, j % world_size


def nodes(tokens: np.ndarray, world_size: int, batch_packs: int, *, packs: np.ndarray,
          node_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the step's packs in table order cut into consecutive slices, one per node of ``node_size``
    ranks (ranks ``r // node_size`` share a node), each slice ``batch_packs`` packs per rank of the node;
    inside a node, ``balanced`` over its ranks (its running totals restart each step). A node thus reads a
    contiguous range of the table per step: with a shard cache and the ``strata`` (or ``windows``) shuffle, about
    ``1/nodes`` of the shards, not all of them (``strata`` keeps a node on the same range of a window at every step).

    ``packs`` are the order's pack numbers (the same positions as ``tokens``). Like every partition it only
    deals inside steps, so consumption stays a prefix of the order and resume on any world is exact.
    Vectorised over all (step, node) slices at once: one numpy pass per round of a node's ranks (about
    ``batch_packs`` rounds), whatever the number of steps and nodes.
    """
    if node_size < 1:
        raise ValueError(f"node_size must be >= 1, got {node_size}")
    tokens, packs = np.asarray(tokens, dtype=np.int64), np.asarray(packs, dtype=np.int64)
    n = len(tokens)
    step, _ = _steps(n, world_size, batch_packs)
    rank = np.zeros(n, dtype=np.int64)
    if n == 0 or world_size == 1:
        return step, rank
    per = world_size * batch_packs
    pos = np.argsort(step * (int(packs.max()) + 1) + packs, kind="stable")  # by step, then table order
    size = np.minimum(per, n - step[pos] * per)  # packs in the position's step
    j = np.arange(n, dtype=np.int64) - step[pos] * per  # index in the step, table order
    share = ((j + 1) * world_size - 1) // size  # rank r's share of a step: j in [r*len//W, (r+1)*len//W)
    node = share // node_size
    first = node * node_size
    ranks = np.minimum(first + node_size, world_size) - first  # ranks of the position's node
    group = step[pos] * -(-world_size // node_size) + node  # one (step, node) slice
    # balanced inside each slice: largest first (ties in table order), in rounds of the node's ranks; the
    # k-th pack of a round goes to the rank with the k-th smallest total so far (ties: lower rank)
    lo, hi = int(tokens.min()), int(tokens.max())  # pos is in (group, j) order: stable keeps ties in table order
    by = np.argsort(group * (hi - lo + 1) + (hi - tokens[pos]), kind="stable")
    g = group[by]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    gid = np.cumsum(np.r_[False, g[1:] != g[:-1]])  # dense slice number
    k = np.arange(n, dtype=np.int64) - starts[gid]
    r_of = ranks[by]
    rnd, slot = k // r_of, k % r_of
    width = min(node_size, world_size)
    totals = np.zeros((len(starts), width), dtype=np.int64)
    totals[np.arange(width)[None, :] >= r_of[starts][:, None]] = np.iinfo(np.int64).max  # no such rank
    for i in range(int(rnd.max()) + 1):
        at = np.flatnonzero(rnd == i)
        least = np.argsort(totals, axis=1, kind="stable")
        rel = least[gid[at], slot[at]]
        totals[gid[at], rel] += tokens[pos[by[at]]]
        rank[pos[by[at]]] = first[by[at]] + rel
    return step, rank


PARTITIONS: dict[str, Partition] = {"balanced": balanced, "interleave": interleave, "nodes": nodes}
SIZED = ("nodes",)  # take the ranks per node: "nodes:8"
WANT_PACKS = ("nodes",)  # also given the order's pack numbers


def get_partition(name: str) -> Partition:
    """The partition called ``name``; ``"nodes:8"`` sets the ranks per node. Raises ValueError naming the
    known ones."""
    base, _, size = name.partition(":")
    if base not in PARTITIONS or (size and base not in SIZED):
        raise ValueError(f"unknown partition {name!r} (known: {sorted(PARTITIONS)}; sized: "
                         f"{', '.join(s + ':N' for s in SIZED)})")
    if not size:
        return PARTITIONS[base]
    if not size.isdigit() or int(size) < 1:
        raise ValueError(f"partition {name!r}: the size after ':' must be a positive integer")

    return functools.partial(PARTITIONS[base], node_size=int(size))


def batches_of(order: np.ndarray, tokens: np.ndarray, world: World, batch_packs: int, partition: str = "balanced",
               skip_steps: int = 0) -> list[np.ndarray]:
    """This rank's and worker's batches (arrays of entries of ``order``), in the order they are yielded; the
    packs of a batch in ascending pack number (table order: Lance reads sorted rows without reordering them,
    and which pack of a batch comes first does not matter to a varlen batch).

    ``order`` is the epoch's order from where this world layout started (pack numbers), ``tokens`` their
    token counts (same order); the first ``skip_steps`` global steps are already consumed. Of the batches
    left, batch ``i`` of the rank goes to worker ``i % num_workers``.
    """
    if batch_packs < 1:
        raise ValueError(f"batch_packs must be >= 1, got {batch_packs}")
    order = np.asarray(order, dtype=np.int64)
    deal = get_partition(partition)
    if partition.partition(":")[0] in WANT_PACKS:
        deal = functools.partial(deal, packs=order)
    step, rank = deal(tokens, world.world_size, batch_packs)
    mine = np.flatnonzero((rank == world.rank) & (step >= skip_steps))  # positions, ascending: steps in order
    if len(mine) == 0:
        return []
    mine = mine[np.lexsort((order[mine], step[mine]))]  # inside a batch, packs in table order: sorted reads
    cuts = np.flatnonzero(np.diff(step[mine])) + 1
    batches = np.split(order[mine], cuts)
    return batches[world.worker::world.num_workers]


def steps_in(n: int, world_size: int, batch_packs: int) -> int:
    """Global steps needed for ``n`` packs."""
    per = world_size * batch_packs
    return -(-n // per)
