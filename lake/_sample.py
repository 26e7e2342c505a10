"""Write small but genuine LeRobot datasets (v2.1 or v3.0) from real PushT simulation.

The episodes come from the `gym_pusht` simulator driven by a noisy scripted pusher, the
videos are encoded with PyAV the way `lerobot.datasets.video_utils.encode_video_frames` does
(yuv420p, g=2, crf=30), and every metadata file follows LeRobot's own writers, so the lake can
be tested against the real on-disk formats without downloading anything.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TOP, WRIST = "observation.images.top", "observation.images.wrist"
DEFAULT_CODECS = {TOP: "h264", WRIST: "av1"}
CAMERA_HW = {TOP: (96, 96), WRIST: (64, 64)}
WRIST_SPAN = 128  # world pixels (of 512) seen by the wrist camera, centred on the agent
CHUNKS_SIZE = 1000  # LeRobot DEFAULT_CHUNK_SIZE: files (v3) / episodes (v2.1) per chunk folder
META_BUFFER = 10  # LeRobot flushes episode metadata every 10 episodes -> 10-row row groups

V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V30_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V30_EPISODES = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"

# Encoder preference per codec; LeRobot uses libsvtav1 / libx264, the others are fallbacks for
# PyAV wheels built without them.
_ENCODERS = {"h264": ("libx264", "libopenh264", "h264"), "av1": ("libsvtav1", "libaom-av1", "librav1e")}


def pick_encoder(codec: str) -> str:
    """Name of the first available PyAV encoder for `codec` ("h264" or "av1")."""
    for name in _ENCODERS[codec]:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - "not compiled in" has several exception types
            continue
    raise RuntimeError(f"no {codec} encoder in this PyAV build")


def _features(cameras: dict[str, str], fps: int, version: str) -> dict:
    """info.json `features`: user features first, then LeRobot's DEFAULT_FEATURES."""
    feats: dict = {}
    for key in cameras:
        h, w = CAMERA_HW[key]
        feats[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    feats.update({
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    })
    if version == "v3.0":  # the v2.1->v3.0 converter stamps fps on every non-video feature
        for ft in feats.values():
            if ft["dtype"] != "video":
                ft["fps"] = fps
    return feats


def _data_schema(features: dict) -> pa.Schema:
    """Arrow schema LeRobot gets from `datasets`: Value -> scalar, Sequence(length=n) -> fixed_size_list.

    The `huggingface` metadata is what `datasets` stores so that it can reload the features.
    """
    fields, hf = [], {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue  # frames live in the mp4s, not in the parquet
        value = {"dtype": ft["dtype"], "_type": "Value"}
        if ft["shape"] == [1]:
            fields.append(pa.field(key, pa.from_numpy_dtype(np.dtype(ft["dtype"]))))
            hf[key] = value
        else:
            n = ft["shape"][0]
            fields.append(pa.field(key, pa.list_(pa.from_numpy_dtype(np.dtype(ft["dtype"])), n)))
            hf[key] = {"feature": value, "length": n, "_type": "Sequence"}
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})


