"""Lake -> LeRobot dataset folder (v3.0 or v2.1), the way back out of the lake.

One lake version (optionally a split and a SQL filter over episodes) becomes a folder LeRobot's
``LeRobotDataset(root=...)`` reads: data parquet (features under their source names, ``episode_index``,
``index`` and ``task_index`` renumbered), one mp4 per camera per file (v3.0: episodes back to back; v2.1: one
per episode), ``meta/info.json``, ``meta/stats.json``, the tasks and the episodes (with per-episode stats).

Videos are not re-encoded: the lake holds each episode's GOP-aligned elementary stream, whose packets are
muxed as they are into the new mp4 (PyAV, stream copy), so decoded frames equal the lake's bit for bit. The
frames a GOP holds before the episode's first frame (``skip``) or after its last stay in the file; in v3.0 the
episode's ``from_timestamp`` points past them, in v2.1 (where frame i must sit at ``timestamp[i]``) an episode
with leading frames is refused with a clear error.

Every episode exported shares one frame layout (one ``frames_*`` table) and one fps: a LeRobot dataset has one
schema. Mixed selections are refused naming the layouts; filter by ``source`` to export each.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import _stats

FORMATS = ("lerobot-v3.0", "lerobot-v2.1")
CHUNKS_SIZE = 1000
V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V30_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V30_EPISODES = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
RENUMBERED = ("episode_index", "index", "task_index")


@dataclass(frozen=True)
class ExportReport:
    """What ``export`` wrote: ``dest`` folder, episode / frame / video-file counts, lake version read."""

    dest: str
    format: str
    version: int
    episodes: int
    frames: int
    videos: int
    seconds: float


# --- selection --------------------------------------------------------------------------------------------

def _selection(lk, split, filter) -> tuple[list[dict], dict]:
    """The episodes to export in a stable order, and the info.json of the source layout they share."""
    cols = ["episode_id", "source", "source_episode_index", "task", "tasks", "length", "fps", "frames_table",
            "cameras", "robot_type", "stats", "sketch", "stats_lerobot"]
    eps = lk.episodes(split=split, filter=filter, columns=cols).to_pylist()
    if not eps:
        raise ValueError(f"nothing to export: no episodes in lake version {lk.version}"
                         f"{f' split {split!r}' if split else ''}{f' matching {filter!r}' if filter else ''}")
    eps.sort(key=lambda e: (e["source"] or "", e["source_episode_index"] or 0, e["episode_id"]))
    layouts = sorted({e["frames_table"] for e in eps})
    if len(layouts) > 1:
        by = {t: sorted({e["source"] for e in eps if e["frames_table"] == t}) for t in layouts}
        raise ValueError("a LeRobot dataset has one feature layout; the selection holds "
                         + "; ".join(f"{t} (sources {', '.join(s)})" for t, s in by.items())
                         + ": export each with --filter \"source = '...'\"")
    fps = sorted({float(e["fps"]) for e in eps})
    if len(fps) > 1:
        raise ValueError(f"the selection mixes fps {fps}: export each source on its own")
    sources = [r for r in lk._scan("sources").to_pylist() if r["frames_table"] == layouts[0]]
    if not sources:
        raise ValueError(f"no source metadata for frame layout {layouts[0]} (episodes appended in memory?)")
    want = {e["source"] for e in eps}
    src = next((r for r in sources if r["source"] in want), sources[0])
    return eps, json.loads(src["info_json"])


def _hf_features(features: dict) -> dict:
    """The ``huggingface`` schema metadata ``datasets`` keeps (Value / Sequence / Image), for non-video features."""
    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
            continue
        value = {"dtype": ft["dtype"], "_type": "Value"}
        shape = list(ft.get("shape") or [1])
        out[key] = value if shape == [1] else {"feature": value, "length": int(np.prod(shape)), "_type": "Sequence"}
    return out


# --- frames -----------------------------------------------------------------------------------------------

def _episode_frames(lk, ep: dict, new_index: int, start: int, task_index: dict[str, int], names: list[str],
                    schema: pa.Schema) -> pa.Table:
    """One episode's rows with the positional columns renumbered for the export."""
    t = lk.frames(ep["episode_id"])
    n = t.num_rows
    cols = {}
    for name in names:
        if name == "episode_index":
            cols[name] = pa.array(np.full(n, new_index, np.int64))
        elif name == "index":
            cols[name] = pa.array(np.arange(start, start + n, dtype=np.int64))
        elif name == "task_index":
            cols[name] = pa.array(_task_column(t, ep, task_index), pa.int64())
        else:
            cols[name] = t[name].combine_chunks()
    return pa.table(cols).cast(schema)


