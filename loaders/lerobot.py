"""``LeRobotStyleDataset``: unpacked, map-style access to lake frames with LeRobotDataset's ``__getitem__``.

Index ``idx`` walks the chosen episodes (ordered by source, then source episode index) frame by frame. An
item holds the frame's columns as tensors (source names: ``observation.state``, ``action``, ``timestamp``,
``frame_index``, ``episode_index``, ``index``, ...), each camera as float32 (C, H, W) in [0, 1], and ``task``.
For a key in ``delta_timestamps`` the value is stacked at ``frame + round(dt * fps)`` for each ``dt``, the
query frames clamped to the episode and ``{key}_is_pad`` marking the clamped ones, as LeRobot does (a camera
with one offset is squeezed to (C, H, W), as LeRobot does). The numeric frame columns of all chosen episodes are
read once per frames table (one scan) and kept in memory.

Images come from one of two places. If the lake holds decoded frames of a camera (``lk.decode_videos()`` /
``lake decode``: every frame decoded once into the table ``decoded_frames``), they are taken by row: one sorted Lance
take per camera per batch (the DataLoader calls ``__getitems__`` with a whole batch of indices), no decoding. Else
they are decoded for just the frames an item needs (``lk.video_readers``: only the GOPs holding them); an episode
that keeps being asked for while it sits in the LRU cache of ``cache_episodes`` episodes (requested frames reaching
a quarter of its length) is decoded whole once and served from the cache after that. ``decoded=None`` (default)
uses the decoded frames of every (episode, camera) the table has and decodes the rest; ``True`` requires them
(ValueError naming what is missing); ``False`` always decodes video.

DataLoader workers may be forked (LeRobot's default), spawned or forkserver'd, persistent or not. The frame columns
are shared memory either way; a worker forked from a process that used Lance (``loaders.forks``) takes decoded frames
and video bytes through its helper process instead of Lance (where each comes from is fixed at construction: table
URI and version, video packet indices).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from fractions import Fraction
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from . import forks as _forks


def check_delta_timestamps(delta_timestamps: dict[str, list[float]], fps: float, tolerance_s: float) -> None:
    """Every offset must be a multiple of 1/fps within ``tolerance_s``. Raises ValueError listing the others."""
    off = {k: [t for t in ts if abs(t * fps - round(t * fps)) / fps > tolerance_s] for k, ts in delta_timestamps.items()}
    off = {k: v for k, v in off.items() if v}
    if off:
        raise ValueError(f"delta_timestamps must be multiples of 1/{fps} s (+-{tolerance_s} s); these are not: {off}")


def delta_indices(delta_timestamps: dict[str, list[float]], fps: float) -> dict[str, np.ndarray]:
    """Offsets in frames: ``round(dt * fps)``."""
    return {k: np.array([round(t * fps) for t in ts], dtype=np.int64) for k, ts in delta_timestamps.items()}


def _column_numpy(col: pa.ChunkedArray) -> np.ndarray | None:
    """One frames column as numpy (L, *shape); None for columns that are not numeric (strings, structs)."""
    t = col.type
    shape = []
    while pa.types.is_fixed_size_list(t):
        shape.append(t.list_size)
        t = t.value_type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return None
    arr = col.combine_chunks()
    for _ in shape:
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False).reshape(len(col), *shape)


def _shared(a: np.ndarray) -> torch.Tensor | np.ndarray:
    """``a`` copied into shared memory (a torch tensor, pickled by handle to DataLoader workers); a dtype torch
    cannot hold stays a numpy array."""
    try:
        t = torch.empty(a.shape, dtype=torch.from_numpy(np.empty(0, a.dtype)).dtype).share_memory_()
    except TypeError:
        return np.array(a)
    t.numpy()[...] = a
    return t


def _to_float_chw(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) (any strides) -> float32 in [0, 1], contiguous as LeRobot's frames are."""
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _choose(eps: list[dict], episodes: list, where: str) -> list[dict]:
    """The rows of ``episodes``: lake ids (str), or LeRobot episode indices (int: ``source_episode_index``, when the
    candidates come from one source). KeyError for ones not there, ValueError for indices over several sources."""
    if all(isinstance(e, str) for e in episodes):
        key, name = "episode_id", "episodes"
    elif all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in episodes):
        sources = sorted({e["source"] for e in eps})
        if len(sources) > 1:
            raise ValueError(f"episode indices are ambiguous over the sources {sources} of {where}: pass episode ids "
                             "(lk.episodes()['episode_id']) or choose one source's episodes")
        key, name, episodes = "source_episode_index", "episode indices", [int(e) for e in episodes]
    else:
        raise TypeError(f"episodes must be all lake ids (str) or all LeRobot episode indices (int), got {episodes[:5]}")
    known = {e[key] for e in eps}
    unknown = [e for e in episodes if e not in known]
    if unknown:
        raise KeyError(f"{name} not in {where}: {unknown}")
    wanted = set(episodes)
    return [e for e in eps if e[key] in wanted]