# ----------------------------------------------------------------------------- simulation
class _PushT:
    """PushT env plus one draw per step that yields both camera views."""

    def __init__(self, max_steps: int):
        import cv2
        import gymnasium as gym
        import gym_pusht  # noqa: F401 - registers gym_pusht/PushT-v0
        import pygame

        self._cv2, self._pygame = cv2, pygame
        # obs_type "state" skips the env's per-step render; frames() draws the scene once with the
        # env's own _draw and derives both cameras from it (top == obs["pixels"] of pixels_agent_pos).
        self.env = gym.make("gym_pusht/PushT-v0", obs_type="state", render_mode="rgb_array",
                            max_episode_steps=max_steps + 1)
        self.u = self.env.unwrapped

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(top, wrist) RGB frames of the current state from a single draw of the scene."""
        screen = self.u._draw()
        # tobytes is the row-major (y, x) copy of the surface; much cheaper than the env's
        # pixels3d + transpose, and cv2.resize of it equals obs["pixels"] of pixels_agent_pos.
        full = np.frombuffer(self._pygame.image.tobytes(screen, "RGB"), np.uint8).reshape(512, 512, 3)
        h, w = CAMERA_HW[TOP]
        top = self._cv2.resize(full, (w, h))
        x, y = (int(round(v)) for v in self.u.agent.position)
        half, span = WRIST_SPAN // 2, WRIST_SPAN
        crop = np.full((span, span, 3), 255, np.uint8)  # outside the arena is white
        x0, y0 = x - half, y - half
        sx, sy = slice(max(x0, 0), min(x0 + span, 512)), slice(max(y0, 0), min(y0 + span, 512))
        crop[sy.start - y0: sy.stop - y0, sx.start - x0: sx.stop - x0] = full[sy, sx]
        wh, ww = CAMERA_HW[WRIST]
        return top, self._cv2.resize(crop, (ww, wh), interpolation=self._cv2.INTER_AREA)

    def rollout(self, env_seed: int, rng: np.random.Generator, length: int, min_len: int) -> dict:
        """Scripted pusher: get behind the T (w.r.t. the goal), then shove it goalwards, with noise."""
        self.env.reset(seed=env_seed)
        goal = np.asarray(self.u.goal_pose[:2], dtype=np.float64)
        cols: dict[str, list] = {k: [] for k in ("state", "action", "reward", "success", "top", "wrist")}
        bias = rng.normal(0.0, 15.0, size=2)  # per-episode "operator style"
        for t in range(length):
            agent = np.asarray(self.u.agent.position, dtype=np.float64)
            block = np.asarray(self.u.block.position, dtype=np.float64)
            top, wrist = self.frames()
            to_goal = goal - block
            direction = to_goal / (np.linalg.norm(to_goal) + 1e-6)
            behind = block - 70.0 * direction + bias
            if np.linalg.norm(agent - behind) > 25.0 and np.dot(agent - block, direction) > -40.0:
                target = behind  # not yet behind the block: go around to the push point
            else:
                target = agent + 45.0 * direction
            action = np.clip(target + rng.normal(0.0, 8.0, size=2), 0.0, 512.0)
            _, reward, terminated, _, info = self.env.step(action)
            for k, v in (("state", agent), ("action", action), ("reward", reward),
                         ("success", bool(info["is_success"])), ("top", top), ("wrist", wrist)):
                cols[k].append(v)
            if terminated and t + 1 >= min_len:
                break  # real PushT demos stop on success; keep lengths >= min_len though
        n = len(cols["state"])
        done = np.zeros(n, dtype=bool)
        done[-1] = True  # LeRobot's pusht marks the last frame of each episode as done
        return {
            "observation.state": np.asarray(cols["state"], dtype=np.float32),
            "action": np.asarray(cols["action"], dtype=np.float32),
            "next.reward": np.asarray(cols["reward"], dtype=np.float32),
            "next.done": done,
            "next.success": np.asarray(cols["success"], dtype=bool),
            TOP: np.stack(cols["top"]),
            WRIST: np.stack(cols["wrist"]),
        }


# ----------------------------------------------------------------------------- video
class _Mp4:
    """One mp4 being written; episodes are appended back to back, each starting on a key frame.

    LeRobot v3 encodes each episode then concatenates (stream copy), so every episode starts with
    a key frame; forcing an I-frame at the first frame of each episode gives the same property.
    """

    def __init__(self, path: Path, codec: str, fps: int, hw: tuple[int, int]):
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fps, self.n = fps, 0
        self.container = av.open(str(path), "w")
        encoder = pick_encoder(codec)
        options = {"g": "2", "crf": "30"}
        if encoder == "libsvtav1":
            # SVT-AV1's default random-access structure reorders frames, and on a long file its flush can
            # hand back a packet with an old dts (the mp4 muxer then fails with EINVAL, seen at 200-400
            # episodes); the low-delay structure never reorders, so dts == pts and rises with every packet.
            options["svtav1-params"] = "pred-struct=1"
        self.stream = self.container.add_stream(encoder, rate=fps, options=options)
        self.stream.pix_fmt = "yuv420p"
        self.stream.height, self.stream.width = hw

    def add(self, frames: np.ndarray) -> tuple[float, float]:
        """Append frames; returns the episode's (from_timestamp, to_timestamp) in this file."""
        start = self.n
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = self.n, Fraction(1, self.fps)  # exact multiples of 1/fps
            if i == 0:
                frame.pict_type = av.video.frame.PictureType.I
            self.container.mux(self.stream.encode(frame))
            self.n += 1
        return start / self.fps, self.n / self.fps

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush delayed packets
        self.container.close()


