"""Content checksums of what the lake stores, computed at write time and recomputed by ``lake verify``.

Three digests, all BLAKE2b-128 (``hashlib``, hex), each over a canonical encoding of values, not of files, so
the same content hashes the same whatever Lance's file layout, compaction or encoding:

- ``segment_checksum``: one camera's packet segment of one episode (``videos.checksum``): the packet bytes,
  the packet index (offsets, pts, keyframe flags), the codec's extradata and name.
- ``frames_checksum``: an episode's frame rows (``episodes.frames_checksum``): every non-null column of the
  rows in frame order (a column added to the table later reads null for old rows and is left out).
- ``content_hash``: an episode's whole content (``episodes.content_hash``): its id (which covers the frame
  values and tasks) and every camera's segment checksum. Ingest compares it to decide that an episode with a
  known id but different video bytes replaces the stored one, and that an identical one adds nothing.

``file_fingerprint`` is the cheap pre-check of re-ingest (``episodes.source_fingerprint``): the episode's
metadata plus size and modification time of each file it reads, taken before any decode.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

ALGORITHM = "blake2b-128"


def _h():
    return hashlib.blake2b(digest_size=16)


def segment_checksum(codec: str, extradata: bytes | None, offsets, pts, key, data) -> str:
    """Digest of one packet segment; ``data`` is bytes-like (the packets back to back)."""
    h = _h()
    h.update(f"{codec}\0".encode())
    h.update(len(extradata or b"").to_bytes(8, "little") + (extradata or b""))
    for arr, dtype in ((offsets, "<i8"), (pts, "<i8"), (key, "u1")):
        a = np.ascontiguousarray(np.asarray(arr).astype(dtype, copy=False))
        h.update(len(a).to_bytes(8, "little") + a.tobytes())
    h.update(memoryview(data))
    return h.hexdigest()


def _column(h, col: pa.Array) -> None:
    """Feed one column's values: fixed-width values as their bytes (nulls zeroed, plus the validity),
    variable-width values length-prefixed, structs child by child."""
    t = col.type
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        if not pa.types.is_fixed_size_list(t):
            h.update(np.ascontiguousarray(col.offsets.to_numpy()).astype("<i8").tobytes())
        _validity(h, col)
        _column(h, col.flatten())
    elif pa.types.is_struct(t):
        _validity(h, col)
        for i in range(t.num_fields):
            h.update(t.field(i).name.encode() + b"\0")
            _column(h, col.field(i))
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        for v in col.to_pylist():
            b = v.encode() if isinstance(v, str) else v
            h.update(b"\xff" * 8 if b is None else len(b).to_bytes(8, "little") + b)
    else:
        _validity(h, col)
        if col.null_count:
            col = col.fill_null(pa.scalar(0, col.type) if not pa.types.is_boolean(t) else False)
        h.update(np.ascontiguousarray(col.to_numpy(zero_copy_only=False)).tobytes())


def _validity(h, col: pa.Array) -> None:
    if col.null_count:
        h.update(b"N" + np.asarray(col.is_valid().to_numpy(zero_copy_only=False), np.uint8).tobytes())


def frames_checksum(frames: pa.Table) -> str:
    """Digest of one episode's frame rows (flat LeRobot names, as ``unnest`` gives them, or nested: both
    hash the same), rows sorted by ``frame_index`` when present; ``episode_id`` and all-null columns skipped."""
    from ._schema import unnest

    t = unnest(frames)
    if "frame_index" in t.column_names:
        t = t.sort_by("frame_index")
    h = _h()
    h.update(t.num_rows.to_bytes(8, "little"))
    for name in sorted(t.column_names):
        col = t[name].combine_chunks()
        if name == "episode_id" or col.null_count == len(col):
            continue
        h.update(name.encode() + b"\0")
        _column(h, col)
    return h.hexdigest()


def content_hash(episode_id: str, segments: dict[str, str]) -> str:
    """Digest of an episode's identity (its id: frame values + tasks) and each camera's segment checksum."""
    h = _h()
    h.update(episode_id.encode() + b"\0")
    for cam in sorted(segments):
        h.update(f"{cam}\0{segments[cam]}\0".encode())
    return h.hexdigest()


def file_fingerprint(episode_meta: dict, files: dict[str, tuple | None]) -> str | None:
    """Digest of an episode's metadata and of (size, mtime) of every file it reads; None if a file is
    missing (such an episode is never taken as unchanged)."""
    if any(v is None for v in files.values()):
        return None
    h = _h()
    h.update(json.dumps(episode_meta, sort_keys=True, default=str).encode())
    h.update(json.dumps(sorted((k, list(v)) for k, v in files.items())).encode())
    return h.hexdigest()
