"""Feature statistics: computed per episode at ingestion, aggregated on read.

Per-episode stats live in the episodes table, so global and per-split stats are always current after an
append: ``aggregate`` merges them exactly for count/mean/std/min/max (pooled moments) and, as LeRobot's
``aggregate_stats`` does, as count-weighted means for the quantiles q01/q99 (an approximation).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
