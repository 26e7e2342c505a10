"""Reading LeRobot dataset folders (v2.0/v2.1: one parquet + one mp4 per episode; v3.0: many episodes per file).

``read_source`` parses only metadata (``meta/``) and returns a ``Source``: a typed, picklable description of
every episode and where its rows and video segments are. Reading the data itself is ``load_episodes``.
Anything wrong with the folder as a whole raises ``SourceError`` naming the file and the reason.
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._store import filesystem

SUPPORTED = {"v2.0": "v2", "v2.1": "v2", "v3.0": "v3"}
# Columns that say *where* a row sits in its source, not what happened: excluded from content ids.
POSITIONAL = ("index", "episode_index", "task_index")
NON_NUMERIC = ("video", "image", "string")


class SourceError(ValueError):
    """The source folder as a whole cannot be read. ``.path`` is the offending file."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class EpisodeError(ValueError):
    """One episode (or the file holding it) is bad; ``.item`` names it for the quarantine."""

    def __init__(self, item: str, reason: str):
        super().__init__(f"{item}: {reason}")
        self.item, self.reason = item, reason


@dataclass(frozen=True)
class VideoRef:
    path: str  # relative to the source root
    from_ts: float
    to_ts: float


@dataclass(frozen=True)
class EpisodeRef:
    index: int
    length: int
    tasks: tuple[str, ...]
    data_path: str
    videos: tuple[tuple[str, VideoRef], ...] = ()

    @property
    def label(self) -> str:
        return f"episode {self.index}"


@dataclass(frozen=True)
class Source:
    uri: str
    name: str
    codebase_version: str
    info: dict = field(hash=False, compare=False)
    modality: dict | None = field(hash=False, compare=False)
    episodes: tuple[EpisodeRef, ...] = ()
    # (item, reason) found in the metadata itself (duplicated episode rows); reported, never dropped silently
    problems: tuple[tuple[str, str], ...] = field(default=(), hash=False, compare=False)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def robot_type(self) -> str:
        return self.info.get("robot_type") or "unknown"

    @property
    def features(self) -> dict:
        return self.info["features"]

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(k for k, f in self.features.items() if f.get("dtype") == "video")


# --- metadata ---------------------------------------------------------------------------------------------

def _safe_template(template: str, what: str) -> str:
    if not isinstance(template, str) or not template:
        raise SourceError("meta/info.json", f"{what} is missing")
    if template.startswith(("/", "\\")) or "://" in template or ".." in template.replace("\\", "/").split("/"):
        raise SourceError("meta/info.json", f"{what} {template!r} escapes the dataset folder (absolute or '..')")
    return template


def _fmt(template: str, **kw) -> str:
    path = posixpath.normpath(template.format(**kw))
    if path.startswith("/") or path.startswith(".."):
        raise SourceError("meta/info.json", f"path {path!r} escapes the dataset folder")
    return path


