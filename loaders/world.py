"""Where this reader sits: rank among ``world_size`` training processes, worker among a DataLoader's workers.

A ``World`` is a value (MosaicML Streaming style) so the ordering code never calls torch.distributed itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class World:
    """Rank / world size of the training processes and worker / num_workers inside one rank."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={self.rank} world_size={self.world_size}")
        if self.num_workers < 1 or not 0 <= self.worker < self.num_workers:
            raise ValueError(f"need 0 <= worker < num_workers, got worker={self.worker} num_workers={self.num_workers}")

    def with_worker(self, worker: int, num_workers: int) -> "World":
        return replace(self, worker=worker, num_workers=num_workers)


def detect(rank: int | None = None, world_size: int | None = None) -> World:
    """Fill what is not given from torch.distributed (when initialized), then $RANK / $WORLD_SIZE, then 0 / 1."""
    if rank is None or world_size is None:
        dist_rank, dist_size = _from_torch()
        if dist_size is None:
            dist_rank = _env_int("RANK")
            dist_size = _env_int("WORLD_SIZE")
        rank = dist_rank if rank is None else rank
        world_size = dist_size if world_size is None else world_size
    return World(rank=int(rank or 0), world_size=int(world_size or 1))


def _from_torch() -> tuple[int | None, int | None]:
    import sys

    if "torch" not in sys.modules:  # torch.distributed cannot be initialized without torch imported
        return None, None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None, None


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {v!r}") from None
