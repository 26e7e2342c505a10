"""Write in-memory episodes (simulator rollouts, scripted demos) as a genuine LeRobot v3.0 dataset.

The layout, metadata, statistics and video encoding are those of ``lake._sample`` (which follows LeRobot's
own writers): one row group per episode in ``data/chunk-*/file-*.parquet``, episodes back to back in one mp4
per camera per file (each starting on a key frame), ``meta/episodes`` with per-episode stats and video
spans, ``meta/tasks.parquet``, ``meta/stats.json`` and ``meta/info.json``.

    write_lerobot_v30(root, [{"frames": {"observation.state": (T, D), "action": (T, A), ...},
                              "images": {"observation.images.corner2": uint8 (T, H, W, 3)},
                              "task": "push the puck to the goal"}, ...], fps=80, robot_type="sawyer")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._sample import (CHUNKS_SIZE, META_BUFFER, V30_DATA, V30_EPISODES, V30_VIDEO, _aggregate, _column, _data_schema,
                      _episode_stats, _mkparent, _Mp4, _tolist, _v30_row, _V30Files, _video_info, _write_json,
                      _write_tasks_parquet)

_INDEX = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def _dtype(x: np.ndarray) -> str:
    if x.dtype == np.bool_:
        return "bool"
    if np.issubdtype(x.dtype, np.integer):
        return "int64"
    return "float32"


def _features(first: dict, fps: int) -> dict:
    """info.json ``features`` from the first episode: cameras, then its frame features, then LeRobot's defaults."""
    feats: dict = {}
    for key, imgs in first["images"].items():
        h, w = imgs.shape[1:3]
        feats[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    for key, x in first["frames"].items():
        if key in _INDEX:
            raise ValueError(f"frame feature {key!r} is written by the writer itself")
        x = np.asarray(x)
        dim = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
        feats[key] = {"dtype": _dtype(x), "shape": [dim], "names": None}
    feats.update({
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    })
    for ft in feats.values():  # v3.0 stamps fps on every non-video feature
        if ft["dtype"] != "video":
            ft["fps"] = fps
    return feats


def write_lerobot_v30(root: str | Path, episodes: Sequence[dict], *, fps: int, robot_type: str = "unknown",
                      codec: str = "h264", episodes_per_file: int = 10) -> Path:
    """Write ``episodes`` (dicts with ``frames``, ``images``, ``task``; see the module doc) under ``root``.

    Every episode must have the first one's features and cameras, with one row per frame. Raises
    FileExistsError if ``root`` is not empty, ValueError for an empty list or an inconsistent episode.
    """
    if not episodes:
        raise ValueError("no episodes to write")
    if int(fps) != fps or fps < 1:
        raise ValueError(f"fps must be a positive integer (LeRobot stores it as one), got {fps}")
    fps = int(fps)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    features = _features(episodes[0], fps)
    schema = _data_schema(features)
    cameras = list(episodes[0]["images"])
    tasks = list(dict.fromkeys(ep["task"] for ep in episodes))
    data_files = _V30Files(episodes_per_file, lambda c, f: pq.ParquetWriter(
        _mkparent(root / V30_DATA.format(chunk_index=c, file_index=f)), schema, compression="snappy",
        use_dictionary=True))
    video_files = {key: _V30Files(episodes_per_file, lambda c, f, key=key: _Mp4(
        root / V30_VIDEO.format(video_key=key, chunk_index=c, file_index=f), codec, fps,
        tuple(features[key]["shape"][:2]))) for key in cameras}
    ep_rows, ep_stats, total = [], [], 0
    try:
        for i, src in enumerate(episodes):
            if set(src["frames"]) != set(episodes[0]["frames"]) or list(src["images"]) != cameras:
                raise ValueError(f"episode {i}: features {sorted(src['frames'])} / cameras {list(src['images'])} "
                                 f"differ from episode 0's")
            n = len(next(iter(src["frames"].values())))
            ep = {k: np.asarray(v).reshape(n, -1).squeeze(1) if features[k]["shape"] == [1]
                  else np.asarray(v).reshape(n, -1) for k, v in src["frames"].items()}
            ep = {k: v.astype(features[k]["dtype"]) for k, v in ep.items()}
            for key in cameras:
                if len(src["images"][key]) != n:
                    raise ValueError(f"episode {i}: {key} has {len(src['images'][key])} frames for {n} rows")
                ep[key] = np.asarray(src["images"][key], np.uint8)
            ep.update({"timestamp": (np.arange(n) / fps).astype(np.float32),
                       "frame_index": np.arange(n, dtype=np.int64),
                       "episode_index": np.full(n, i, dtype=np.int64),
                       "index": np.arange(total, total + n, dtype=np.int64),
                       "task_index": np.full(n, tasks.index(src["task"]), dtype=np.int64)})
            data_files.get().write_table(pa.table({f.name: _column(ep[f.name], f.type) for f in schema}, schema=schema))
            stats = _episode_stats(ep, features)
            ep_stats.append(stats)
            ep_rows.append(_v30_row({"episode_index": i, "tasks": [src["task"]], "length": n}, ep, cameras,
                                    data_files, video_files, total, stats))
            total += n
    finally:
        data_files.close()
        for vf in video_files.values():
            vf.close()
    for key in cameras:
        features[key]["info"] = _video_info(root / V30_VIDEO.format(video_key=key, chunk_index=0, file_index=0), "v3.0")
    _write_tasks_parquet(root / "meta" / "tasks.parquet", tasks)
    path = _mkparent(root / V30_EPISODES.format(chunk_index=0, file_index=0))
    ep_table = pa.Table.from_pylist(ep_rows)
    with pq.ParquetWriter(path, ep_table.schema, compression="snappy", use_dictionary=True) as w:
        for start in range(0, len(ep_rows), META_BUFFER):
            w.write_table(ep_table.slice(start, META_BUFFER))
    _write_json(root / "meta" / "stats.json", _tolist(_aggregate(ep_stats)))
    _write_json(root / "meta" / "info.json", {
        "codebase_version": "v3.0", "robot_type": robot_type, "total_episodes": len(episodes), "total_frames": total,
        "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500, "fps": fps, "splits": {"train": f"0:{len(episodes)}"}, "data_path": V30_DATA,
        "video_path": V30_VIDEO, "features": features})
    return root
