"""Feature statistics: computed per episode at ingestion, aggregated on read.

Per-episode stats live in the episodes table, so global and per-split stats are always current after an
append and never reread frames. Two methods, both with LeRobot's keys (count, mean, std, min, max, q01, q10,
q50, q90, q99; cameras per channel in [0, 1], shape (3, 1, 1)):

- ``"lake"`` (``lk.stats()``'s default, what packing normalizes with): count/mean/std/min/max exact over every
  frame (pooled moments of the ``stats`` column, vectorized: no Python per episode); the quantiles from the
  summed per-episode sketches (``_sketch``: within 1% relative error of a true quantile for numeric features,
  exact for cameras). Episodes written before sketches existed fall back to count-weighted means of their
  per-episode q01/q99 (no q10/q50/q90 then).
- ``"lerobot"`` (``meta.stats`` of ``LeRobotStyleDataset``, ``lake export``'s stats.json and per-episode stats):
  LeRobot 0.4.4's numbers (``_lerobot_stats``) from the ``stats_lerobot`` column: its frame sample for cameras, its
  histogram quantiles per episode, its ``aggregate_stats`` across episodes. Episodes written before that column
  existed (null) stand in with their ``stats`` row (every frame; q01/q99 by numpy's linear interpolation) and
  q10/q50/q90 from their own sketch (none without one: then LeRobot's aggregate leaves those keys out).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _lerobot_stats, _sketch
from ._schema import LEROBOT_STAT_NAMES, LEROBOT_STATS_TYPE, STAT_NAMES

Stats = dict[str, dict[str, np.ndarray]]


def _numeric(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A numeric column as (T, d) float64 (the lake's own stats); None when it is not numeric."""
    x = _native(col)
    return None if x is None else x.astype(np.float64)


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


