"""Decoded frames: every frame of chosen cameras decoded once (a Ray Data job) into the lake table
``decoded_frames``, so readers that want single frames at random (map-style datasets) take rows instead of
decoding GOPs per item.

One row per (episode, camera, frame): ``pixels`` holds the frame as RGB uint8 (height, width, 3), C order, at the
source's size, bit for bit what ``lk.video`` decodes. It costs disk (PushT, 96x96 and 64x64 cameras: 384 MiB
against 4.7 MiB of video): the trade LeRobot makes with image (not video) datasets, chosen per lake and per
camera here. The table is versioned with the lake like any other: ``checkout(v)`` sees the frames decoded by
version ``v``. Re-running decodes only (episode, camera) pairs not there yet; if episodes left the lake since,
the table is rebuilt. A video that does not decode is reported (``DecodeReport.failed``); the others land.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

TABLE = "decoded_frames"
SCHEMA = pa.schema([
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("camera", pa.string(), nullable=False),
    pa.field("frame_index", pa.int32(), nullable=False),  # position in the episode, 0..length-1
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("pixels", pa.large_binary(), nullable=False),  # RGB uint8 (height, width, 3), C order
])
FLUSH_BYTES = 256 << 20  # a worker writes a fragment each time it holds this much decoded video
CHUNK_BYTES = 64 << 20  # a longer video is decoded this many bytes of frames at a time (memory stays bounded)


@dataclass(frozen=True)
class DecodeReport:
    """What one ``decode_videos`` did: the lake version made (None if nothing was new), (episode, camera) pairs
    and frames decoded, bytes written, whether the table was rebuilt, wall seconds, and the videos that did not
    decode as (episode, camera, reason) (left out; the others landed)."""

    version: int | None
    table: str
    videos: int
    frames: int
    bytes: int
    rebuilt: bool = False
    seconds: float = 0.0
    failed: list = field(default_factory=list)


def decoded_pairs(lk) -> set[tuple[str, str]]:
    """(episode, camera) pairs the table holds at this lake version."""
    if TABLE not in lk._entry.tables:
        return set()
    t = lk.table(TABLE).to_table(columns=["episode_id", "camera"], filter="frame_index = 0")
    return set(zip(t["episode_id"].to_pylist(), t["camera"].to_pylist()))


def _chunks(reader):
    """(first frame, uint8 (t, H, W, 3) C-contiguous) covering a video in order: whole when it is small, else
    CHUNK_BYTES of frames at a time (each chunk decodes from the keyframe before it)."""
    seg = reader.segment
    n, frame_bytes = len(reader), seg.width * seg.height * 3
    if n * frame_bytes <= CHUNK_BYTES:
        yield 0, np.ascontiguousarray(reader.all())
        return
    step = max(1, CHUNK_BYTES // frame_bytes)
    for first in range(0, n, step):
        yield first, np.ascontiguousarray(reader.frames(np.arange(first, min(n, first + step))))


def decode_unit(row: dict, *, lake_ref, units: list[list[tuple[str, str]]], lengths: dict[str, int]) -> dict:
    """Ray task: decode the (episode, camera) pairs of one unit and write them as uncommitted fragments.
    ``lake_ref``: the driver's read-only ``Lake`` handle (taken, not imported: the facade stays above this)."""
    from . import _tables

    lk = lake_ref
    frags, parts, held, frames, nbytes, failed = [], [], 0, 0, 0, []

    def flush():
        nonlocal parts, held
        if parts:
            frags.extend(_tables.load_fragments(_tables.write_fragments(lk.store, TABLE, pa.concat_tables(parts), SCHEMA)))
        parts, held = [], 0

    by_episode: dict[str, list[str]] = {}
    for eid, cam in units[row["unit"]]:
        by_episode.setdefault(eid, []).append(cam)
    for eid, cams in by_episode.items():
        for cam, reader in lk.video_readers(eid, cams).items():
            try:
                video, n = _video_rows(eid, cam, reader, lengths[eid])
            except Exception as e:  # noqa: BLE001 - a video that does not decode is reported; the others land
                failed.append((eid, cam, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
                continue
            parts += video
            held += n
            frames += lengths[eid]
            nbytes += n
            if held >= FLUSH_BYTES:
                flush()
    flush()
    return {"unit": row["unit"], "frags": _tables.dump_fragments(frags), "videos": len(units[row["unit"]]) - len(failed),
            "frames": frames, "bytes": nbytes, "failed": failed}


def _video_rows(eid: str, cam: str, reader, length: int) -> tuple[list[pa.Table], int]:
    """Rows of one video (tables of at most CHUNK_BYTES of pixels) and their pixel bytes. ValueError when it
    decodes to a number of frames other than its episode's length."""
    out, n, at = [], 0, 0
    for first, v in _chunks(reader):
        t, h, w, _ = v.shape
        pixels = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), t, [None, pa.py_buffer(np.arange(t + 1, dtype=np.int64) * (h * w * 3)), pa.py_buffer(v)])
        out.append(pa.table([pa.array([eid] * t, pa.string()), pa.array([cam] * t, pa.string()),
                             pa.array(np.arange(first, first + t, dtype=np.int32)), pa.array(np.full(t, h, np.int32)),
                             pa.array(np.full(t, w, np.int32)), pixels], schema=SCHEMA))
        n += v.nbytes
        at = first + t
    if at != length:
        raise ValueError(f"decoded {at} frames, the episode has {length}")
    return out, n


