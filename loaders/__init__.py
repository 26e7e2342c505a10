"""loaders: packed tables -> torch, and lake frames -> LeRobot-style items.

    import lake
    lk = lake.open("./my_lake")
    loader = lk.stream("train", batch_packs=2, seed=0)     # = loaders.stream(lk, "train", ...)
    for batch in loader:                                    # PackedBatch: views of the Arrow buffers
        ...
        ckpt = loader.state_dict()                          # a handful of numbers; load_state_dict resumes

- ``stream`` / ``Loader``: shuffled (``shuffle``), sharded over ranks and DataLoader workers (``partition``,
  ``World``), resumable, retrying reads on object storage (``retry``); ``cache_dir=`` reads a local copy of the
  split (``cache``).
- ``ray_dataset`` / ``packed_batches``: the same packs as a Ray Data dataset, for Ray Train.
- ``LeRobotStyleDataset``: unpacked frames with LeRobotDataset's ``delta_timestamps`` semantics and ``meta``; fast
  on frames decoded once by ``lk.decode_videos()``.
"""

from .batch import PackedBatch, packed_batch
from .lerobot import LeRobotStyleDataset
from .loader import Loader, stream
from .packings import PackedSource, PackedTableNotFound, resolve
from .partition import get_partition
from .raydata import packed_batches, ray_dataset
from .shuffle import get_shuffle
from .world import World

__all__ = [
    "LeRobotStyleDataset", "Loader", "PackedBatch", "PackedSource", "PackedTableNotFound", "World", "get_partition",
    "get_shuffle", "packed_batch", "packed_batches", "ray_dataset", "resolve", "stream",
]