def _native(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A numeric column as (T, d) in its own dtype (LeRobot computes float32 features in float32)."""
    t = col.type
    vt = t.value_type if pa.types.is_fixed_size_list(t) else t
    if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_boolean(vt)):
        return None
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(t):
        return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), t.list_size)
    return arr.to_numpy(zero_copy_only=False).reshape(len(arr), 1)


def lerobot_frame_stats(frames: pa.Table) -> Stats:
    """LeRobot 0.4.4's stats of every numeric column of one episode's frames (``_lerobot_stats.vector_stats``)."""
    out: Stats = {}
    for name in frames.column_names:
        x = _native(frames[name])
        if x is not None and len(x):
            out[name] = _lerobot_stats.vector_stats(x)
    return out


def lerobot_image_stats(frames) -> dict[str, np.ndarray]:
    """LeRobot 0.4.4's stats of one camera from the episode's decoded frames (``_lerobot_stats.image_stats``)."""
    return _lerobot_stats.image_stats(frames)


def to_lerobot_rows(stats: Stats, partial: bool = False) -> list[dict]:
    """LeRobot stats as rows of ``schema.LEROBOT_STATS_TYPE`` (``dtype``: mean's, the dtype computed in);
    ``partial``: a stat a feature lacks is null (an older episode's stand-in without q10/q50/q90)."""
    rows = []
    for feature, s in stats.items():
        shape = list(np.shape(s["mean"])) or [1]
        rows.append({"feature": feature, "count": int(np.asarray(s["count"]).ravel()[0]), "shape": shape,
                     "dtype": np.asarray(s["mean"]).dtype.name,
                     **{k: np.asarray(s[k], np.float64).ravel().tolist() if (k in s or not partial) else None
                        for k in LEROBOT_STAT_NAMES}})
    return rows


def from_lerobot_rows(rows: list[dict]) -> Stats:
    out: Stats = {}
    for r in rows or ():
        shape = tuple(r["shape"])
        dtype = np.dtype(r.get("dtype") or "float64")  # mean/std/min/max back in the dtype computed in (exact)
        out[r["feature"]] = {"count": np.array([r["count"]]),
                             **{k: np.asarray(r[k], dtype if k in ("mean", "std", "min", "max") else np.float64)
                                .reshape(shape) for k in LEROBOT_STAT_NAMES if r.get(k) is not None}}
    return out


def aggregate_lerobot(per_episode: list[Stats]) -> Stats:
    """LeRobot's ``aggregate_stats`` over per-episode LeRobot stats (``episode_lerobot``): the union of the
    features, each over the episodes that have it."""
    feats = dict.fromkeys(f for st in per_episode for f in st)
    return {f: _lerobot_stats.aggregate([st[f] for st in per_episode if f in st]) for f in feats}


def episode_lerobot(row: dict) -> Stats:
    """One episode's LeRobot stats from its episodes-table row (``stats_lerobot``; an older row: its ``stats``
    and its sketch's q10/q50/q90, see the module doc)."""
    if row.get("stats_lerobot") is not None:
        return from_lerobot_rows(row["stats_lerobot"])
    out = from_rows(row.get("stats"))
    sketches = {s["feature"]: s for s in row.get("sketch") or ()}
    for f, st in out.items():
        sk = sketches.get(f)
        if sk is not None:
            d = int(np.prod(np.shape(st["mean"])) or 1)
            qs = _sketch.quantiles(sk["kind"], np.frombuffer(sk["codes"], "<i8"), np.frombuffer(sk["counts"], "<i8"),
                                   d, (0.10, 0.50, 0.90))
            st.update({k: q.reshape(np.shape(st["mean"])) for k, q in zip(("q10", "q50", "q90"), qs)})
    return out


def _episode_lake(row: dict) -> Stats:
    """One episode's "lake" stats: its ``stats`` row, the quantiles from its sketch when it has one."""
    out = from_rows(row.get("stats"))
    sketches = {s["feature"]: s for s in row.get("sketch") or ()}
    for f, st in out.items():
        sk = sketches.get(f)
        if sk is not None:
            shape = np.shape(st["mean"])
            qs = _sketch.quantiles(sk["kind"], np.frombuffer(sk["codes"], "<i8"), np.frombuffer(sk["counts"], "<i8"),
                                   int(np.prod(shape) or 1), _lerobot_stats.QUANTILES)
            st.update({k: q.reshape(shape) for k, q in zip(_lerobot_stats.QUANTILE_KEYS, qs)})
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


def _shape(sub: pa.StructArray, name: str) -> tuple[int, ...]:
    """The one shape of feature ``name`` over the episodes; ValueError when robots disagree (a fleet's
    ``observation.state`` of several widths has no single set of stats: ask per embodiment)."""
    shapes = {tuple(x) for x in sub.field("shape").to_pylist()}
    if len(shapes) > 1:
        raise ValueError(f"feature {name!r} has shapes {sorted(shapes)} in these episodes (several robots): "
                         "use stats(by='embodiment') or a filter")
    return shapes.pop() or (1,)


def _list_values(col: pa.Array, d: int) -> np.ndarray:
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, d)


def _binary_concat(arr: pa.Array) -> np.ndarray:
    """The bytes of every value of a binary array, back to back, as int64 (a view, no per-row Python)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    offs = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
    if not len(arr) or offs[-1] == offs[0]:
        return np.zeros(0, np.int64)
    return np.frombuffer(arr.buffers()[2], np.uint8)[offs[0]:offs[-1]].view("<i8")


def aggregate_columns(stats: pa.ChunkedArray, sketches: pa.ChunkedArray | None = None,
                      lerobot: pa.ChunkedArray | None = None, method: str = "lake") -> Stats:
    """Merge the ``stats`` (and ``sketch``, ``stats_lerobot``) columns of a set of episodes into one set of
    stats, by ``method`` "lake" or "lerobot" (module doc). Raises ValueError for another method."""
    if method == "lerobot":
        return _aggregate_lerobot(stats, sketches, lerobot)
    if method != "lake":
        raise ValueError(f"unknown stats method {method!r} (known: 'lake', 'lerobot')")
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
        shape = _shape(sub, name)
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
                q = _sketch.quantiles(kind, _binary_concat(sk.field("codes")), _binary_concat(sk.field("counts")), d,
                                      _lerobot_stats.QUANTILES)
                s.update(zip(_lerobot_stats.QUANTILE_KEYS, q))
        if q is None:
            s["q01"], s["q99"] = [(w * _list_values(sub.field(k), d)).sum(0) for k in ("q01", "q99")]
        out[name] = {k: (v.reshape(shape) if k != "count" else v) for k, v in s.items()}
    return out


def _lerobot_column(stats, sketches, lerobot) -> pa.Array:
    """The ``stats_lerobot`` lists of the episodes, older rows (null) filled from their ``stats`` and sketch
    (``episode_lerobot``), those after the others (LeRobot's aggregate is order-sensitive in the last bit)."""
    combine = lambda c: c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c  # noqa: E731
    stats = combine(stats)
    lr = combine(lerobot) if lerobot is not None else pa.nulls(len(stats), LEROBOT_STATS_TYPE)
    valid = lr.is_valid().to_numpy(zero_copy_only=False)
    if valid.all():
        return lr
    sk = combine(sketches) if sketches is not None else pa.nulls(len(stats))
    old = np.flatnonzero(~valid)
    rows = [to_lerobot_rows(episode_lerobot({"stats": stats[int(i)].as_py(), "sketch": sk[int(i)].as_py()}),
                            partial=True) for i in old]
    filled = pa.array(rows, LEROBOT_STATS_TYPE)
    return pa.concat_arrays([lr.filter(pa.array(valid)).cast(LEROBOT_STATS_TYPE), filled])


def _aggregate_lerobot(stats, sketches, lerobot) -> Stats:
    flat = pc.list_flatten(_lerobot_column(stats, sketches, lerobot))
    if not len(flat):
        return {}
    feature = flat.field("feature")
    out: Stats = {}
    for name in pc.unique(feature).to_pylist():
        sub = flat.filter(pc.equal(feature, name))
        shape = _shape(sub, name)
        d, e = int(np.prod(shape)), len(sub)
        dtype = np.dtype(sub.field("dtype")[0].as_py() or "float64")
        arr = lambda k: _list_values(sub.field(k), d).reshape((e, *shape))  # noqa: E731
        qs = {k: arr(k) for k in _lerobot_stats.QUANTILE_KEYS if sub.field(k).null_count == 0}
        agg = _lerobot_stats.aggregate_stacked(sub.field("count").to_numpy(zero_copy_only=False), arr("mean"),
                                               arr("std"), arr("min"), arr("max"), qs, dtype)
        out[name] = {k: (np.asarray(v, np.float64) if k != "count" else v) for k, v in agg.items()}
    return out


def grouped(table: pa.Table, by: str, method: str = "lake") -> dict[str, Stats]:
    """``{value of column by: stats}`` over the rows of an episodes ``table`` (stats, sketch, stats_lerobot
    and ``by`` columns). ``by="episode_id"``: each episode's own stats, as stored (not re-aggregated)."""
    keys = table[by].to_pylist()
    if by == "episode_id":
        rows = table.select([c for c in ("stats", "sketch", "stats_lerobot") if c in table.column_names]).to_pylist()
        one = episode_lerobot if method == "lerobot" else _episode_lake
        return {k: one(r) for k, r in zip(keys, rows)}
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out = {}
    for k, idx in groups.items():
        t = table.take(pa.array(idx, pa.int64()))
        out[k] = aggregate_columns(t["stats"], t["sketch"] if "sketch" in t.column_names else None,
                                   t["stats_lerobot"] if "stats_lerobot" in t.column_names else None, method)
    return out