def _task_column(t: pa.Table, ep: dict, task_index: dict[str, int]) -> np.ndarray:
    """Per-frame new task index: the episode's tasks in the order its old task indices first appear."""
    tasks = list(ep["tasks"] or [ep["task"] or ""])
    n = t.num_rows
    if len(tasks) == 1 or "task_index" not in t.column_names:
        return np.full(n, task_index[tasks[0]], np.int64)
    old = t["task_index"].to_numpy()
    order = list(dict.fromkeys(old.tolist()))
    mapping = {o: task_index[tasks[min(i, len(tasks) - 1)]] for i, o in enumerate(order)}
    return np.array([mapping[o] for o in old.tolist()], np.int64)


# --- videos -----------------------------------------------------------------------------------------------

class _Mp4:
    """An mp4 written by stream copy: elementary-stream packets of one codec appended segment by segment."""

    def __init__(self, path: Path, seg, templates: dict | None = None):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.codec, self.extradata = path, seg.codec, seg.extradata
        self.time_base = seg.time_base
        self.container = av.open(str(path), "w", format="mp4")
        key = (seg.codec, seg.extradata, seg.width, seg.height, seg.pix_fmt, seg.time_base)
        template = (templates or {}).get(key)
        if template is not None:  # a file written before with these parameters: copy them, open no encoder
            with av.open(str(template)) as src:
                self.stream = self.container.add_stream_from_template(src.streams.video[0], opaque=True)
        else:
            # PyAV opens a stream's codec only as an encoder; open it here, then put the stored extradata
            # back (libx264's own would be Annex B, and the mp4 muxer would then rewrite our AVCC packets)
            os.environ.setdefault("SVT_LOG", "1")
            self.stream = self.container.add_stream(_muxable(seg.codec), rate=None)
            cc = self.stream.codec_context
            cc.width, cc.height, cc.pix_fmt = seg.width, seg.height, seg.pix_fmt
            cc.time_base = seg.time_base
            cc.thread_count = 1
            cc.open()
            cc.extradata = seg.extradata
        self.stream.time_base = seg.time_base
        self._templates, self._key = templates, key
        self.end = 0  # pts (in time_base) where the next segment starts

    def add(self, seg, data: bytes) -> int:
        """Append a segment's packets after what is there; returns the pts offset it was shifted by."""
        import av

        if seg.codec != self.codec or seg.extradata != self.extradata or seg.time_base != self.time_base:
            raise ValueError(f"{self.path}: episodes with different codec parameters cannot share one mp4")
        pts = np.asarray(seg.pts, np.int64)
        if len(pts) == 0:
            return self.end
        shift = self.end - int(pts.min())
        dts = _dts(pts)
        step = int(np.median(np.diff(np.sort(pts)))) if len(pts) > 1 else 1
        offsets = np.asarray(seg.offsets, np.int64)
        for i in range(len(pts)):
            pkt = av.Packet(data[offsets[i]:offsets[i + 1]])
            pkt.pts, pkt.dts = int(pts[i] + shift), int(dts[i] + shift)
            pkt.duration = max(step, 1)  # the mp4 muxer may drop a last sample of unknown duration
            pkt.time_base = self.time_base
            pkt.is_keyframe = bool(seg.key[i])
            pkt.stream = self.stream
            self.container.mux(pkt)
        self.end = int(pts.max() + shift + max(step, 1))
        return shift

    def close(self) -> None:
        self.container.close()
        if self._templates is not None:  # a finished file (the mp4 index is written last) serves as template
            self._templates.setdefault(self._key, self.path)


