"""episode-lake: a versioned, columnar lake of robot episodes on Lance.

    import lake
    lk = lake.open("./my_lake")                 # or "s3://bucket/prefix", storage_options={...}
    rep = lk.ingest("path/to/lerobot_dataset")  # LeRobot v2.1 / v3.0, a Ray Data job
    lk.episodes(split="train", filter="length > 50")

``import lake`` loads neither torch nor ray; they load when a job needs them.
"""

import os as _os

_os.environ.setdefault("LANCE_LOG", "error")  # Lance's Rust warnings ("will be created") are noise to users

from ._append import NewEpisode, episode_id  # noqa: E402
from ._decoded import DecodeReport  # noqa: E402
from ._edit import EditReport, NoChange  # noqa: E402
from ._export import ExportReport  # noqa: E402
from ._ingest import IngestReport, split_of  # noqa: E402
from ._lake import Diff, Lake, ReadOnlyError, open  # noqa: E402
from ._lerobot import EpisodeError, SourceError  # noqa: E402
from ._gc import GcReport  # noqa: E402
from ._verify import Mismatch, VerifyReport  # noqa: E402
from ._versions import LakeBusy, LogEntry, VersionDeleted  # noqa: E402


def stream(split: str, uri=None, **opts):
    """``lake.open(uri).stream(split, **opts)``; ``uri`` defaults to $LAKE_URI, then ./lake."""
    return open(uri or _os.environ.get("LAKE_URI") or "lake", create=False).stream(split, **opts)


def write_pusht_dataset(*args, **kwargs):
    """Write a genuine LeRobot dataset from PushT simulation (see ``lake._sample``)."""
    from ._sample import write_pusht_dataset as _write

    return _write(*args, **kwargs)


__all__ = [
    "DecodeReport", "Diff", "EditReport", "ExportReport", "GcReport", "EpisodeError", "IngestReport", "Lake", "LakeBusy", "LogEntry",
    "Mismatch", "NewEpisode", "NoChange", "ReadOnlyError", "SourceError", "VerifyReport", "VersionDeleted", "episode_id",
    "open", "split_of", "stream", "write_pusht_dataset",
]