def _video_info(path: Path, version: str) -> dict:
    """The `info` block of a video feature, read back from the file as LeRobot's get_video_info does."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        h, w, codec, pix_fmt, rate = s.height, s.width, s.codec_context.codec.canonical_name, s.pix_fmt, s.base_rate
        has_audio = len(c.streams.audio) > 0
    if version == "v2.1":
        return {"video.fps": float(rate), "video.height": h, "video.width": w, "video.channels": 3,
                "video.codec": codec, "video.pix_fmt": pix_fmt, "video.is_depth_map": False,
                "has_audio": has_audio}
    return {"video.height": h, "video.width": w, "video.codec": codec, "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False, "video.fps": int(rate), "video.channels": 3, "has_audio": has_audio}


# ----------------------------------------------------------------------------- stats
def _sample_indices(n: int) -> np.ndarray:
    """lerobot.datasets.compute_stats.sample_indices: all frames below 100, then ~n**0.75."""
    num = max(min(100, n), min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, num)).astype(int)


def _episode_stats(ep: dict, features: dict) -> dict:
    """compute_episode_stats: per-dim stats for vectors, per-channel [3,1,1] in [0,1] for images."""
    stats = {}
    for key, ft in features.items():
        data = ep[key]
        if ft["dtype"] == "video":
            imgs = data[_sample_indices(len(data))]  # N,H,W,C uint8
            # Per-channel histograms give the same min/max/mean/std as numpy over (N,H,W), ~20x faster.
            hist = np.stack([np.bincount(imgs[..., c].ravel(), minlength=256) for c in range(3)]).astype(np.float64)
            levels = np.arange(256, dtype=np.float64)
            total = hist.sum(axis=1)
            mean = hist @ levels / total
            std = np.sqrt((hist * (levels[None] - mean[:, None]) ** 2).sum(axis=1) / total)
            seen = hist > 0
            lo, hi = seen.argmax(axis=1), 255 - seen[:, ::-1].argmax(axis=1)
            stats[key] = {k: (v.astype(np.float64) / 255.0).reshape(3, 1, 1)
                          for k, v in (("min", lo), ("max", hi), ("mean", mean), ("std", std))}
            stats[key]["count"] = np.array([len(imgs)])
        else:
            keep = data.ndim == 1
            stats[key] = {"min": data.min(axis=0, keepdims=keep), "max": data.max(axis=0, keepdims=keep),
                          "mean": data.mean(axis=0, keepdims=keep), "std": data.std(axis=0, keepdims=keep),
                          "count": np.array([len(data)])}
    return stats


def _aggregate(all_stats: list[dict]) -> dict:
    """aggregate_stats: count-weighted mean, parallel-algorithm variance, global min/max."""
    out = {}
    for key in all_stats[0]:
        s = [st[key] for st in all_stats]
        counts = np.stack([x["count"] for x in s]).astype(np.float64)
        means, var = np.stack([x["mean"] for x in s]), np.stack([x["std"] ** 2 for x in s])
        total = counts.sum(axis=0)
        while counts.ndim < means.ndim:
            counts = counts[..., None]
        mean = (means * counts).sum(axis=0) / total
        variance = ((var + (means - mean) ** 2) * counts).sum(axis=0) / total
        out[key] = {"min": np.min(np.stack([x["min"] for x in s]), axis=0),
                    "max": np.max(np.stack([x["max"] for x in s]), axis=0),
                    "mean": mean, "std": np.sqrt(variance), "count": total.astype(np.int64)}
    return out


def _tolist(stats: dict) -> dict:
    return {k: {s: v.tolist() for s, v in st.items()} for k, st in stats.items()}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4, ensure_ascii=False))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _write_tasks_parquet(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as `pd.DataFrame({"task_index": ...}, index=tasks).to_parquet()` writes it.

    The unnamed string index becomes the column `__index_level_0__`; the pandas metadata lets
    `pd.read_parquet` (LeRobot's load_tasks) restore it as the index. Written by hand so pandas
    is not a dependency and the bytes do not depend on the pandas version.
    """
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