class LakeDatasetMeta:
    """What ``LeRobotDataset.meta`` answers (``fps``, ``features``, ``camera_keys``, ``stats``, ...), for the episodes a
    ``LeRobotStyleDataset`` holds: ``stats`` are the lake's over those episodes (a train split's stats leave the
    validation episodes out), ``features`` LeRobot's of their sources."""

    def __init__(self, lk, episodes: list[dict], fps: float | None, cameras: list[str], starts: np.ndarray):
        self._lake, self._ids, self._cameras = lk, [e["episode_id"] for e in episodes], cameras
        self.fps = int(fps) if fps is not None and float(fps).is_integer() else fps  # LeRobot's is an int
        self._sources = sorted({e["source"] for e in episodes if e["source"]})
        self.robot_type = next((e["robot_type"] for e in episodes if e.get("robot_type")), None)
        self.total_episodes = len(episodes)
        self.total_frames = int(sum(e["length"] for e in episodes))
        # LeRobot's meta.episodes columns that samplers read (EpisodeAwareSampler: dataset_from/to_index)
        from .episode_table import EpisodeTable

        self.episodes = EpisodeTable({"episode_index": list(range(len(episodes))), "episode_id": list(self._ids),
                                      "length": [int(e["length"]) for e in episodes],
                                      "tasks": [[e["task"] or ""] for e in episodes],
                                      "dataset_from_index": starts[:-1].tolist(),
                                      "dataset_to_index": starts[1:].tolist()})
        self._task_list = list(dict.fromkeys(e["task"] or "" for e in episodes))
        self.total_tasks = len(self._task_list)
        self.repo_id = f"lake/{self._sources[0] if len(self._sources) == 1 else 'mixture'}"
        self.root = lk.uri

    @property
    def tasks(self):
        """LeRobot 0.4's ``meta.tasks``: a pandas DataFrame indexed by task string, column ``task_index``."""
        import pandas as pd

        return pd.DataFrame({"task_index": range(len(self._task_list))}, index=pd.Index(self._task_list, name=None))

    @property
    def info(self) -> dict:
        """LeRobot's ``meta.info`` (info.json) for these episodes, as ``lake export`` would write it."""
        return {"codebase_version": "v3.0", "robot_type": self.robot_type, "total_episodes": self.total_episodes,
                "total_frames": self.total_frames, "total_tasks": self.total_tasks, "fps": self.fps,
                "splits": {"train": f"0:{self.total_episodes}"}, "features": self.features}

    @cached_property
    def features(self) -> dict[str, dict]:
        feats = self._lake.features()
        out: dict = {}
        for src in self._sources:
            out.update(feats.get(src, {}))
        return out

    @cached_property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        ids = ", ".join("'" + i.replace("'", "''") + "'" for i in self._ids)
        return self._lake.stats(filter=f"episode_id IN ({ids})", method="lerobot")  # LeRobot 0.4.4's numbers

    @property
    def camera_keys(self) -> list[str]:
        return list(self._cameras)

    @property
    def video_keys(self) -> list[str]:
        return [k for k in self._cameras if self.features.get(k, {}).get("dtype", "video") == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [k for k in self._cameras if self.features.get(k, {}).get("dtype") == "image"]

    @property
    def shapes(self) -> dict[str, tuple]:
        return {k: tuple(f["shape"]) for k, f in self.features.items() if "shape" in f}

    @property
    def names(self) -> dict:
        return {k: f.get("names") for k, f in self.features.items()}


class LeRobotStyleDataset(Dataset):
    """Map-style dataset over the frames of a lake (version), one item per frame (see the module doc).

    ``split`` / ``episodes`` (lake ids, or LeRobot episode indices in a one-source lake) choose episodes; ``version`` reads a lake version or tag; ``cache_episodes``
    bounds the decoded episodes kept; ``decoded`` picks where images come from (see the module doc);
    ``image_transforms`` is applied to each camera's value of an item, as LeRobot does. ``meta`` answers what
    ``LeRobotDataset.meta`` does (``LakeDatasetMeta``). Raises
    ValueError for delta_timestamps off the fps grid, episodes of different fps, or missing decoded frames with
    ``decoded=True``; KeyError for unknown keys or episode ids.
    """

    def __init__(self, lk, split: str | None = None, delta_timestamps: dict[str, list[float]] | None = None,
                 episodes: list[str] | None = None, version=None, tolerance_s: float = 1e-4, cache_episodes: int = 8,
                 decoded: bool | None = None, image_transforms: Callable | None = None):
        if version is not None:
            lk = lk.checkout(version)
        self.lake, self.cache_episodes = lk, max(1, int(cache_episodes))
        eps = lk.episodes(split=split, columns=["episode_id", "source", "source_episode_index", "task", "length", "fps",
                                               "cameras", "robot_type"]).to_pylist()
        if episodes is not None:
            eps = _choose(eps, list(episodes), f"lake version {lk.version}{f' split {split!r}' if split else ''}")
        if not eps:
            raise ValueError(f"no episodes in lake version {lk.version}" + (f" split {split!r}" if split else ""))
        eps.sort(key=lambda e: (e["source"] or "", e["source_episode_index"] or 0, e["episode_id"]))
        self.episode_rows = eps
        self.episode_ids = [e["episode_id"] for e in eps]
        self.starts = np.concatenate([[0], np.cumsum([e["length"] for e in eps])]).astype(np.int64)
        self.cameras = list(dict.fromkeys(c for e in eps for c in (e["cameras"] or [])))
        fps = sorted({float(e["fps"]) for e in eps})
        self.fps = fps[0] if len(fps) == 1 else None
        self.delta_timestamps = dict(delta_timestamps or {})
        self.delta_indices: dict[str, np.ndarray] = {}
        if self.delta_timestamps:
            if self.fps is None:
                raise ValueError(f"delta_timestamps need one fps, but the episodes have fps {fps}")
            columns = set(lk.frames(self.episode_ids[0]).column_names)
            unknown = [k for k in self.delta_timestamps if k not in columns and k not in self.cameras]
            if unknown:
                raise KeyError(f"delta_timestamps keys {unknown} are neither frame columns nor cameras "
                               f"(columns: {sorted(columns)}; cameras: {self.cameras})")
            check_delta_timestamps(self.delta_timestamps, self.fps, tolerance_s)
            self.delta_indices = delta_indices(self.delta_timestamps, self.fps)
        self.image_transforms = image_transforms
        self.meta = LakeDatasetMeta(lk, eps, self.fps, self.cameras, self.starts)
        self._cache: OrderedDict[int, dict] = OrderedDict()
        # frames table -> its numeric columns over the chosen episodes' rows, in shared memory: DataLoader workers
        # get them by handle, so memory does not grow with the number of workers
        self._shared: dict[str, dict[str, torch.Tensor | np.ndarray]] = {}
        self._views: dict[str, dict[str, np.ndarray]] = {}  # numpy views of _shared (per process)
        self._where: dict[str, tuple[str, int, int]] = {}  # episode id -> (frames table, first row, rows)
        self.lengths = np.array([e["length"] for e in eps], np.int64)
        # (episode number, camera) -> (first row in decoded_frames, height, width)
        self._rows: dict[tuple[int, str], tuple[int, int, int]] = {} if decoded is False else self._decoded_rows()
        if decoded:
            missing = [(self.episode_ids[ep], c) for ep in range(len(eps)) for c in self._episode_cameras(ep)
                       if (ep, c) not in self._rows]
            if missing:
                raise ValueError(f"lake version {lk.version} has no decoded frames for {len(missing)} (episode, camera) "
                                 f"pairs, e.g. {missing[:3]}: run lk.decode_videos() (`lake decode`) first, or pass "
                                 "decoded=None to decode those from video")
        self._load_columns()  # here, so that spawned DataLoader workers share them rather than read them each
        # where forked workers read without Lance (see the module doc): (uri, version) of the tables, video indices
        self._tables = {name: (lk.table(name).uri, lk.table(name).version) for name in ("decoded_frames", "videos")
                        if name in lk._entry.tables}
        self._video_metas = {(ep, c): lk._video_meta(self.episode_ids[ep], c) for ep in range(len(eps))
                             for c in self._episode_cameras(ep) if (ep, c) not in self._rows}

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_rows)

    @property
    def features(self) -> dict[str, dict]:
        return self.meta.features

    @property
    def episodes(self) -> None:
        """LeRobot's ``dataset.episodes`` (the episode indices to use, None for all): None, as ``meta.episodes`` holds
        exactly this dataset's episodes (numbered 0..num_episodes-1; their lake ids: ``episode_ids``, their rows:
        ``episode_rows``), so LeRobot's ``EpisodeAwareSampler`` works as with a LeRobotDataset."""
        return None

    streaming = False  # LeRobot's training script asks

    @property
    def repo_id(self) -> str:
        return self.meta.repo_id

    @property
    def root(self) -> str:
        return self.meta.root

    def __getstate__(self):
        # each DataLoader worker decodes for itself; the frame columns travel as shared-memory handles
        return {**self.__dict__, "_cache": OrderedDict(), "_views": {}}

    def locate(self, idx: int) -> tuple[int, int]:
        """(episode number, frame in episode) of dataset index ``idx`` (negative counts from the end)."""
        ep, fr = self._positions([idx])
        return int(ep[0]), int(fr[0])

    def _load_columns(self) -> None:
        """Read the numeric frame columns of the chosen episodes into shared memory (one scan per frames table)."""
        tables: dict[str, list[str]] = {}
        for e in self.episode_ids:
            tables.setdefault(self.lake._episode(e)["frames_table"], []).append(e)
        for table, ids in tables.items():
            self._load_table(table, ids)

    def _load_table(self, table: str, ids: list[str]) -> None:
        import pyarrow.compute as pc

        from lake._schema import unnest

        t = self.lake.table(table).to_table()
        t = t.filter(pc.is_in(t.column("episode_id"), value_set=pa.array(ids, pa.string())))
        order = [("episode_id", "ascending")] + ([("frame_index", "ascending")] if "frame_index" in t.column_names else [])
        t = unnest(t.sort_by(order))
        cols = {name: a for name, col in zip(t.column_names, t.columns) if (a := _column_numpy(col)) is not None}
        eid = t.column("episode_id").to_numpy(zero_copy_only=False)
        bounds = np.flatnonzero(eid[1:] != eid[:-1]) + 1 if len(eid) else np.zeros(0, np.int64)
        starts, stops = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(eid)]])
        self._shared[table] = {name: _shared(col) for name, col in cols.items()}
        for a, b in zip(starts.tolist(), stops.tolist()):
            if b > a:
                self._where[str(eid[a])] = (table, a, b - a)
        for e in ids:
            self._where.setdefault(e, (table, 0, 0))

    def _columns_of(self, table: str) -> dict[str, np.ndarray]:
        if table not in self._views:
            self._views[table] = {name: t.numpy() if isinstance(t, torch.Tensor) else t
                                  for name, t in self._shared[table].items()}
        return self._views[table]

    def _episode(self, ep: int) -> dict:
        """{"videos": {camera: uint8 tensor (L, C, H, W)}, "asked": {camera: frames requested}, "readers": {camera:
        lake VideoReader}}, LRU-cached; ValueError when the frames table holds another number of frames than the
        episodes table says."""
        if ep in self._cache:
            self._cache.move_to_end(ep)
            return self._cache[ep]
        eid = self.episode_ids[ep]
        rows, length = self._where[eid][2], int(self.episode_rows[ep]["length"])
        if rows != length:
            raise ValueError(f"episode {eid}: {rows} frames, episodes table says {length}")
        entry = {"videos": {}, "asked": {}, "readers": {}}
        self._cache[ep] = entry
        while len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return entry

    def _video(self, ep: int, entry: dict, camera: str, q: np.ndarray) -> torch.Tensor:
        """Frames ``q`` (in range) of a camera as uint8 (len(q), C, H, W)."""
        length = int(self.episode_rows[ep]["length"])
        if camera not in entry["videos"]:
            asked = entry["asked"].get(camera, 0) + len(q)
            entry["asked"][camera] = asked
            if not entry["readers"]:  # every camera at once, per cached episode: opening one costs about what
                # decoding a frame does, opening all costs the same as one
                entry["readers"] = self._readers(ep)
            reader = entry["readers"].get(camera)
            if reader is None:  # not one of this episode's cameras: the lake's KeyError says so
                reader = self.lake.video_reader(self.episode_ids[ep], camera)
            if asked * 4 < length:  # few frames of this episode so far: decode just these
                v = reader.frames(q)
                return torch.from_numpy(np.ascontiguousarray(v)).permute(0, 3, 1, 2)
            v = reader.all()
            if len(v) != length:
                raise ValueError(f"episode {self.episode_ids[ep]} camera {camera}: {len(v)} frames decoded, "
                                 f"episode has {length}")
            entry["videos"][camera] = torch.from_numpy(np.ascontiguousarray(v)).permute(0, 3, 1, 2)
        return entry["videos"][camera][torch.from_numpy(q)]

    def _readers(self, ep: int) -> dict:
        """{camera: VideoReader} of episode ``ep``'s cameras: from the lake, or in a forked worker with bytes its
        helper process reads."""
        cameras = self._episode_cameras(ep)
        if not _forks.lance_forbidden():
            return self.lake.video_readers(self.episode_ids[ep], cameras)
        from lake._video import Segment, VideoReader

        cameras = [c for c in cameras if (ep, c) in self._video_metas]  # the others come from decoded frames
        metas = [self._video_metas[(ep, c)] for c in cameras]
        uri, version = self._tables["videos"]
        blobs = _forks.helper().blobs(uri, version, self.lake.storage_options, "data", [m["_rowid"] for m in metas])
        out = {}
        for camera, m, blob in zip(cameras, metas, blobs):
            seg = Segment(m["codec"], m["extradata"], m["width"], m["height"], m["pix_fmt"],
                          Fraction(m["time_base_num"], m["time_base_den"]), b"", m["packet_offsets"], m["packet_pts"],
                          m["packet_key"], m["skip"], m["frames"])
            out[camera] = VideoReader(self.episode_ids[ep], camera, seg, pa.BufferReader(blob))
        return out

    def _take(self, table: str, rows: np.ndarray, columns: list[str]) -> pa.Table:
        """Rows of a lake table at the pinned version: a Lance take, or the helper's in a forked worker."""
        if not _forks.lance_forbidden():
            return self.lake.table(table).take(rows, columns=columns)
        uri, version = self._tables[table]
        return _forks.helper().take(uri, version, self.lake.storage_options, rows, columns)

    def _episode_cameras(self, ep: int) -> list[str]:
        """The cameras an item of episode ``ep`` decodes: the episode's own."""
        return [c for c in self.cameras if c in (self.episode_rows[ep]["cameras"] or [])]

    def _decoded_rows(self) -> dict[tuple[int, str], tuple[int, int, int]]:
        """Where each chosen (episode, camera) starts in ``decoded_frames`` (row offsets at the pinned version: one scan
        of the key columns). A video whose rows are not its frames 0..length-1 in order is left out (decoded from
        video instead)."""
        from lake._decoded import TABLE

        if TABLE not in self.lake._entry.tables:
            return {}
        t = self.lake.table(TABLE).to_table(columns=["episode_id", "camera", "frame_index", "height", "width"])
        eid = t["episode_id"].to_numpy(zero_copy_only=False)
        cam = t["camera"].to_numpy(zero_copy_only=False)
        frame = t["frame_index"].to_numpy()
        if not len(eid):
            return {}
        starts = np.flatnonzero(np.r_[True, (eid[1:] != eid[:-1]) | (cam[1:] != cam[:-1]), True])
        number = {e: n for n, e in enumerate(self.episode_ids)}
        out = {}
        for a, b in zip(starts[:-1].tolist(), starts[1:].tolist()):
            ep = number.get(eid[a])
            if ep is None or b - a != int(self.episode_rows[ep]["length"]) or frame[a] != 0 or frame[b - 1] != b - a - 1:
                continue
            if not (np.diff(frame[a:b]) == 1).all():
                continue
            out[(ep, str(cam[a]))] = (a, int(t["height"][a].as_py()), int(t["width"][a].as_py()))
        return out

    def _positions(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(episode numbers, frames in episode) of dataset indices (negative count from the end)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        n = len(self)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise IndexError(f"index {int(idx[bad][0])} out of range for {n} frames")
        idx = idx % n
        ep = np.searchsorted(self.starts, idx, side="right") - 1
        return ep, idx - self.starts[ep]

    def _query(self, ep: np.ndarray, fr: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k, len(delta)) frames ``fr + delta`` clamped to their episodes, and which were clamped (``*_is_pad``)."""
        q = fr[:, None] + delta[None, :]
        last = self.lengths[ep][:, None] - 1
        return np.clip(q, 0, last), (q < 0) | (q > last)

    def _decoded_frames(self, wanted: dict[str, tuple[list[int], np.ndarray]], ep: np.ndarray) -> dict[str, list]:
        """{camera: [float32 (len(q), C, H, W) in [0, 1] per item]} for ``wanted`` = {camera: (items, clamped query
        frames (k, nq))} of decoded (episode, camera) pairs: one sorted Lance take for every camera of the batch, one
        conversion to float per camera and frame size."""
        rows = {cam: np.array([self._rows[(int(ep[b]), cam)][0] for b in items])[:, None] + q
                for cam, (items, q) in wanted.items()}
        uniq, inv = np.unique(np.concatenate([r.ravel() for r in rows.values()]), return_inverse=True)
        col = self._take("decoded_frames", uniq, ["pixels"]).column("pixels").combine_chunks()
        offs = np.frombuffer(col.buffers()[1], np.int64)[col.offset:col.offset + len(col) + 1]
        data = np.frombuffer(col.buffers()[2], np.uint8)
        out, at = {}, 0
        for cam, (items, q) in wanted.items():
            pos = inv[at:at + q.size].reshape(q.shape)
            at += q.size
            shapes = [self._rows[(int(ep[b]), cam)][1:] for b in items]
            out[cam] = [None] * len(items)
            for h, w in dict.fromkeys(shapes):  # one size per camera, unless sources differ
                same = [n for n, s in enumerate(shapes) if s == (h, w)]
                x = np.stack([data[offs[j]:offs[j] + h * w * 3] for n in same for j in pos[n].tolist()])
                x = _to_float_chw(torch.from_numpy(x).view(len(same), q.shape[1], h, w, 3).permute(0, 1, 4, 2, 3))
                for n, v in zip(same, x.unbind(0)):
                    out[cam][n] = v
        return out

    def __getitem__(self, idx: int) -> dict:
        return self.__getitems__([idx])[0]

    def __getitems__(self, indices) -> list[dict]:
        """The items of ``indices``, as ``[self[i] for i in indices]`` (what a DataLoader asks for one batch), built
        a column at a time for the whole batch; decoded frames are taken with one Lance take per batch."""
        ep, fr = self._positions(indices)
        for e in np.unique(ep).tolist():
            self._episode(e)  # frame columns loaded, lengths checked, LRU touched
        items: list[dict] = [{} for _ in range(len(ep))]
        where = [self._where[self.episode_ids[e]] for e in ep.tolist()]
        for table in dict.fromkeys(w[0] for w in where):
            members = np.array([b for b, w in enumerate(where) if w[0] == table])
            base = np.array([where[b][1] for b in members], np.int64)
            cols = self._columns_of(table)
            # one gather per column; the items hold views of it (copied once more by collate's stack)
            batch = {name: col[base + fr[members]] for name, col in cols.items()}
            for key, delta in self.delta_indices.items():
                if key not in self.cameras:
                    q, pad = self._query(ep[members], fr[members], delta)
                    batch[key], batch[f"{key}_is_pad"] = cols[key][base[:, None] + q], pad
            for name, value in batch.items():
                for b, v in zip(members.tolist(), torch.from_numpy(value).unbind(0)):
                    items[b][name] = v
        wanted, video = {}, []
        for cam in self.cameras:
            delta = self.delta_indices.get(cam)
            # without an offset a camera is the current frame, for the episodes that have it
            who = np.array([b for b, e in enumerate(ep.tolist())
                            if delta is not None or cam in (self.episode_rows[e]["cameras"] or [])], np.int64)
            if not len(who):
                continue
            q, pad = self._query(ep[who], fr[who], delta if delta is not None else np.zeros(1, np.int64))
            if delta is not None:
                for b, p in zip(who.tolist(), torch.from_numpy(pad).unbind(0)):
                    items[b][f"{cam}_is_pad"] = p
            taken = np.array([(int(ep[b]), cam) in self._rows for b in who])
            if taken.any():
                wanted[cam] = (who[taken].tolist(), q[taken])
            video += [(cam, delta is not None, b, qb) for b, qb, t in zip(who.tolist(), q, taken) if not t]
            for b in who.tolist():
                items[b][cam] = None  # placeholder: keys in camera order
        for cam, frames in (self._decoded_frames(wanted, ep) if wanted else {}).items():
            squeeze = cam in self.delta_indices
            for b, x in zip(wanted[cam][0], frames):
                items[b][cam] = x.squeeze(0) if squeeze else x[0]  # LeRobot squeezes a single query
        for cam, squeeze, b, qb in sorted(video, key=lambda v: v[2]):  # an item's cameras together: the episode's
            # readers, opened for all its cameras at once, are still in the LRU cache for the second camera
            x = _to_float_chw(self._video(int(ep[b]), self._episode(int(ep[b])), cam, qb))
            items[b][cam] = x.squeeze(0) if squeeze else x[0]
        for item, e in zip(items, ep.tolist()):
            if self.image_transforms is not None:
                for cam in self.cameras:
                    if cam in item:
                        item[cam] = self.image_transforms(item[cam])
            item["task"] = self.episode_rows[e]["task"] or ""
            item["episode_id"] = self.episode_ids[e]
        return items
