"""Adding and removing features as lake versions, without rewriting a byte of the existing columns.

``add_feature`` writes one new column file per fragment with Lance's ``merge_columns`` on the fragments the head
pins and commits them with a ``Merge`` (the fragments keep their files and deletion vectors and gain one file).
A frame-level feature computed from frames runs as a Ray Data job, one unit per fragment of each frames table:
the unit reads its fragment, calls the function once per episode (frames in order, LeRobot names) and writes
the column aligned to the fragment's rows. ``remove_feature`` is Lance's ``drop_columns`` (a ``Project``:
metadata only) on the pinned version: the new version no longer shows the column, older ones still do.

Feature names are top-level (no '.'): Lance adds columns, not fields inside an existing struct.
"""

from __future__ import annotations

import json
import re
import numpy as np
import pyarrow as pa

from . import _edit, _pinned, _versions
from ._store import Store

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FRAME_KEYS = {"episode_id", "frame_index", "index", "episode_index", "timestamp", "task_index"}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"feature names are letters, digits and '_' (no '.': Lance adds top-level columns, not "
                         f"fields inside a struct such as 'observation'): {name!r}")


def _as_array(values, typ: pa.DataType | None = None) -> pa.Array:
    a = np.asarray(values)
    if a.dtype == object:
        raise ValueError(f"feature values must be numeric or boolean arrays, got {a.dtype}")
    if a.ndim == 2:
        arr = pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])
    elif a.ndim == 1:
        arr = pa.array(a)
    else:
        raise ValueError(f"frame-level values are one value or one vector per frame, got shape {a.shape}")
    return arr.cast(typ) if typ is not None else arr


def _frame_values(eid: str, frames: pa.Table, values) -> np.ndarray:
    out = values(frames) if callable(values) else values.get(eid)
    if out is None:
        return None
    out = np.asarray(out)
    if len(out) != frames.num_rows:
        raise ValueError(f"feature values for episode {eid}: {len(out)} values for {frames.num_rows} frames")
    return out


def feature_unit(row: dict, *, store: Store, units: list, name: str, values, typ: pa.DataType) -> dict:
    """Ray Data stage: the new column of one fragment of a frames table, written as a Lance column file."""
    from ._schema import unnest

    table, pinned, fid = units[row["unit"]]
    return _merge_fragment(store, table, pinned, fid, name, values, typ, unnest) | {"unit": row["unit"]}


def _merge_fragment(store, table, pinned, fid, name, values, typ, unnest) -> dict:
    frag = store.dataset(table, version=pinned).get_fragment(fid)
    cols = None if callable(values) else ["episode_id", "frame_index"]
    t = unnest(frag.to_table(columns=cols)).sort_by([("episode_id", "ascending"), ("frame_index", "ascending")])
    eid = t["episode_id"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, eid[1:] != eid[:-1], True]) if len(eid) else np.array([0])
    lookup: dict[str, tuple[np.ndarray, pa.Array]] = {}
    for a, b in zip(bounds[:-1], bounds[1:]):
        ep = t.slice(a, b - a)
        v = _frame_values(str(eid[a]), ep, values)
        if v is not None:
            lookup[str(eid[a])] = (ep["frame_index"].to_numpy(), _as_array(v, typ))

    def udf(batch: pa.RecordBatch) -> pa.RecordBatch:
        ids = batch["episode_id"].to_pylist()
        fidx = batch["frame_index"].to_numpy(zero_copy_only=False)
        parts = []
        for i, e in enumerate(ids):
            hit = lookup.get(e)
            if hit is None:
                parts.append(pa.nulls(1, typ))
            else:
                parts.append(hit[1].slice(int(np.searchsorted(hit[0], fidx[i])), 1))
        arr = pa.concat_arrays(parts) if parts else pa.array([], typ)
        return pa.record_batch([arr], names=[name])

    meta, schema = frag.merge_columns(udf, columns=["episode_id", "frame_index"])
    return {"table": table, "frag": json.dumps(meta.to_json()), "schema": _schema_json(schema)}