# ----------------------------------------------------------------------------- writer
def _next_file(chunk: int, file: int) -> tuple[int, int]:
    """lerobot update_chunk_file_indices: file index wraps into a new chunk every CHUNKS_SIZE files."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _V30Files:
    """Round-robin of v3 files for one stream (data or a camera) that rolls over every `per_file` episodes."""

    def __init__(self, per_file: int, open_fn):
        self.per_file, self.open_fn = per_file, open_fn
        self.chunk, self.file, self.count, self.handle = 0, 0, 0, None

    def get(self):
        if self.handle is not None and self.count == self.per_file:
            self.handle.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
            self.handle, self.count = None, 0
        if self.handle is None:
            self.handle = self.open_fn(self.chunk, self.file)
        self.count += 1
        return self.handle

    def close(self):
        if self.handle is not None:
            self.handle.close()


def _v30_row(row: dict, ep: dict, cameras, data_files, video_files, first: int, stats: dict) -> dict:
    """Complete the v3.0 episode-meta ``row`` of an episode whose data rows were just written (``first``: its
    first global frame index): data file, its frames appended to each camera's current mp4, stats."""
    n = row["length"]
    row.update({"data/chunk_index": data_files.chunk, "data/file_index": data_files.file,
                "dataset_from_index": first, "dataset_to_index": first + n})
    for key in cameras:
        t0, t1 = video_files[key].get().add(ep[key])
        row.update({f"videos/{key}/chunk_index": video_files[key].chunk,
                    f"videos/{key}/file_index": video_files[key].file,
                    f"videos/{key}/from_timestamp": t0, f"videos/{key}/to_timestamp": t1})
    row.update({f"stats/{k}/{s}": v for k, st in _tolist(stats).items() for s, v in st.items()})
    row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
    return row


