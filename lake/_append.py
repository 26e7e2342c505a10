"""Episodes from memory (RL rollouts, evaluations) appended as one lake version, and table compaction.

``append_episodes`` is the small-commit path: no source folder, no Ray job. Camera frames are encoded once
(h264, GOP 2, as LeRobot encodes) and stored like ingested video: the elementary stream plus packet index.
``compact`` rewrites the pinned version of each table into fewer fragments (Lance ``compact_files``) so a lake
fed by many small commits keeps its fragment counts bounded; the data, and so every reader, is unchanged.
"""

from __future__ import annotations

import io
import json
import random
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from . import _stats, _tables, _versions
from ._ingest import IngestReport, split_of
from ._lerobot import content_id, frame_fields
from ._schema import EPISODES, SOURCES, TASKS, VIDEOS, frames_schema, frames_table_name, nest, task_id
from ._store import Store
from ._video import image_stats


@dataclass
class NewEpisode:
    """One episode in memory. ``frames``: feature -> (T, ...) array; ``images``: camera -> uint8 (T, H, W, 3)."""

    frames: dict[str, np.ndarray]
    task: str = ""
    images: dict[str, np.ndarray] = field(default_factory=dict)
    policy_version: int | None = None
    episode_return: float | None = None
    success: bool | None = None
    attrs: dict = field(default_factory=dict)


def features_of(ep: NewEpisode, fps: float) -> dict:
    """LeRobot-style ``features`` for an in-memory episode (timestamp / frame_index added when missing)."""
    feats = {}
    for name, x in ep.frames.items():
        x = np.asarray(x)
        feats[name] = {"dtype": str(x.dtype), "shape": list(x.shape[1:]) or [1], "names": None}
    for cam, x in ep.images.items():
        feats[cam] = {"dtype": "video", "shape": list(x.shape[1:]), "names": ["height", "width", "channels"],
                      "info": {"video.fps": fps, "video.codec": "h264", "video.pix_fmt": "yuv420p"}}
    feats.setdefault("timestamp", {"dtype": "float32", "shape": [1], "names": None})
    feats.setdefault("frame_index", {"dtype": "int64", "shape": [1], "names": None})
    return feats