def _muxable(codec: str) -> str:
    # the mp4 stream needs a codec *name*; the lake stores the decoder's, which for AV1 may be libdav1d
    return "av1" if codec in ("libdav1d", "libaom-av1", "libsvtav1") else codec


def _dts(pts: np.ndarray) -> np.ndarray:
    """Decode timestamps for packets in decode order: the sorted pts, moved back by the reorder delay (zero
    without B-frames), so dts rises and never passes pts."""
    s = np.sort(pts)
    return s - max(0, int((s - pts).max()))


def _video_parts(lk, eid: str, cameras: list[str]) -> dict:
    """{camera: (Segment, bytes)} of one episode, straight from the lake's blobs."""
    out = {}
    for cam, reader in lk.video_readers(eid, cameras).items():
        reader.blob.seek(0)
        out[cam] = (reader.segment, reader.blob.read())
    return out


def _first_ts(seg) -> float:
    """Seconds from a segment's first pts to the episode's first frame (past the ``skip`` leading frames)."""
    pts = np.sort(np.asarray(seg.pts, np.int64))
    return float((pts[seg.skip] - pts[0]) * Fraction(seg.time_base))


# --- writers ----------------------------------------------------------------------------------------------

def export(lk, dest, version=None, split: str | None = None, filter: str | None = None,
           format: str = "lerobot-v3.0", data_file_mb: float = 100.0, video_file_mb: float = 500.0) -> ExportReport:
    """Write lake ``version`` (default: the handle's), optionally one split and a SQL episode filter, as a LeRobot
    dataset under ``dest`` (must be empty or absent). Raises ValueError for an unknown format, an empty or mixed
    selection, or an existing non-empty ``dest``."""
    import time

    t0 = time.perf_counter()
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r} (choose from {', '.join(FORMATS)})")
    dest = Path(os.fspath(dest))
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"export destination {dest} is not empty")
    src = lk if version is None else lk.checkout(version)
    eps, info = _selection(src, split, filter)
    features = {k: dict(v) for k, v in info["features"].items()}
    for k in ("episode_index", "index", "task_index"):  # LeRobot's default features, which appended sources lack
        features.setdefault(k, {"dtype": "int64", "shape": [1], "names": None})
    cameras = [k for k, f in features.items() if f.get("dtype") == "video"]
    names = [k for k, f in features.items() if f.get("dtype") != "video"]
    from ._lerobot import frame_fields

    schema = pa.schema([pa.field(f.name, f.type) for f in frame_fields({k: features[k] for k in names})],
                       metadata={"huggingface": json.dumps({"info": {"features": _hf_features(features)}})})
    tasks = list(dict.fromkeys(t for e in eps for t in (e["tasks"] or [e["task"] or ""])))
    task_index = {t: i for i, t in enumerate(tasks)}
    fps = float(eps[0]["fps"])
    dest.mkdir(parents=True, exist_ok=True)
    writer = (_write_v30 if format == "lerobot-v3.0" else _write_v21)
    ep_rows, ep_stats, frames, videos = writer(src, dest, eps, names, schema, cameras, task_index, fps,
                                               data_file_mb, video_file_mb)
    for cam in cameras:  # describe the video stream as LeRobot's get_video_info does, from the first file
        first = next(dest.glob(f"videos/**/{cam}/**/*.mp4" if format == "lerobot-v2.1" else f"videos/{cam}/**/*.mp4"))
        features[cam]["info"] = _video_info(first, format)
    _write_meta(dest, format, info, features, eps, ep_rows, ep_stats, tasks, frames, videos, fps)
    return ExportReport(str(dest), format, src.version, len(eps), frames, videos, time.perf_counter() - t0)