def _schema_json(schema) -> str:
    """A LanceSchema (field ids included) as JSON of its protobuf form: how workers hand it to the driver (no
    pickle). Lance's own pickling goes through the same ``_from_protos`` triple."""
    return json.dumps([["b", a.hex()] if isinstance(a, bytes) else ["s", a] for a in schema.__reduce__()[1]])


def _schema_from_json(text: str):
    from lance.schema import LanceSchema

    return LanceSchema._from_protos(*(bytes.fromhex(v) if k == "b" else v for k, v in json.loads(text)))


def _probe_type(reader, head, name: str, values) -> pa.DataType:
    """The column type, from the values of the first episode (an early, clear error if ``values`` is wrong)."""
    lk = reader(head)
    ids = sorted(values) if isinstance(values, dict) else lk.episodes(columns=["episode_id"])["episode_id"].to_pylist()
    if not ids:
        raise _edit.NoChange("the lake has no episodes: nothing to add a feature to")
    if isinstance(values, dict):
        unknown = sorted(set(values) - set(lk.episodes(columns=["episode_id"])["episode_id"].to_pylist()))
        if unknown:
            raise KeyError(f"no episode(s) {unknown[:5]} in lake version {head.version}")
    v = _frame_values(ids[0], lk.frames(ids[0]), values)
    return _as_array(v).type


def add_feature(store: Store, name: str, values, level: str = "frame", message: str | None = None,
                dry_run: bool = False, ray_address: str | None = None, *, reader) -> _edit.EditReport:
    """A new column ``name`` (see the module doc). ``values``: {episode_id: value} ({episode_id: array of one
    value or vector per frame} at frame level), or a function of one episode's frames (pyarrow Table, LeRobot
    names, frame order) returning that. Episodes without a value read null."""
    from lance import LanceOperation
    from lance.fragment import FragmentMetadata

    _check_name(name)
    if level not in ("frame", "episode"):
        raise ValueError(f"level is 'frame' or 'episode', not {level!r}")
    if not (callable(values) or isinstance(values, dict)):
        raise ValueError("values are {episode_id: value} or a function of an episode's frames")
    head = _versions.head(store)
    if "episodes" not in head.tables:
        raise _edit.NoChange("the lake has no episodes: nothing to add a feature to")
    tables = ["episodes"] if level == "episode" else [t for t in _edit.episode_tables(store, head.tables)
                                                       if t.startswith("frames_")]
    for t in tables:
        if name in store.dataset(t, version=head.tables[t]).schema.names:
            raise ValueError(f"table {t!r} already has a column {name!r} (remove_feature it first, or pick a name)")
    msg = message or f"add {level} feature {name!r}"
    if level == "episode":
        per_episode = _episode_values(reader, head, values)
        typ = pa.array(list(per_episode.values())).type
        if dry_run:
            return _edit.EditReport("add_feature", None, sorted(per_episode), msg,
                                    {e: {name: [None, v]} for e, v in per_episode.items()}, dry_run=True)
    else:
        typ = _probe_type(reader, head, name, values)
        if dry_run:
            return _edit.EditReport("add_feature", None, [], msg, notes=[f"frames tables {tables} gain {name!r} ({typ})"],
                                    dry_run=True)
    done: dict[tuple[str, int], dict] = {}
    if level == "frame":
        from ._ray import ensure_ray, map_units

        units = [(t, head.tables[t], f.fragment_id) for t in tables
                 for f in store.dataset(t, version=head.tables[t]).get_fragments()]
        ensure_ray(ray_address)
        for row in map_units(feature_unit, len(units), lambda r: None, store=store, units=units, name=name,
                             values=values, typ=typ):
            done[(units[row["unit"]][0], units[row["unit"]][2])] = {**row, "key": _key(store, *units[row["unit"]])}

    def build(h: _versions.LogEntry) -> dict[str, int]:
        from ._schema import unnest

        pins = {}
        for t in tables:
            if t not in h.tables:
                continue
            ds = store.dataset(t, version=h.tables[t])
            if name in ds.schema.names:
                raise ValueError(f"table {t!r} gained a column {name!r} meanwhile")
            frags, schema = [], None
            for f in ds.get_fragments():
                got = done.get((t, f.fragment_id))
                if got is None or got["key"] != _key(store, t, h.tables[t], f.fragment_id):  # new since: do it here
                    got = (_merge_episode_fragment(store, t, h.tables[t], f.fragment_id, name, per_episode, typ)
                           if level == "episode" else
                           _merge_fragment(store, t, h.tables[t], f.fragment_id, name, values, typ, unnest))
                frags.append(FragmentMetadata.from_json(got["frag"]))
                schema = _schema_from_json(got["schema"])
            if schema is not None:
                pins[t] = _pinned.commit_op(store, t, h.tables[t],
                                            lambda _ds, fr=frags, s=schema: LanceOperation.Merge(fr, s))
        return pins

    entry = _versions.commit(store, build, msg, {"operation": "add_feature", "by": _edit.who(), "feature": name,
                                                 "level": level, "type": str(typ), "tables": tables})
    return _edit.EditReport("add_feature", entry.version, [], msg, notes=[f"{', '.join(tables)} gained {name!r} ({typ})"])


