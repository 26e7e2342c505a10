"""What an ingest has to do, decided on the driver from metadata and one file listing, before any decode.

- The source folder must exist and hold something: a missing or empty folder is an error (no version).
- Every file an episode reads is listed once (size, modification time): a missing or zero-byte video is
  reported once per file, naming every episode that needs it, and those episodes are left out of the job.
- Cheap re-ingest: each episode gets a fingerprint (``lake._checksum.file_fingerprint``: its metadata row,
  the source's features and fps, and size + mtime of its data file and videos), stored in
  ``episodes.source_fingerprint``. An episode whose fingerprint the lake already holds is unchanged and is
  not read again; ``verify_all`` turns this off (every episode is read, cut and compared by content hash).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field

from ._checksum import file_fingerprint
from ._lerobot import EpisodeRef, Source, SourceError
from ._store import filesystem


@dataclass(frozen=True)
class Plan:
    todo: tuple[EpisodeRef, ...]  # episodes the job reads
    unchanged: int  # episodes recognised as already in the lake
    fingerprints: dict[int, str | None] = field(default_factory=dict)  # by source episode index
    bad: list[tuple[str, str]] = field(default_factory=list)  # (item, reason): missing / empty videos


def check_folder(uri: str, storage_options: dict | None = None) -> None:
    """Raise SourceError when ``uri`` is not a folder with something in it."""
    fs, root = filesystem(uri, storage_options)
    try:
        if not fs.exists(root):
            raise SourceError(uri, "source folder not found")
        if not fs.isdir(root):
            raise SourceError(uri, "source is not a folder")
        if not fs.ls(root, detail=False):
            raise SourceError(uri, "source folder is empty")
    except (OSError, ValueError) as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(uri, f"source folder cannot be read ({e})") from None


def _listing(src: Source, storage_options: dict | None) -> dict[str, tuple[int, str]]:
    """relative path -> (size, mtime) of every file under the source, in one listing."""
    fs, root = filesystem(src.uri, storage_options)
    root = root.rstrip("/")
    out = {}
    for path, info in fs.find(root, withdirs=False, detail=True).items():
        rel = posixpath.relpath(path, root)
        mtime = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
        out[rel] = (int(info.get("size") or 0), repr(mtime) if isinstance(mtime, float) else str(mtime))
    return out


def plan(src: Source, known_fingerprints: set[str], verify_all: bool = False,
         storage_options: dict | None = None) -> Plan:
    """Which episodes to read (see the module doc)."""
    files = _listing(src, storage_options)
    layout = hashlib.blake2b(json.dumps([src.fps, src.features], sort_keys=True).encode(), digest_size=16).hexdigest()
    missing: dict[tuple[str, str], list[int]] = {}
    todo, fps, unchanged = [], {}, 0
    for ep in src.episodes:
        broken = False
        for _, ref in ep.videos:
            got = files.get(ref.path)
            reason = "video file not found" if got is None else "video file is empty (0 bytes)" if got[0] == 0 else None
            if reason:
                missing.setdefault((ref.path, reason), []).append(ep.index)
                broken = True
        if broken:
            continue
        meta = {"index": ep.index, "length": ep.length, "tasks": list(ep.tasks), "data": ep.data_path,
                "videos": [[cam, r.path, r.from_ts, r.to_ts] for cam, r in ep.videos], "layout": layout}
        fp = file_fingerprint(meta, {p: files.get(p) for p in (ep.data_path, *(r.path for _, r in ep.videos))})
        fps[ep.index] = fp
        if fp is not None and fp in known_fingerprints and not verify_all:
            unchanged += 1
        else:
            todo.append(ep)
    bad = [(file_item(path, idx), reason) for (path, reason), idx in missing.items()]
    return Plan(tuple(todo), unchanged, fps, bad)


def file_item(path: str, indices) -> str:
    """"path episode 3" / "path episodes 0, 1, 2": one quarantine item for a file and the episodes it holds."""
    idx = sorted(set(indices))
    return f"{path} episode {idx[0]}" if len(idx) == 1 else f"{path} episodes {', '.join(map(str, idx))}"
