"""Feature statistics: computed per episode at ingestion, aggregated on read.

Per-episode stats live in the episodes table, so global and per-split stats are always current after an
append and never reread frames: ``aggregate_columns`` merges them exactly for count/mean/std/min/max (pooled
moments, vectorized over the ``stats`` column: no Python per episode) and takes q01/q99 from the summed
per-episode quantile sketches (``_sketch``: 1% relative error for numeric features, exact for cameras).
Episodes written before sketches existed fall back, as LeRobot's ``aggregate_stats`` does, to count-weighted
means of per-episode quantiles (an approximation).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _sketch
from ._schema import STAT_NAMES

Stats = dict[str, dict[str, np.ndarray]]


def _numeric(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    t = col.type
    vt = t.value_type if pa.types.is_fixed_size_list(t) else t
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_boolean(vt)):
        return None
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(t):
        return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(arr), t.list_size)
    return arr.to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(arr), 1)


def frame_stats(frames: pa.Table) -> Stats:
    """Stats of every numeric column of one episode's frames, over time (axis 0)."""
    out: Stats = {}
    for name in frames.column_names:
        x = _numeric(frames[name])
        if x is None or len(x) == 0:
            continue
        q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
        out[name] = {"count": np.array([len(x)]), "mean": x.mean(0), "std": x.std(0), "min": x.min(0),
                     "max": x.max(0), "q01": q01, "q99": q99}
    return out


def frame_sketches(frames: pa.Table) -> list[dict]:
    """Rows of ``_sketch.SKETCH_TYPE`` for every numeric column of one episode's frames."""
    out = []
    for name in frames.column_names:
        x = _numeric(frames[name])
        if x is not None and len(x):
            out.append(_sketch.row(name, "dd", _sketch.numeric(x)))
    return out


def image_sketch(camera: str, frames) -> dict:
    """The exact per-channel histogram of one camera's decoded uint8 frames, as a sketch row."""
    return _sketch.row(camera, "u8", _sketch.pixels(frames))


def to_rows(stats: Stats) -> list[dict]:
    """Stats as rows of ``schema.STATS_TYPE``."""
    rows = []
    for feature, s in stats.items():
        shape = list(np.shape(s["mean"])) or [1]
        rows.append({"feature": feature, "count": int(np.asarray(s["count"]).ravel()[0]), "shape": shape,
                     **{k: np.asarray(s[k], np.float64).ravel().tolist() for k in STAT_NAMES}})
    return rows


def from_rows(rows: list[dict]) -> Stats:
    out: Stats = {}
    for r in rows or ():
        shape = tuple(r["shape"])
        out[r["feature"]] = {"count": np.array([r["count"]]),
                             **{k: np.asarray(r[k], np.float64).reshape(shape) for k in STAT_NAMES}}
    return out


def aggregate(per_episode: list[Stats]) -> Stats:
    """Merge per-episode stats into one set (see module doc for what is exact)."""
    feats: dict[str, list[dict]] = {}
    for st in per_episode:
        for f, s in st.items():
            feats.setdefault(f, []).append(s)
    out: Stats = {}
    for f, ss in feats.items():
        n = np.array([float(np.asarray(s["count"]).ravel()[0]) for s in ss])
        w = (n / n.sum()).reshape((-1,) + (1,) * np.ndim(ss[0]["mean"]))
        mean = np.stack([s["mean"] for s in ss])
        std = np.stack([s["std"] for s in ss])
        mu = (w * mean).sum(0)
        var = (w * (std**2 + mean**2)).sum(0) - mu**2
        out[f] = {
            "mean": mu, "std": np.sqrt(np.maximum(var, 0.0)),
            "min": np.min(np.stack([s["min"] for s in ss]), 0), "max": np.max(np.stack([s["max"] for s in ss]), 0),
            "q01": (w * np.stack([s["q01"] for s in ss])).sum(0), "q99": (w * np.stack([s["q99"] for s in ss])).sum(0),
            "count": np.array([int(n.sum())]),
        }
    return out


def _list_values(col: pa.Array, d: int) -> np.ndarray:
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, d)


def _binary_concat(arr: pa.Array) -> np.ndarray:
    """The bytes of every value of a binary array, back to back, as int64 (a view, no per-row Python)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    offs = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
    if not len(arr) or offs[-1] == offs[0]:
        return np.zeros(0, np.int64)
    return np.frombuffer(arr.buffers()[2], np.uint8)[offs[0]:offs[-1]].view("<i8")


def aggregate_columns(stats: pa.ChunkedArray, sketches: pa.ChunkedArray | None = None) -> Stats:
    """Merge the ``stats`` (and ``sketch``) columns of a set of episodes into one set of stats (module doc)."""
    flat = pc.list_flatten(stats.combine_chunks() if isinstance(stats, pa.ChunkedArray) else stats)
    if not len(flat):
        return {}
    sk_flat = None
    if sketches is not None:
        sk_list = sketches.combine_chunks() if isinstance(sketches, pa.ChunkedArray) else sketches
        sk_flat = pc.list_flatten(sk_list)
        sk_complete = pc.all(pc.is_valid(sk_list)).as_py() if len(sk_list) else False
    feature = flat.field("feature")
    out: Stats = {}
    for name in pc.unique(feature).to_pylist():
        sub = flat.filter(pc.equal(feature, name))
        shape = tuple(sub.field("shape")[0].as_py()) or (1,)
        d = int(np.prod(shape))
        n = sub.field("count").to_numpy(zero_copy_only=False).astype(np.float64)
        w = (n / n.sum())[:, None]
        mean, std = _list_values(sub.field("mean"), d), _list_values(sub.field("std"), d)
        mu = (w * mean).sum(0)
        var = (w * (std**2 + mean**2)).sum(0) - mu**2
        s = {"mean": mu, "std": np.sqrt(np.maximum(var, 0.0)), "min": _list_values(sub.field("min"), d).min(0),
             "max": _list_values(sub.field("max"), d).max(0), "count": np.array([int(n.sum())])}
        q = None
        if sk_flat is not None and sk_complete:
            sk = sk_flat.filter(pc.equal(sk_flat.field("feature"), name))
            if len(sk) == len(sub):  # every episode carries this feature's sketch
                kind = sk.field("kind")[0].as_py()
                q = _sketch.quantiles(kind, _binary_concat(sk.field("codes")), _binary_concat(sk.field("counts")), d)
        if q is None:
            q = [(w * _list_values(sub.field(k), d)).sum(0) for k in ("q01", "q99")]
        s["q01"], s["q99"] = q
        out[name] = {k: (v.reshape(shape) if k != "count" else v) for k, v in s.items()}
    return out