class _Reader:
    def __init__(self, uri: str, storage_options: dict | None):
        self.fs, self.root = filesystem(uri, storage_options)

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def json(self, rel: str) -> dict:
        try:
            with self.fs.open(self.path(rel), "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            raise SourceError(rel, "file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SourceError(rel, f"invalid JSON ({e})") from None

    def jsonl(self, rel: str) -> list[dict]:
        try:
            with self.fs.open(self.path(rel), "rb") as f:
                return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
        except FileNotFoundError:
            raise SourceError(rel, "file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SourceError(rel, f"invalid JSON lines ({e})") from None

    def parquet(self, rel: str) -> pa.Table:
        try:
            with self.fs.open(self.path(rel), "rb") as f:
                return pq.read_table(io.BytesIO(f.read()))
        except FileNotFoundError:
            raise EpisodeError(rel, "file not found") from None
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
            raise EpisodeError(rel, f"unreadable parquet ({str(e).splitlines()[0][:160]})") from None

    def glob(self, pattern: str) -> list[str]:
        root = self.root.rstrip("/") + "/"
        return sorted(p[len(root):] if p.startswith(root) else p for p in self.fs.glob(self.path(pattern)))


def read_source(uri: str, storage_options: dict | None = None, name: str | None = None) -> Source:
    """Parse a LeRobot dataset's metadata. Raises SourceError for a folder that cannot be ingested at all."""
    r = _Reader(uri, storage_options)
    info = r.json("meta/info.json")
    version = info.get("codebase_version")
    if version not in SUPPORTED:
        raise SourceError("meta/info.json", f"unknown codebase_version {version!r} (supported: {', '.join(SUPPORTED)})")
    for key in ("fps", "features"):
        if key not in info:
            raise SourceError("meta/info.json", f"missing {key!r}")
    data_t = _safe_template(info.get("data_path"), "data_path")
    video_t = _safe_template(info.get("video_path"), "video_path") if any(
        f.get("dtype") == "video" for f in info["features"].values()) else None
    modality = r.json("meta/modality.json") if r.exists("meta/modality.json") else None
    if modality is not None:  # GR00T layout: validated here so a bad one never lands (see lake._embodiment)
        from ._embodiment import embodiment

        try:
            embodiment(info, modality)
        except (ValueError, TypeError) as e:
            raise SourceError("meta/modality.json", str(e)) from None
    eps = (_episodes_v2 if SUPPORTED[version] == "v2" else _episodes_v3)(r, info, data_t, video_t)
    eps, problems = _unique(eps, "meta/episodes.jsonl" if SUPPORTED[version] == "v2" else "meta/episodes")
    if not eps and not problems:
        raise SourceError("meta/info.json", "dataset has no episodes")
    name = name or posixpath.basename(r.root.rstrip("/"))
    return Source(uri=uri, name=name, codebase_version=version, info=info, modality=modality, episodes=tuple(eps),
                  problems=tuple(problems))


def _unique(eps: list[EpisodeRef], meta: str) -> tuple[list[EpisodeRef], list[tuple[str, str]]]:
    """One EpisodeRef per episode_index. Repeated rows are reported: identical ones keep the episode (once),
    differing ones quarantine it (which row is right cannot be told)."""
    by_index: dict[int, list[EpisodeRef]] = {}
    for e in eps:
        by_index.setdefault(e.index, []).append(e)
    out, problems = [], []
    for i, rows in by_index.items():
        if len(rows) == 1:
            out.append(rows[0])
        elif all(r == rows[0] for r in rows):
            out.append(rows[0])
            problems.append((f"{meta} episode {i}", f"episode_index {i} appears in {len(rows)} rows of the episode "
                                                    f"metadata (identical: the episode is ingested once)"))
        else:
            problems.append((f"{meta} episode {i}", f"episode_index {i} appears in {len(rows)} rows of the episode "
                                                    f"metadata that differ (length, tasks or files): not ingested"))
    return out, problems


def _episodes_v2(r: _Reader, info: dict, data_t: str, video_t: str | None) -> list[EpisodeRef]:
    chunks = int(info.get("chunks_size", 1000))
    cams = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    fps = float(info["fps"])
    out = []
    for row in r.jsonl("meta/episodes.jsonl"):
        i, n = int(row["episode_index"]), int(row["length"])
        videos = tuple(
            (cam, VideoRef(_fmt(video_t, episode_chunk=i // chunks, video_key=cam, episode_index=i), 0.0, n / fps))
            for cam in cams
        )
        out.append(EpisodeRef(i, n, tuple(row.get("tasks") or ()), _fmt(data_t, episode_chunk=i // chunks, episode_index=i), videos))
    return out


def _episodes_v3(r: _Reader, info: dict, data_t: str, video_t: str | None) -> list[EpisodeRef]:
    files = r.glob("meta/episodes/*/*.parquet")
    if not files:
        raise SourceError("meta/episodes", "no episode metadata files")
    tables = []
    for f in files:
        try:
            tables.append(r.parquet(f))
        except EpisodeError as e:
            raise SourceError(f, e.reason) from None
    meta = pa.concat_tables(tables, promote_options="default").to_pylist()
    cams = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    out = []
    for row in meta:
        try:
            videos = tuple(
                (cam, VideoRef(
                    _fmt(video_t, video_key=cam, chunk_index=int(row[f"videos/{cam}/chunk_index"]),
                         file_index=int(row[f"videos/{cam}/file_index"])),
                    float(row[f"videos/{cam}/from_timestamp"]), float(row[f"videos/{cam}/to_timestamp"])))
                for cam in cams
            )
            data_path = _fmt(data_t, chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))
        except (KeyError, TypeError) as e:
            raise SourceError("meta/episodes", f"episode {row.get('episode_index')}: missing field {e}") from None
        out.append(EpisodeRef(int(row["episode_index"]), int(row["length"]), tuple(row.get("tasks") or ()), data_path, videos))
    return sorted(out, key=lambda e: e.index)


# --- data -------------------------------------------------------------------------------------------------

_DTYPES = {
    "float32": pa.float32(), "float64": pa.float64(), "float16": pa.float16(),
    "int64": pa.int64(), "int32": pa.int32(), "int16": pa.int16(), "int8": pa.int8(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(), "bool": pa.bool_(),
}


def frame_fields(features: dict) -> list[pa.Field]:
    """Arrow fields for the frame table: scalars for shape [1], fixed-size lists otherwise (flattened)."""
    out = []
    for name, f in features.items():
        dtype = f.get("dtype")
        if dtype in ("video",):
            continue
        if dtype == "image":
            out.append(pa.field(name, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
            continue
        if dtype == "string":
            out.append(pa.field(name, pa.string()))
            continue
        if dtype not in _DTYPES:
            raise SourceError("meta/info.json", f"feature {name!r} has unsupported dtype {dtype!r}")
        size = int(np.prod(f.get("shape") or [1]))
        t = _DTYPES[dtype]
        out.append(pa.field(name, t if list(f.get("shape") or [1]) == [1] else pa.list_(t, size),
                            metadata={"shape": json.dumps(list(f.get("shape") or [1]))}))
    return out


def _cast_column(col: pa.ChunkedArray, field_: pa.Field, item: str) -> pa.Array:
    col = col.combine_chunks()
    want = field_.type
    if pa.types.is_fixed_size_list(want):
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
            raise EpisodeError(item, f"feature {field_.name!r} is a scalar, info.json says shape {field_.metadata[b'shape'].decode()}")
        lengths = pc_list_lengths(col)
        if len(lengths) and (lengths.min() != want.list_size or lengths.max() != want.list_size):
            bad = int(lengths[lengths != want.list_size][0])
            raise EpisodeError(item, f"feature {field_.name!r} has {bad} values per frame, info.json says {want.list_size}")
        values = col.flatten().cast(want.value_type, safe=True)
        return pa.FixedSizeListArray.from_arrays(values, want.list_size)
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        lengths = pc_list_lengths(col)
        if len(lengths) and (lengths.min() != 1 or lengths.max() != 1):
            raise EpisodeError(item, f"feature {field_.name!r} has {int(lengths.max())} values per frame, info.json says 1")
        col = col.flatten()
    return col.cast(want, safe=True)


def pc_list_lengths(col) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_value_length(col).to_numpy(zero_copy_only=False)


def episode_frames(table: pa.Table, ep: EpisodeRef, fields: list[pa.Field], data_path: str,
                   fps: float | None = None) -> pa.Table:
    """The rows of episode ``ep`` from its data file, cast to the lake's frame schema and validated.

    Raises EpisodeError for missing columns, wrong shapes, wrong row counts, non-finite values and (with
    ``fps``) timestamps that are not strictly increasing by 1/fps (see ``check_timestamps``).
    """
    import pyarrow.compute as pc

    item = f"{data_path} episode {ep.index}"
    if "episode_index" not in table.column_names:
        raise EpisodeError(data_path, "no episode_index column")
    rows = table.filter(pc.equal(table["episode_index"], ep.index))
    if rows.num_rows != ep.length:
        raise EpisodeError(item, f"{rows.num_rows} rows in the data file, metadata says length {ep.length}")
    cols = {}
    for f in fields:
        if f.name not in rows.column_names:
            raise EpisodeError(item, f"column {f.name!r} from info.json is missing")
        try:
            arr = _cast_column(rows[f.name], f, item)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise EpisodeError(item, f"feature {f.name!r}: {str(e).splitlines()[0][:120]}") from None
        vt = arr.type.value_type if pa.types.is_fixed_size_list(arr.type) else arr.type
        if pa.types.is_floating(vt):
            vals = (arr.flatten() if pa.types.is_fixed_size_list(arr.type) else arr).to_numpy(zero_copy_only=False)
            finite = np.isfinite(vals.reshape(len(arr), -1)).all(axis=1)
            if not finite.all():
                raise EpisodeError(item, f"feature {f.name!r} has NaN/inf at frame {int(np.argmin(finite))}")
        cols[f.name] = arr
    if fps and "timestamp" in cols:
        check_timestamps(cols["timestamp"].to_numpy(zero_copy_only=False), fps, item)
    return pa.table(cols, schema=pa.schema(fields))


TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobot's own (``check_timestamps_sync``)


def check_timestamps(ts: np.ndarray, fps: float, item: str, tol: float = TIMESTAMP_TOLERANCE_S) -> None:
    """Timestamps of one episode, in row order, must increase strictly and step by 1/fps within ``tol``
    seconds (LeRobot's check). Raises EpisodeError naming the first bad frame index."""
    ts = np.asarray(ts, np.float64).reshape(-1)
    d = np.diff(ts)
    back = np.flatnonzero(d <= 0)
    if len(back):
        i = int(back[0]) + 1
        raise EpisodeError(item, f"timestamps are not strictly increasing at frame {i} "
                                 f"({ts[i - 1]:.6f} s, then {ts[i]:.6f} s)")
    off = np.flatnonzero(np.abs(d - 1.0 / fps) > tol)
    if len(off):
        i = int(off[0]) + 1
        raise EpisodeError(item, f"timestamp at frame {i} is {d[i - 1]:.6f} s after the previous one, fps {fps:g} "
                                 f"says {1.0 / fps:.6f} s (tolerance {tol:g} s)")


def content_id(frames: pa.Table, tasks: tuple[str, ...]) -> str:
    """Stable episode id from content: every non-positional value plus the task strings."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(frames.column_names):
        if name in POSITIONAL:
            continue
        col = frames[name].combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            col = col.flatten()
        h.update(name.encode() + b"\0" + str(col.type).encode() + b"\0")
        if pa.types.is_struct(col.type) or pa.types.is_string(col.type):
            for v in col.to_pylist():
                h.update(repr(v).encode())
        else:
            h.update(np.ascontiguousarray(col.to_numpy(zero_copy_only=False)).tobytes())
    for t in tasks:
        h.update(b"task\0" + t.encode())
    return "ep_" + h.hexdigest()[:20]