def decode_videos(lk, cameras=None, *, rebuild: bool = False, progress: bool = True,
                  ray_address: str | None = None) -> DecodeReport:
    """Decode every frame of ``cameras`` (default: all) of every episode into ``decoded_frames``, as one lake
    version. KeyError for a camera no episode has."""
    from tqdm.auto import tqdm

    from . import _tables, _versions
    from ._ray import ensure_ray, map_units

    t0 = time.perf_counter()
    eps = lk.episodes(columns=["episode_id", "cameras", "length"]).to_pylist()
    have = sorted({c for e in eps for c in (e["cameras"] or [])})
    if cameras is not None:
        cameras = [cameras] if isinstance(cameras, str) else list(cameras)
        unknown = [c for c in cameras if c not in have]
        if unknown:
            raise KeyError(f"no episode in lake version {lk.version} has camera(s) {unknown} (cameras: {have})")
    wanted = set(have if cameras is None else cameras)
    done = decoded_pairs(lk)
    if not {e for e, _ in done} <= {e["episode_id"] for e in eps}:
        rebuild = True  # episodes left the lake: their frames must go with them
    if rebuild:  # decode again every camera the table had, and the ones asked for
        wanted |= {c for _, c in done}
        done = set()
    todo = [(e["episode_id"], c) for e in sorted(eps, key=lambda e: e["episode_id"])
            for c in (e["cameras"] or []) if c in wanted and (e["episode_id"], c) not in done]
    if not todo:
        return DecodeReport(None, TABLE, 0, 0, 0, False, time.perf_counter() - t0)
    lengths = {e["episode_id"]: int(e["length"]) for e in eps}
    ensure_ray(ray_address)
    import ray

    # Units of about FLUSH_BYTES of pixels, fewer when that leaves CPUs idle: each unit writes its own fragments, and
    # a take over many small fragments costs more (64 random rows: 2.6 ms over 25 fragments, 1.8 ms over one)
    metas = {p: lk._video_meta(*p) for p in todo}
    size = {p: lengths[p[0]] * 3 * metas[p]["width"] * metas[p]["height"] for p in todo}
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    target = max(1, min(FLUSH_BYTES, sum(size.values()) // (2 * cpus)))
    units: list[list[tuple[str, str]]] = [[]]
    held = 0
    for pair in todo:
        if held >= target:
            units.append([])
            held = 0
        units[-1].append(pair)
        held += size[pair]
    frags, frames, nbytes, failed = [], 0, 0, []
    with tqdm(total=sum(lengths[e] for e, _ in todo), desc="decode videos", unit="frame", disable=not progress) as bar:
        for row in map_units(decode_unit, len(units), lambda r: bar.update(r["frames"]), tasks_per_cpu=2,
                             lake_ref=lk.checkout(lk.version), units=units, lengths=lengths):
            frags += _tables.load_fragments(row["frags"])
            frames += row["frames"]
            nbytes += row["bytes"]
            failed += [tuple(f) for f in row["failed"]]
    videos = len(todo) - len(failed)
    if not frags:
        return DecodeReport(None, TABLE, 0, 0, 0, False, time.perf_counter() - t0, sorted(failed))

    def build(head):
        if head.version != lk.version and head.tables.get(TABLE) != lk._entry.tables.get(TABLE):
            raise _versions.LakeBusy(f"{TABLE} changed while decoding (lake version {head.version}): run again")
        pinned = None if rebuild else head.tables.get(TABLE)
        return {TABLE: _tables.overwrite_with(lk.store, TABLE, SCHEMA, pinned, frags)}

    cams = sorted({c for _, c in todo})
    entry = _versions.commit(lk.store, build, f"decode {videos} videos ({', '.join(cams)}) from version {lk.version}"
                             + (" (rebuilt)" if rebuild and TABLE in lk._entry.tables else "")
                             + (f"; {len(failed)} did not decode" if failed else ""),
                             {"decoded_videos": videos, "frames": frames, "bytes": nbytes, "failed": len(failed),
                              "source_version": lk.version})
    return DecodeReport(entry.version, TABLE, videos, frames, nbytes, bool(rebuild and TABLE in lk._entry.tables),
                        time.perf_counter() - t0, sorted(failed))
