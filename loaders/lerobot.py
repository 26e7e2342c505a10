"""``LeRobotStyleDataset``: unpacked, map-style access to lake frames with LeRobotDataset's ``__getitem__``.

Index ``idx`` walks the chosen episodes (ordered by source, then source episode index) frame by frame. An
item holds the frame's columns as tensors (source names: ``observation.state``, ``action``, ``timestamp``,
``frame_index``, ``episode_index``, ``index``, ...), each camera as float32 (C, H, W) in [0, 1], and ``task``.
For a key in ``delta_timestamps`` the value is stacked at ``frame + round(dt * fps)`` for each ``dt``, the
query frames clamped to the episode and ``{key}_is_pad`` marking the clamped ones, as LeRobot does (a camera
with one offset is squeezed to (C, H, W), as LeRobot does). The numeric frame columns of all chosen episodes are
read once per frames table (one scan) and kept in memory. Images are decoded for just the frames an item needs
(``lk.video(..., frames=...)``: only the GOPs holding them); an episode that keeps being asked for while it sits in
the LRU cache of ``cache_episodes`` episodes (requested frames reaching a quarter of its length) is decoded whole
once and served from the cache after that.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset


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


class LeRobotStyleDataset(Dataset):
    """Map-style dataset over the frames of a lake (version), one item per frame (see the module doc).

    ``split`` / ``episodes`` (ids) choose episodes; ``version`` reads a lake version or tag; ``cache_episodes``
    bounds the decoded episodes kept. Raises ValueError for delta_timestamps off the fps grid or episodes of
    different fps, KeyError for unknown keys or episode ids.
    """

    def __init__(self, lk, split: str | None = None, delta_timestamps: dict[str, list[float]] | None = None,
                 episodes: list[str] | None = None, version=None, tolerance_s: float = 1e-4, cache_episodes: int = 8):
        if version is not None:
            lk = lk.checkout(version)
        self.lake, self.cache_episodes = lk, max(1, int(cache_episodes))
        eps = lk.episodes(split=split, columns=["episode_id", "source", "source_episode_index", "task", "length", "fps",
                                               "cameras"]).to_pylist()
        if episodes is not None:
            known = {e["episode_id"] for e in eps}
            unknown = [e for e in episodes if e not in known]
            if unknown:
                raise KeyError(f"episodes not in lake version {lk.version}{f' split {split!r}' if split else ''}: {unknown}")
            wanted = set(episodes)
            eps = [e for e in eps if e["episode_id"] in wanted]
        if not eps:
            raise ValueError(f"no episodes in lake version {lk.version}" + (f" split {split!r}" if split else ""))
        eps.sort(key=lambda e: (e["source"] or "", e["source_episode_index"] or 0, e["episode_id"]))
        self.episodes = eps
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
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._columns: dict[str, dict[str, np.ndarray]] = {}  # episode id -> numeric columns (L, ...), loaded by table

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self):
        return {**self.__dict__, "_cache": OrderedDict()}  # each DataLoader worker decodes for itself

    def locate(self, idx: int) -> tuple[int, int]:
        """(episode number, frame in episode) of dataset index ``idx`` (negative counts from the end)."""
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} out of range for {n} frames")
        idx = idx % n
        ep = bisect.bisect_right(self.starts, idx) - 1
        return ep, idx - int(self.starts[ep])

    def _load_columns(self, ep: int) -> None:
        """Read the numeric frame columns of every chosen episode in ``ep``'s frames table (one scan)."""
        import pyarrow.compute as pc

        from lake._schema import unnest

        table = self.lake._episode(self.episode_ids[ep])["frames_table"]
        ids = [e for e in self.episode_ids if self.lake._episode(e)["frames_table"] == table]
        t = self.lake.table(table).to_table()
        t = t.filter(pc.is_in(t.column("episode_id"), value_set=pa.array(ids, pa.string())))
        order = [("episode_id", "ascending")] + ([("frame_index", "ascending")] if "frame_index" in t.column_names else [])
        t = unnest(t.sort_by(order))
        cols = {name: a for name, col in zip(t.column_names, t.columns) if (a := _column_numpy(col)) is not None}
        eid = t.column("episode_id").to_numpy(zero_copy_only=False)
        bounds = np.flatnonzero(eid[1:] != eid[:-1]) + 1 if len(eid) else np.zeros(0, np.int64)
        starts, stops = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(eid)]])
        for a, b in zip(starts.tolist(), stops.tolist()):
            if b > a:
                self._columns[str(eid[a])] = {name: col[a:b] for name, col in cols.items()}
        for e in ids:
            self._columns.setdefault(e, {name: col[:0] for name, col in cols.items()})

    def _episode(self, ep: int) -> dict:
        """{"columns": {name: ndarray (L, ...)}, "videos": {camera: uint8 tensor (L, C, H, W)}, "asked": {camera:
        frames requested}, "readers": {camera: lake VideoReader}}, LRU-cached (the columns stay in memory
        regardless)."""
        if ep in self._cache:
            self._cache.move_to_end(ep)
            return self._cache[ep]
        eid = self.episode_ids[ep]
        if eid not in self._columns:
            self._load_columns(ep)
        cols = self._columns[eid]
        length = int(self.episodes[ep]["length"])
        rows = len(next(iter(cols.values()))) if cols else length
        if rows != length:
            raise ValueError(f"episode {eid}: {rows} frames, episodes table says {length}")
        entry = {"columns": cols, "videos": {}, "asked": {}, "readers": {}}
        self._cache[ep] = entry
        while len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return entry

    def _video(self, ep: int, entry: dict, camera: str, q: np.ndarray) -> torch.Tensor:
        """Frames ``q`` (in range) of a camera as uint8 (len(q), C, H, W)."""
        length = int(self.episodes[ep]["length"])
        if camera not in entry["videos"]:
            asked = entry["asked"].get(camera, 0) + len(q)
            entry["asked"][camera] = asked
            if not entry["readers"]:  # every camera at once, per cached episode: opening one costs about what
                # decoding a frame does, opening all costs the same as one
                entry["readers"] = self.lake.video_readers(self.episode_ids[ep], self._episode_cameras(ep))
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

    def _episode_cameras(self, ep: int) -> list[str]:
        """The cameras an item of episode ``ep`` decodes: the episode's own."""
        return [c for c in self.cameras if c in (self.episodes[ep]["cameras"] or [])]

    def __getitem__(self, idx: int) -> dict:
        ep, i = self.locate(int(idx))
        length = int(self.episodes[ep]["length"])
        entry = self._episode(ep)
        item: dict = {name: torch.as_tensor(col[i]) for name, col in entry["columns"].items()}
        for key, delta in self.delta_indices.items():
            q = i + delta
            pad = (q < 0) | (q >= length)
            q = np.clip(q, 0, length - 1)
            if key in self.cameras:
                frames = self._video(ep, entry, key, q).float() / 255.0
                item[key] = frames.squeeze(0)  # LeRobot squeezes a single query
            else:
                item[key] = torch.as_tensor(entry["columns"][key][q])
            item[f"{key}_is_pad"] = torch.from_numpy(pad)
        for cam in self.cameras:
            if cam not in self.delta_indices and cam in (self.episodes[ep]["cameras"] or []):
                item[cam] = self._video(ep, entry, cam, np.array([i], np.int64))[0].float() / 255.0
        item["task"] = self.episodes[ep]["task"] or ""
        item["episode_id"] = self.episode_ids[ep]
        return item