def _write_v30(lk, dest, eps, names, schema, cameras, task_index, fps, data_mb, video_mb):
    data_w, data_at, data_bytes = None, (0, 0), 0
    mp4s: dict[str, _Mp4 | None] = {c: None for c in cameras}
    mp4_at = {c: (0, -1) for c in cameras}
    mp4_bytes = {c: 0 for c in cameras}
    ep_rows, ep_stats, start, nvideo = [], [], 0, 0
    templates: dict = {}
    try:
        for i, ep in enumerate(eps):
            t = _episode_frames(lk, ep, i, start, task_index, names, schema)
            if data_w is not None and data_bytes >= data_mb * 2**20:
                data_w.close()
                data_w, data_at, data_bytes = None, _next_file(*data_at), 0
            if data_w is None:
                path = dest / V30_DATA.format(chunk_index=data_at[0], file_index=data_at[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                data_w = pq.ParquetWriter(path, schema, compression="snappy")
            data_w.write_table(t)  # one row group per episode, as LeRobot writes them
            data_bytes += t.nbytes
            row = {"episode_index": i, "tasks": list(ep["tasks"] or [ep["task"] or ""]), "length": t.num_rows,
                   "data/chunk_index": data_at[0], "data/file_index": data_at[1],
                   "dataset_from_index": start, "dataset_to_index": start + t.num_rows}
            parts = _video_parts(lk, ep["episode_id"], [c for c in cameras if c in (ep["cameras"] or [])])
            for cam in cameras:
                if cam not in parts:
                    raise ValueError(f"episode {ep['episode_id']} has no video for camera {cam!r}")
                seg, data = parts[cam]
                mp4 = mp4s[cam]
                if mp4 is not None and (mp4_bytes[cam] >= video_mb * 2**20 or seg.codec != mp4.codec
                                        or seg.extradata != mp4.extradata or seg.time_base != mp4.time_base):
                    mp4.close()
                    mp4 = None
                if mp4 is None:
                    mp4_at[cam] = _next_file(*mp4_at[cam]) if mp4_at[cam][1] >= 0 else (0, 0)
                    mp4 = mp4s[cam] = _Mp4(dest / V30_VIDEO.format(video_key=cam, chunk_index=mp4_at[cam][0],
                                                                   file_index=mp4_at[cam][1]), seg, templates)
                    mp4_bytes[cam] = 0
                    nvideo += 1
                shift = mp4.add(seg, data)
                mp4_bytes[cam] += len(data)
                t_from = float((int(np.min(seg.pts)) + shift) * Fraction(seg.time_base)) + _first_ts(seg)
                row.update({f"videos/{cam}/chunk_index": mp4_at[cam][0], f"videos/{cam}/file_index": mp4_at[cam][1],
                            f"videos/{cam}/from_timestamp": t_from,
                            f"videos/{cam}/to_timestamp": t_from + t.num_rows / fps})
            stats = _stats.episode_lerobot(ep)
            row.update({f"stats/{k}/{s}": np.asarray(v).tolist() for k, st in _listable(stats).items()
                        for s, v in st.items()})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            ep_rows.append(row)
            ep_stats.append(stats)
            start += t.num_rows
    finally:
        if data_w is not None:
            data_w.close()
        for mp4 in mp4s.values():
            if mp4 is not None:
                mp4.close()
    return ep_rows, ep_stats, start, nvideo


def _write_v21(lk, dest, eps, names, schema, cameras, task_index, fps, data_mb, video_mb):
    ep_rows, ep_stats, start, nvideo = [], [], 0, 0
    templates: dict = {}
    for i, ep in enumerate(eps):
        chunk = i // CHUNKS_SIZE
        t = _episode_frames(lk, ep, i, start, task_index, names, schema)
        path = dest / V21_DATA.format(episode_chunk=chunk, episode_index=i)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, path, compression="snappy")
        parts = _video_parts(lk, ep["episode_id"], [c for c in cameras if c in (ep["cameras"] or [])])
        for cam in cameras:
            if cam not in parts:
                raise ValueError(f"episode {ep['episode_id']} has no video for camera {cam!r}")
            seg, data = parts[cam]
            if seg.skip:
                raise ValueError(f"episode {ep['episode_id']} camera {cam}: its video starts {seg.skip} frames before "
                                 "the episode (a GOP shared with the previous episode); lerobot-v2.1 needs each "
                                 "episode's video to start at its first frame: export as lerobot-v3.0")
            mp4 = _Mp4(dest / V21_VIDEO.format(episode_chunk=chunk, video_key=cam, episode_index=i), seg, templates)
            try:
                mp4.add(seg, data)
            finally:
                mp4.close()
            nvideo += 1
        stats = _stats.episode_lerobot(ep)
        ep_rows.append({"episode_index": i, "tasks": list(ep["tasks"] or [ep["task"] or ""]), "length": t.num_rows})
        ep_stats.append(stats)
        start += t.num_rows
    return ep_rows, ep_stats, start, nvideo


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def _listable(stats: dict) -> dict:
    """Stats with LeRobot's shapes: (D,) vectors, (1,) scalars, (3, 1, 1) images; count as (1,)."""
    return {k: {s: np.asarray(v) for s, v in st.items()} for k, st in stats.items()}


def _video_info(path: Path, format: str) -> dict:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        info = {"video.height": s.height, "video.width": s.width, "video.codec": cc.codec.canonical_name
                if cc.codec else cc.name, "video.pix_fmt": s.pix_fmt or "yuv420p", "video.is_depth_map": False,
                "video.channels": 3, "has_audio": len(c.streams.audio) > 0}
        rate = s.average_rate or s.base_rate
    info["video.fps"] = float(rate) if format == "lerobot-v2.1" else int(round(float(rate))) if rate else None
    return info


def _write_meta(dest, format, info, features, eps, ep_rows, ep_stats, tasks, frames, videos, fps) -> None:
    meta = dest / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    out = {"codebase_version": format.removeprefix("lerobot-"), "robot_type": info.get("robot_type") or
           (eps[0]["robot_type"] or "unknown"), "total_episodes": len(eps), "total_frames": frames,
           "total_tasks": len(tasks)}
    fps_out = int(fps) if float(fps).is_integer() else fps
    if format == "lerobot-v3.0":
        out.update({"chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                    "fps": fps_out, "splits": {"train": f"0:{len(eps)}"}, "data_path": V30_DATA,
                    "video_path": V30_VIDEO if any(f["dtype"] == "video" for f in features.values()) else None,
                    "features": features})
        from ._sample import _write_tasks_parquet

        _write_tasks_parquet(meta / "tasks.parquet", tasks)
        path = dest / V30_EPISODES.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(ep_rows), path, compression="snappy")
    else:
        out.update({"total_videos": videos, "total_chunks": (len(eps) + CHUNKS_SIZE - 1) // CHUNKS_SIZE,
                    "chunks_size": CHUNKS_SIZE, "fps": fps_out, "splits": {"train": f"0:{len(eps)}"},
                    "data_path": V21_DATA, "video_path": V21_VIDEO if any(
                        f["dtype"] == "video" for f in features.values()) else None, "features": features})
        _jsonl(meta / "episodes.jsonl", ep_rows)
        _jsonl(meta / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(tasks)])
        _jsonl(meta / "episodes_stats.jsonl",
               [{"episode_index": i, "stats": _tolist(s)} for i, s in enumerate(ep_stats)])
    (meta / "info.json").write_text(json.dumps(out, indent=4, ensure_ascii=False))
    (meta / "stats.json").write_text(json.dumps(_tolist(_stats.aggregate_lerobot(ep_stats)), indent=4))


def _tolist(stats: dict) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