def _frames_table(ep: NewEpisode, fields: list[pa.Field], fps: float) -> pa.Table:
    n = len(next(iter(ep.frames.values())))
    cols = dict(ep.frames)
    cols.setdefault("timestamp", (np.arange(n) / fps).astype(np.float32))
    cols.setdefault("frame_index", np.arange(n, dtype=np.int64))
    arrays = []
    for f in fields:
        x = np.asarray(cols[f.name])
        if len(x) != n:
            raise ValueError(f"feature {f.name!r} has {len(x)} rows, the episode has {n}")
        if pa.types.is_fixed_size_list(f.type):
            x = x.reshape(n, -1)
            if x.shape[1] != f.type.list_size:
                raise ValueError(f"feature {f.name!r} has {x.shape[1]} values per frame, features say {f.type.list_size}")
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), f.type.value_type), f.type.list_size))
        else:
            arrays.append(pa.array(x.reshape(n), f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def encode_segment(frames: np.ndarray, fps: float, item: str, crf: int = 23):
    """uint8 (T, H, W, 3) -> a verified Segment (h264 elementary stream, GOP 2)."""
    import av

    from ._video import cut, decode, demux

    buf = io.BytesIO()
    t, h, w, _ = frames.shape
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=int(round(fps)))
        s.width, s.height, s.pix_fmt = w + (w % 2), h + (h % 2), "yuv420p"
        s.options = {"g": "2", "crf": str(crf), "preset": "veryfast"}
        for i, img in enumerate(frames):
            if img.shape[:2] != (s.height, s.width):
                img = np.pad(img, ((0, s.height - h), (0, s.width - w), (0, 0)), mode="edge")
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            fr.pts = i
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    seg = cut(demux(buf, item), 0.0, t / fps, item)
    decoded, _ = decode(seg)
    if len(decoded) < t:
        raise ValueError(f"{item}: encoded {len(decoded)} of {t} frames")
    seg.skip, seg.frames = 0, t
    return seg, decoded[:t]


def episode_id(ep: NewEpisode, fps: float) -> str:
    """The id ``append_episodes`` gives ``ep`` (a content hash of its frames and task): known before the
    append, e.g. to reference the episodes from rows committed with them."""
    return content_id(_frames_table(ep, frame_fields(features_of(ep, fps)), fps), (ep.task,))


def append_episodes(store: Store, episodes: list[NewEpisode], *, source: str, fps: float, robot_type: str = "unknown",
                    split_ratios: dict[str, float] | None = None, split: str | None = None,
                    message: str | None = None, extra: dict[str, pa.Table] | None = None) -> IngestReport:
    """Append in-memory episodes as one lake version (see module doc). Returns an IngestReport.

    ``extra``: more rows committed in the same version, {table name: pyarrow.Table} (e.g. an eval summary).
    """
    import time

    from ._checksum import content_hash, frames_checksum
    from ._ingest import _existing, _segment_checksum, _video_row
    from ._lerobot import VideoRef

    t0 = time.perf_counter()
    if not episodes:
        return IngestReport(None, 0, 0)
    feats = features_of(episodes[0], fps)
    fields = frame_fields(feats)
    fschema = frames_schema(fields)
    table = frames_table_name(fschema)
    frames_parts, video_rows, episode_rows, tasks = [], [], [], set()
    for ep in episodes:
        if features_of(ep, fps) != feats:
            raise ValueError(f"episodes of one append must share features: {sorted(features_of(ep, fps))} vs {sorted(feats)}")
        ft = _frames_table(ep, fields, fps)
        eid = content_id(ft, (ep.task,))  # = episode_id(ep, fps)
        stats, sketch = _stats.frame_stats(ft), _stats.frame_sketches(ft)
        lr_stats = _stats.lerobot_frame_stats(ft)
        sums = {}
        for cam, imgs in ep.images.items():
            seg, decoded = encode_segment(np.asarray(imgs, np.uint8), fps, f"{source} {eid} {cam}")
            stats[cam] = image_stats(decoded)
            sketch.append(_stats.image_sketch(cam, decoded))
            lr_stats[cam] = _stats.lerobot_image_stats(decoded)
            sums[cam] = _segment_checksum(seg)
            video_rows.append(_video_row(eid, cam, VideoRef("", 0.0, ft.num_rows / fps), seg))
        frames_parts.append(ft.add_column(0, "episode_id", pa.array([eid] * ft.num_rows, pa.string())))
        tasks.add(ep.task)
        episode_rows.append({
            "episode_id": eid, "source": source, "source_uri": "", "source_episode_index": len(episode_rows),
            "task": ep.task, "tasks": [ep.task], "length": ft.num_rows,
            "split": split or split_of(eid, split_ratios or {"train": 1.0}), "robot_type": robot_type, "fps": fps,
            "frames_table": table, "cameras": list(ep.images), "codebase_version": "episode-lake",
            "stats": _stats.to_rows(stats), "sketch": sketch,
            "stats_lerobot": _stats.to_lerobot_rows(lr_stats), "policy_version": ep.policy_version,
            "episode_return": None if ep.episode_return is None else float(ep.episode_return),
            "success": ep.success, "attrs": json.dumps(ep.attrs) if ep.attrs else None,
            "frames_checksum": frames_checksum(ft), "content_hash": content_hash(eid, sums),
            "video_checksums": [{"camera": c, "checksum": v} for c, v in sums.items()],
        })
    ids = [r["episode_id"] for r in episode_rows]

    def build(head):
        def pin(name):  # write against the pinned version (opened by number: no listing of its manifests)
            return head.tables.get(name)

        present = _existing(store, head, "episodes", "episode_id")
        keep = [i for i, e in enumerate(ids) if e not in present and e not in ids[:i]]
        if not keep:
            raise _NothingNew()
        kept = {ids[i] for i in keep}
        frames = pa.concat_tables([frames_parts[i] for i in keep])
        batches = {
            table: (fschema, _tables.write_rows(store, table, nest(frames, fschema), fschema, pin(table))),
            "videos": (VIDEOS, _tables.write_rows(store, "videos", pa.Table.from_pylist(
                [r for r in video_rows if r["episode_id"] in kept], VIDEOS), VIDEOS, pin("videos"))),
            "episodes": (EPISODES, _tables.write_rows(store, "episodes", pa.Table.from_pylist(
                [episode_rows[i] for i in keep], EPISODES), EPISODES, pin("episodes"))),
        }
        new_tasks = sorted(tasks - _existing(store, head, "tasks", "task"))
        if new_tasks:
            batches["tasks"] = (TASKS, _tables.write_rows(store, "tasks", pa.table(
                {"task_id": [task_id(t) for t in new_tasks], "task": new_tasks}, schema=TASKS), TASKS, pin("tasks")))
        if source not in _existing(store, head, "sources", "source"):
            info = {"codebase_version": "episode-lake", "fps": fps, "robot_type": robot_type, "features": feats}
            batches["sources"] = (SOURCES, _tables.write_rows(store, "sources", pa.Table.from_pylist([{
                "source": source, "source_uri": "", "codebase_version": "episode-lake", "info_json": json.dumps(info),
                "modality_json": None, "frames_table": table}], SOURCES), SOURCES, pin("sources")))
        for name, rows in (extra or {}).items():
            batches[name] = (rows.schema, _tables.write_rows(store, name, rows, rows.schema, pin(name)))
        return _tables.append_tables(store, head.tables, batches)

    try:
        entry = _versions.commit(store, build, message or f"append {len(episodes)} episodes from {source}",
                                 {"source": source, "episodes_added": len(episodes),
                                  "frames_added": sum(r["length"] for r in episode_rows)})
    except _NothingNew:
        return IngestReport(None, 0, 0, [], len(episodes), time.perf_counter() - t0)
    added = [r for r in episode_rows if r["episode_id"] in set(ids)]
    return IngestReport(entry.version, len(added), sum(r["length"] for r in added), [], 0, time.perf_counter() - t0)


class _NothingNew(Exception):
    pass


class _Raced(Exception):
    """A compaction's table rewrite met another writer's commit to that table."""


COMPACT_ATTEMPTS = 5  # a compaction losing a race to a concurrent writer starts over from the new head this often


def compact(store: Store, target_rows_per_fragment: int = 1 << 20, min_fragments: int = 8,
            message: str | None = None) -> _versions.LogEntry | None:
    """Rewrite each table with at least ``min_fragments`` fragments into fewer; one lake version (or None).

    A writer committing to a table while it is being rewritten makes the rewrite moot (Lance refuses the
    conflicting commit, or the rewritten version holds the other writer's rows, not ours to publish): the
    compaction starts over on the new head, up to ``COMPACT_ATTEMPTS`` times, then raises naming the table."""

    def build(head):
        out = {}
        for name, v in head.tables.items():
            ds = store.dataset(name, version=v)
            if len(ds.get_fragments()) < min_fragments:
                continue
            # make the pinned version the newest (dropping any unpinned leftovers), then let Lance compact it
            latest = _tables.overwrite_with(store, name, ds.schema, v, [])
            ds = store.dataset(name, version=latest)
            rows = ds.count_rows()
            _versions._fault_point("compact_rewrite")
            try:
                ds.optimize.compact_files(target_rows_per_fragment=target_rows_per_fragment,
                                          materialize_deletions=True)
            except OSError as e:  # Lance: "Incompatible transaction ... concurrent transaction ..."
                if "incompatible" in str(e).lower() or "conflict" in str(e).lower():
                    raise _Raced(name) from e
                raise
            new = store.dataset(name)
            if new.count_rows() != rows:  # another writer's version slipped in between: not ours to publish
                raise _Raced(name)
            out[name] = new.version
        if not out:
            raise _NothingNew()
        return out

    for attempt in range(COMPACT_ATTEMPTS):
        try:
            return _versions.commit(store, build, message or "compact", {"compacted": True})
        except _NothingNew:
            return None
        except _Raced as e:
            raced = e
            time.sleep(0.05 * (attempt + 1) * (1 + random.random()))  # jittered: two compactors do not lockstep
    raise RuntimeError(f"table {raced} changed during compaction {COMPACT_ATTEMPTS} times (concurrent writers); "
                       "run compact again")