def write_pusht_dataset(
    root: str | Path,
    *,
    episodes: int = 8,
    version: str = "v3.0",
    codecs: dict[str, str] | None = None,
    fps: int = 10,
    min_len: int = 20,
    max_len: int = 80,
    tasks: Sequence[str] = ("push the T into the target", "push the grey T block onto the green T",
                            "align the T with the goal"),
    seed: int = 0,
    episodes_per_file: int = 4,
    robot_type: str = "pusht",
) -> Path:
    """Simulate `episodes` PushT episodes and write them as a LeRobot `version` dataset under `root`.

    `codecs` maps camera keys (observation.images.top / .wrist) to "h264" or "av1"; a camera left
    out keeps its default. v3.0 packs `episodes_per_file` episodes per data parquet and top-camera
    mp4, and one more per wrist-camera mp4, so data and video files roll over at different points.
    Same seed -> byte-identical parquet files.
    """
    if version not in ("v2.1", "v3.0"):
        raise ValueError(f"version must be 'v2.1' or 'v3.0', not {version!r}")
    if not (1 <= min_len <= max_len) or episodes < 1 or episodes_per_file < 1 or not tasks:
        raise ValueError("need episodes >= 1, 1 <= min_len <= max_len, episodes_per_file >= 1, tasks")
    unknown = set(codecs or {}) - set(DEFAULT_CODECS)
    if unknown:
        raise ValueError(f"unknown camera keys {sorted(unknown)}; cameras are {sorted(DEFAULT_CODECS)}")
    cameras = {**DEFAULT_CODECS, **(codecs or {})}
    for key, codec in cameras.items():
        if codec not in _ENCODERS:
            raise ValueError(f"codec for {key} must be 'h264' or 'av1', not {codec!r}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    (root / "meta").mkdir(parents=True, exist_ok=True)

    features = _features(cameras, fps, version)
    schema = _data_schema(features)
    # One generator per episode (not one stream for all): a dataset written with more episodes starts
    # with exactly the same episodes, as a recording session that goes on would.
    ep_rngs = [np.random.default_rng([seed, i, 1]) for i in range(episodes)]
    lengths = [int(r.integers(min_len, max_len + 1)) for r in ep_rngs]
    env_seeds = [int(r.integers(0, 2**31 - 1)) for r in ep_rngs]
    # Episodes cycle through the distinct tasks; LeRobot numbers tasks by first appearance and only
    # lists tasks that some episode uses.
    distinct = list(dict.fromkeys(tasks))
    task_list = distinct[: min(episodes, len(distinct))]
    sim = _PushT(max_len)

    v30 = version == "v3.0"
    if v30:
        data_files = _V30Files(episodes_per_file, lambda c, f: pq.ParquetWriter(
            _mkparent(root / V30_DATA.format(chunk_index=c, file_index=f)), schema,
            compression="snappy", use_dictionary=True))
        video_files = {key: _V30Files(episodes_per_file + i, lambda c, f, key=key: _Mp4(
            root / V30_VIDEO.format(video_key=key, chunk_index=c, file_index=f), cameras[key], fps, CAMERA_HW[key]))
            for i, key in enumerate(cameras)}

    ep_rows, ep_stats, frames_total = [], [], 0
    try:
        for ep_idx in range(episodes):
            task = task_list[ep_idx % len(task_list)]
            ep = sim.rollout(int(env_seeds[ep_idx]), np.random.default_rng([seed, ep_idx]),
                             int(lengths[ep_idx]), min_len)
            n = len(ep["action"])
            ep["timestamp"] = (np.arange(n) / fps).astype(np.float32)
            ep["frame_index"] = np.arange(n, dtype=np.int64)
            ep["episode_index"] = np.full(n, ep_idx, dtype=np.int64)
            ep["index"] = np.arange(frames_total, frames_total + n, dtype=np.int64)
            ep["task_index"] = np.full(n, task_list.index(task), dtype=np.int64)
            table = pa.table({f.name: _column(ep[f.name], f.type) for f in schema}, schema=schema)
            stats = _episode_stats(ep, features)
            ep_stats.append(stats)
            row = {"episode_index": ep_idx, "tasks": [task], "length": n}

            if v30:
                writer = data_files.get()
                writer.write_table(table)  # one row group per episode, as LeRobot's ParquetWriter does
                _v30_row(row, ep, cameras, data_files, video_files, frames_total, stats)
            else:
                chunk = ep_idx // CHUNKS_SIZE
                pq.write_table(table, _mkparent(root / V21_DATA.format(episode_chunk=chunk, episode_index=ep_idx)))
                for key in cameras:
                    mp4 = _Mp4(root / V21_VIDEO.format(episode_chunk=chunk, video_key=key, episode_index=ep_idx),
                               cameras[key], fps, CAMERA_HW[key])
                    mp4.add(ep[key])
                    mp4.close()
            ep_rows.append(row)
            frames_total += n
    finally:
        if v30:
            data_files.close()
            for vf in video_files.values():
                vf.close()

    for key in cameras:  # like LeRobot, describe the video stream from the first episode's file
        first = (V30_VIDEO.format(video_key=key, chunk_index=0, file_index=0) if v30
                 else V21_VIDEO.format(episode_chunk=0, video_key=key, episode_index=0))
        features[key]["info"] = _video_info(root / first, version)

    info = {"codebase_version": version, "robot_type": robot_type, "total_episodes": episodes,
            "total_frames": frames_total, "total_tasks": len(task_list)}
    if v30:
        info.update({"chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                     "fps": fps, "splits": {"train": f"0:{episodes}"}, "data_path": V30_DATA,
                     "video_path": V30_VIDEO, "features": features})
        _write_tasks_parquet(root / "meta" / "tasks.parquet", task_list)
        path = _mkparent(root / V30_EPISODES.format(chunk_index=0, file_index=0))
        ep_table = pa.Table.from_pylist(ep_rows)
        with pq.ParquetWriter(path, ep_table.schema, compression="snappy", use_dictionary=True) as w:
            for start in range(0, len(ep_rows), META_BUFFER):  # LeRobot's metadata_buffer_size flushes
                w.write_table(ep_table.slice(start, META_BUFFER))
        _write_json(root / "meta" / "stats.json", _tolist(_aggregate(ep_stats)))
    else:
        info.update({"total_videos": episodes * len(cameras), "total_chunks": math.ceil(episodes / CHUNKS_SIZE),
                     "chunks_size": CHUNKS_SIZE, "fps": fps, "splits": {"train": f"0:{episodes}"},
                     "data_path": V21_DATA, "video_path": V21_VIDEO, "features": features})
        _write_jsonl(root / "meta" / "episodes.jsonl", ep_rows)
        _write_jsonl(root / "meta" / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(task_list)])
        _write_jsonl(root / "meta" / "episodes_stats.jsonl",
                     [{"episode_index": i, "stats": _tolist(s)} for i, s in enumerate(ep_stats)])
    _write_json(root / "meta" / "info.json", info)
    return root


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _column(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(typ):
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), typ.value_type), typ.list_size)
    return pa.array(values, typ)