def _key(store: Store, table: str, pinned: int, fid: int) -> dict:
    m = store.dataset(table, version=pinned).get_fragment(fid).metadata.to_json()
    return {k: m[k] for k in ("files", "deletion_file", "physical_rows")}


def _episode_values(reader, head, values) -> dict:
    lk = reader(head)
    ids = lk.episodes(columns=["episode_id"])["episode_id"].to_pylist()
    if isinstance(values, dict):
        unknown = sorted(set(values) - set(ids))
        if unknown:
            raise KeyError(f"no episode(s) {unknown[:5]} in lake version {head.version}")
        out = dict(values)
    else:
        out = {e: values(lk.frames(e)) for e in ids}
    for e, v in out.items():
        if isinstance(v, np.generic):
            out[e] = v.item()
    try:
        pa.array(list(out.values()))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"episode-level values must share one type: {err}") from None
    if not out:
        raise _edit.NoChange("no values given: nothing to add")
    return out


def _merge_episode_fragment(store, table, pinned, fid, name, per_episode: dict, typ) -> dict:
    frag = store.dataset(table, version=pinned).get_fragment(fid)

    def udf(batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.record_batch([pa.array([per_episode.get(e) for e in batch["episode_id"].to_pylist()], typ)],
                               names=[name])

    meta, schema = frag.merge_columns(udf, columns=["episode_id"])
    return {"table": table, "frag": json.dumps(meta.to_json()), "schema": _schema_json(schema)}


def remove_feature(store: Store, name: str, message: str | None = None, dry_run: bool = False) -> _edit.EditReport:
    """Hide feature ``name`` (a frames column under its LeRobot name, or an episode-level column added by
    ``add_feature``) from the new version: Lance ``drop_columns`` on the pinned tables, no data touched."""
    from ._schema import EPISODES, unnest

    head = _versions.head(store)
    where = []
    if "episodes" in head.tables and name in store.dataset("episodes", version=head.tables["episodes"]).schema.names:
        if name in EPISODES.names:
            raise ValueError(f"{name!r} is a core episodes column and cannot be removed")
        where.append("episodes")
    for t in _edit.episode_tables(store, head.tables):
        if t.startswith("frames_") and name in unnest(store.dataset(t, version=head.tables[t]).schema.empty_table()).column_names:
            if name in FRAME_KEYS:
                raise ValueError(f"{name!r} indexes the frames and cannot be removed")
            where.append(t)
    if not where:
        raise ValueError(f"no feature {name!r} in lake version {head.version}")
    msg = message or f"remove feature {name!r}"
    if dry_run:
        return _edit.EditReport("remove_feature", None, [], msg, notes=[f"{', '.join(where)} lose {name!r}"], dry_run=True)

    def build(h: _versions.LogEntry) -> dict[str, int]:
        pins = {}
        for t in where:
            if t not in h.tables:
                continue

            def drop(ds, t=t):
                ds.drop_columns([name])
                return store.dataset(t)

            pins[t] = _pinned.on_pinned(store, t, h.tables[t], drop)
        return pins

    entry = _versions.commit(store, build, msg, {"operation": "remove_feature", "by": _edit.who(), "feature": name,
                                                 "tables": where})
    return _edit.EditReport("remove_feature", entry.version, [], msg, notes=[f"{', '.join(where)} lost {name!r}"])

