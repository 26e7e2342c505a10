"""Dataset surgery: delete, relabel / move / annotate, re-split, restore — each one zero-copy lake version.

Every edit is a ``_versions.commit`` whose build applies Lance operations to the table versions the head pins
(``_pinned``): deletions are Lance deletion vectors on the pinned fragments (no data file rewritten, video blobs
included); episode-level changes rewrite only the changed rows of the small ``episodes`` table; a restore pins
old table versions again. A build sees the newest head each time it runs, so an edit racing an ingest either
lands on top of it or is rebuilt on it; a kill at any point leaves the previous lake version (nothing is
pinned until the log row lands).

Packed tables hold samples of whole episodes: an edit that deletes, relabels or moves episodes drops the
registration (``packings`` row) of every packed table holding one of them and unpins its content, so
``stream`` and ``pack`` of the new version never see stale samples; packs of older versions stay as they were.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass, field

import pyarrow as pa

from . import _pinned, _tables, _versions
from ._store import Store

# episode-level columns an edit may not set: identity, layout and content-derived values
PROTECTED = {"episode_id", "source", "source_uri", "source_episode_index", "length", "fps", "frames_table",
             "cameras", "codebase_version", "stats", "robot_type", "stats_lerobot"}
NOT_EPISODE_TABLES = ("packings", "tasks", "sources", "quarantine", "_log")


class NoChange(ValueError):
    """An edit that would change nothing (a filter matching no episode, values already set): no version made."""


@dataclass(frozen=True)
class EditReport:
    """What an edit did (or, with ``dry_run``, would do). ``version`` is None for a dry run.

    ``episodes``: the episode ids it touched; ``changes``: {episode_id: {column: [old, new]}} for updates;
    ``notes``: things the user should know (a split left empty, packed tables unregistered)."""

    operation: str
    version: int | None
    episodes: list[str]
    message: str
    changes: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """The diff as text, one line per episode (what ``lake edit --dry-run`` prints)."""
        out = []
        if self.operation == "delete":
            out += [f"- {e}" for e in self.episodes]
        for eid, cols in sorted(self.changes.items()):
            out.append(f"~ {eid} " + ", ".join(f"{c}: {o!r} -> {n!r}" for c, (o, n) in sorted(cols.items())))
        return out + [f"note: {n}" for n in self.notes]


def who() -> str:
    """user@host of the process making an edit (recorded in the log summary)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def quote(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def in_list(ids) -> str:
    return f"episode_id IN ({', '.join(quote(i) for i in ids)})"


def _episodes(store: Store, entry: _versions.LogEntry, filter: str | None = None, columns=None) -> pa.Table:
    if "episodes" not in entry.tables:
        return pa.table({"episode_id": pa.array([], pa.string())})
    return store.dataset("episodes", version=entry.tables["episodes"]).to_table(filter=filter, columns=columns)


def select(store: Store, entry: _versions.LogEntry, ids=None, filter: str | None = None) -> list[str]:
    """Sorted ids of the episodes named by ``ids`` and/or matching the SQL ``filter`` at ``entry``.

    Raises KeyError naming ids the version does not hold, ValueError for a bad filter, NoChange when nothing
    matches."""
    return sorted(select_rows(store, entry, ids, filter)["episode_id"].to_pylist())


def select_rows(store: Store, entry: _versions.LogEntry, ids=None, filter: str | None = None,
                columns: list[str] | None = None) -> pa.Table:
    """``select``'s episodes as rows of ``columns`` (default: episode_id), one scan."""
    if ids is None and filter is None:
        raise ValueError("name the episodes: ids=[...] and/or filter='SQL predicate'")
    columns = list(dict.fromkeys(["episode_id", *(columns or [])]))
    preds = []
    if ids is not None:
        ids = sorted({ids} if isinstance(ids, str) else set(ids))
        if not ids:
            raise NoChange("no episode ids given: nothing to do")
        preds.append(in_list(ids))
    if filter is not None:
        preds.append(f"({filter})")
    try:
        rows = _episodes(store, entry, " AND ".join(preds), columns)
    except (OSError, ValueError) as e:
        raise ValueError(f"bad filter {filter!r}: {str(e).splitlines()[0]}") from None
    if ids is not None:
        have = set(rows["episode_id"].to_pylist()) if filter is None else \
            set(_episodes(store, entry, in_list(ids), ["episode_id"])["episode_id"].to_pylist())
        missing = sorted(set(ids) - have)
        if missing:
            raise KeyError(f"no episode(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} in lake version "
                           f"{entry.version}")
    if rows.num_rows == 0:
        raise NoChange(f"no episode matches ({'ids given' if ids is not None else ''}"
                       f"{' and ' if ids is not None and filter else ''}{f'filter {filter!r}' if filter else ''}) "
                       f"in lake version {entry.version}: nothing to do")
    return rows


def episode_tables(store: Store, pins: dict[str, int]) -> list[str]:
    """Pinned tables with one or more rows per episode (episodes, frames_*, videos, decoded_frames, ...)."""
    out = []
    for name, v in sorted(pins.items()):
        if name in NOT_EPISODE_TABLES or name.startswith("packed_"):
            continue
        if "episode_id" in store.dataset(name, version=v).schema.names:
            out.append(name)
    return out


def delete_rows(store: Store, table: str, pinned: int, predicate: str) -> int | None:
    """Lance deletion vectors for the rows matching ``predicate`` on the pinned fragments; None if none match."""
    from lance import LanceOperation

    if store.dataset(table, version=pinned).count_rows(filter=predicate) == 0:
        return None

    def op(ds):
        updated, gone = deletion_vectors(ds, predicate)
        return LanceOperation.Delete(updated, gone, predicate)

    return _pinned.commit_op(store, table, pinned, op)


def deletion_vectors(ds, predicate: str) -> tuple[list, list[int]]:
    """(fragments with new deletion vectors, ids of fragments left with no rows) for the rows matching: one scan
    for their row addresses (fragment id in the high 32 bits, row offset in the low), then each fragment's
    deletion vector gains exactly those offsets (no per-fragment re-scan)."""
    import numpy as np

    addr = ds.to_table(columns=["episode_id"], filter=predicate, with_row_address=True)["_rowaddr"].to_numpy()
    addr = np.asarray(addr, np.uint64)
    frag_ids, offsets = (addr >> np.uint64(32)).astype(np.int64), (addr & np.uint64(0xFFFFFFFF)).astype(np.int64)
    updated, gone = [], []
    for fid in np.unique(frag_ids).tolist():
        after = ds.get_fragment(fid).delete_rows(offsets[frag_ids == fid].tolist())
        if after is None:
            gone.append(fid)
        else:
            updated.append(after)
    return updated, gone


def unregister_packs(store: Store, pins: dict[str, int], ids: set[str]) -> tuple[dict[str, int], list[str]]:
    """Drop ``packings`` rows (and unpin the content) of packed tables holding any of ``ids``."""
    if "packings" not in pins or not ids:
        return {}, []
    packings = store.dataset("packings", version=pins["packings"])
    rows = packings.to_table()
    stale = []
    for table in sorted(set(rows["table"].to_pylist())):
        if table not in pins:
            continue
        held = store.dataset(table, version=pins[table]).to_table(columns=["origin_episode"])["origin_episode"]
        if any(e in ids for lst in held.to_pylist() for e in lst):
            stale.append(table)
    if not stale:
        return {}, []
    import pyarrow.compute as pc

    keep = rows.filter(pc.invert(pc.is_in(rows["table"], pa.array(stale, pa.string()))))
    out = {t: _pinned.empty(store, t) for t in stale}
    if keep.num_rows:
        frags = _tables.write_rows(store, "packings", keep, packings.schema)
        out["packings"] = _tables.overwrite_with(store, "packings", packings.schema, None, frags)
    else:
        out["packings"] = _pinned.empty(store, "packings")
    return out, [f"packed table {t} held edited episodes: unregistered in this version (run lk.pack() again)"
                 for t in stale]


def _split_notes(store: Store, head: _versions.LogEntry, before: pa.Table, after_splits: dict[str, str]) -> list[str]:
    """Splits an edit leaves without episodes (allowed, but said)."""
    old = {}
    for e, s in zip(before["episode_id"].to_pylist(), before["split"].to_pylist()):
        old[e] = s
    new = {**old, **after_splits}
    gone = sorted({s for s in old.values() if s} - {s for s in new.values() if s is not None})
    return [f"split {s!r} has no episodes left" for s in gone]


# --- delete -------------------------------------------------------------------------------------------------

def delete_episodes(store: Store, ids=None, filter: str | None = None, message: str | None = None,
                    dry_run: bool = False) -> EditReport:
    head = _versions.head(store)
    chosen = select(store, head, ids, filter)
    all_eps = _episodes(store, head, columns=["episode_id", "split"])
    notes = _split_notes(store, head, all_eps, {e: None for e in chosen})
    msg = message or f"delete {len(chosen)} episode(s)" + (f" where {filter}" if filter else "")
    if dry_run:
        return EditReport("delete", None, chosen, msg, notes=notes, dry_run=True)
    extra_notes: list[str] = []

    def build(h: _versions.LogEntry) -> dict[str, int]:
        now = set(chosen) if h.version == head.version else \
            set(_episodes(store, h, in_list(chosen), ["episode_id"])["episode_id"].to_pylist())
        todo = sorted(set(chosen) & now)
        if not todo:
            raise NoChange(f"the episodes to delete are already gone at lake version {h.version}")
        pred = in_list(todo)
        pins = {}
        for table in episode_tables(store, h.tables):
            v = delete_rows(store, table, h.tables[table], pred)
            if v is not None:
                pins[table] = v
        packs, n = unregister_packs(store, h.tables, set(todo))
        extra_notes[:] = n
        return {**pins, **packs}

    entry = _versions.commit(store, build, msg, {"operation": "delete", "by": who(), "episodes_removed": len(chosen),
                                                 "episode_ids": chosen[:1000], "filter": filter})
    return EditReport("delete", entry.version, chosen, msg, notes=notes + extra_notes)


# --- update / resplit ---------------------------------------------------------------------------------------

def _check_values(schema: pa.Schema, values: dict) -> dict[str, pa.Scalar]:
    if not values:
        raise ValueError("no values to set: update_episodes(filter, {'task': ...})")
    out = {}
    for col, v in values.items():
        if col not in schema.names:
            raise ValueError(f"episodes have no column {col!r} (columns: {sorted(schema.names)}); "
                             f"add one with lk.add_feature({col!r}, values, level='episode')")
        if col in PROTECTED:
            raise ValueError(f"column {col!r} is derived from the episode's content and cannot be set")
        typ = schema.field(col).type
        try:
            s = pa.scalar(v, type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            raise ValueError(f"column {col!r} is {typ}; cannot set it to {v!r}") from None
        if pa.types.is_boolean(typ) and not isinstance(v, (bool, type(None))):
            raise ValueError(f"column {col!r} is {typ}; cannot set it to {v!r}")
        if v is None and col in ("task", "split"):
            raise ValueError(f"column {col!r} cannot be null")
        out[col] = s
    return out


def _changes(rows: pa.Table, per_episode: dict[str, dict[str, pa.Scalar]]) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for r in rows.to_pylist():
        for col, s in per_episode.get(r["episode_id"], {}).items():
            if r[col] != s.as_py():
                out.setdefault(r["episode_id"], {})[col] = [r[col], s.as_py()]
    return out


def rewrite_episodes(store: Store, pinned: int, changes: dict[str, dict[str, object]]) -> int:
    """A new version of ``episodes`` with the changed rows rewritten (one Lance Update: deletion vectors on the
    old rows, a fragment of new ones); every other row and fragment is kept as it is."""
    from lance import LanceOperation
    from lance.fragment import write_fragments

    pred = in_list(sorted(changes))

    def op(ds):
        rows = ds.to_table(filter=pred)
        cols = {n: rows[n].to_pylist() for n in rows.column_names}
        for i, eid in enumerate(cols["episode_id"]):
            for col, v in changes[eid].items():
                cols[col][i] = v
            if "task" in changes[eid] and "tasks" in cols and "tasks" not in changes[eid]:
                cols["tasks"][i] = [changes[eid]["task"]]
        new = pa.Table.from_pydict(cols, schema=rows.schema)
        frags = write_fragments(new, store.table_uri("episodes"), schema=ds.schema,
                                storage_options=store.storage_options)
        updated, gone = deletion_vectors(ds, pred)
        return LanceOperation.Update(removed_fragment_ids=gone, updated_fragments=updated, new_fragments=frags)

    return _pinned.commit_op(store, "episodes", pinned, op)


def _tasks_pin(store: Store, head: _versions.LogEntry, episodes_pin: int) -> dict[str, int]:
    """The tasks table made to list exactly the tasks episodes name (a tiny table: rewritten whole)."""
    from ._schema import TASKS, task_id

    eps = store.dataset("episodes", version=episodes_pin).to_table(columns=["task", "tasks"])
    tasks = sorted({t for t in eps["task"].to_pylist() if t} | {t for lst in eps["tasks"].to_pylist() for t in lst or ()})
    rows = pa.table({"task_id": [task_id(t) for t in tasks], "task": tasks}, schema=TASKS)
    if not tasks:
        return {"tasks": _pinned.empty(store, "tasks")} if "tasks" in head.tables else {}
    return {"tasks": _tables.overwrite_with(store, "tasks", TASKS, None, _tables.write_rows(store, "tasks", rows, TASKS))}


def _apply_updates(store: Store, operation: str, per_episode: dict[str, dict[str, pa.Scalar]], message: str,
                   summary: dict, dry_run: bool, head: _versions.LogEntry | None = None,
                   rows: pa.Table | None = None) -> EditReport:
    """``rows``: the episodes' current values of the columns set (prefetched by the caller at ``head``)."""
    head = head or _versions.head(store)
    cols = ["episode_id", *sorted({c for v in per_episode.values() for c in v})]
    if rows is None:
        rows = _episodes(store, head, in_list(sorted(per_episode)), cols)
    changes = _changes(rows, per_episode)
    if not changes:
        raise NoChange(f"the {len(per_episode)} matching episode(s) already have these values: nothing to do")
    moves = {e: c["split"][1] for e, c in changes.items() if "split" in c}
    notes = _split_notes(store, head, _episodes(store, head, columns=["episode_id", "split"]), moves) if moves else []
    if dry_run:
        return EditReport(operation, None, sorted(changes), message, changes, notes, True)
    extra: list[str] = []

    def build(h: _versions.LogEntry) -> dict[str, int]:
        now = changes if h.version == head.version else \
            _changes(_episodes(store, h, in_list(sorted(per_episode)), cols), per_episode)
        if not now:
            raise NoChange(f"the episodes already have these values at lake version {h.version}")
        todo = {e: {c: new for c, (_, new) in changed.items()} for e, changed in now.items()}
        pins = {"episodes": rewrite_episodes(store, h.tables["episodes"], todo)}
        if any("task" in c for c in todo.values()):
            pins.update(_tasks_pin(store, h, pins["episodes"]))
        if any(("task" in c or "split" in c) for c in todo.values()):
            packs, n = unregister_packs(store, h.tables, {e for e, c in todo.items() if "task" in c or "split" in c})
            pins.update(packs)
            extra[:] = n
        return pins

    entry = _versions.commit(store, build, message, {"operation": operation, "by": who(),
                                                     "episodes_changed": len(changes), **summary})
    return EditReport(operation, entry.version, sorted(changes), message, changes, notes + extra)


def update_episodes(store: Store, filter: str | None, values: dict, ids=None, message: str | None = None,
                    dry_run: bool = False) -> EditReport:
    head = _versions.head(store)
    if "episodes" not in head.tables:
        raise NoChange("the lake has no episodes: nothing to update")
    checked = _check_values(store.dataset("episodes", version=head.tables["episodes"]).schema, values)
    rows = select_rows(store, head, ids, filter, sorted(checked))
    chosen = sorted(rows["episode_id"].to_pylist())
    what = ", ".join(f"{k}={v!r}" for k, v in values.items())
    msg = message or f"update {len(chosen)} episode(s)" + (f" where {filter}" if filter else "") + f": {what}"
    return _apply_updates(store, "update", {e: checked for e in chosen}, msg,
                          {"filter": filter, "values": {k: str(v) for k, v in values.items()}}, dry_run, head, rows)


def _rank(seed: int, eid: str) -> str:
    return hashlib.sha256(f"{seed}\0{eid}".encode()).hexdigest()


def plan_split(store: Store, head: _versions.LogEntry, spec: dict, seed: int) -> dict[str, str]:
    """{episode_id: split}. ``spec`` is {split: ratio} (episodes ordered by a seeded hash of their id, cut by
    cumulative ratio: deterministic, independent of storage order) or {split: SQL filter} (each episode matched
    by one filter at most moves; the others keep their split)."""
    if not spec:
        raise ValueError("resplit needs {split: ratio} or {split: filter}")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values()):
        total = float(sum(spec.values()))
        if total <= 0 or any(v < 0 for v in spec.values()):
            raise ValueError(f"split ratios must be >= 0 with a positive sum: {spec}")
        ids = sorted(_episodes(store, head, columns=["episode_id"])["episode_id"].to_pylist(),
                     key=lambda e: _rank(seed, e))
        out, start, acc = {}, 0, 0.0
        names = list(spec)
        for i, name in enumerate(names):
            acc += spec[name] / total
            stop = len(ids) if i == len(names) - 1 else int(round(acc * len(ids)))
            out.update({e: name for e in ids[start:stop]})
            start = stop
        return out
    if all(isinstance(v, str) for v in spec.values()):
        out: dict[str, str] = {}
        for name, pred in spec.items():
            try:
                hit = _episodes(store, head, pred, ["episode_id"])["episode_id"].to_pylist()
            except (OSError, ValueError) as e:
                raise ValueError(f"bad filter for split {name!r}: {pred!r}: {str(e).splitlines()[0]}") from None
            both = sorted(e for e in hit if e in out)
            if both:
                raise ValueError(f"episode {both[0]} matches the filters of splits {out[both[0]]!r} and {name!r}")
            out.update({e: name for e in hit})
        return out
    raise ValueError(f"resplit takes {{split: ratio}} or {{split: SQL filter}}, not a mix: {spec}")


def resplit(store: Store, spec: dict, seed: int = 0, message: str | None = None, dry_run: bool = False) -> EditReport:
    head = _versions.head(store)
    plan = plan_split(store, head, spec, seed)
    if not plan:
        raise NoChange("no episode matches: nothing to re-split")
    msg = message or f"resplit {json.dumps(spec, sort_keys=True)} seed={seed}"
    return _apply_updates(store, "resplit", {e: {"split": pa.scalar(s, pa.string())} for e, s in plan.items()}, msg,
                          {"spec": {k: str(v) for k, v in spec.items()}, "seed": seed}, dry_run)


# --- restore ------------------------------------------------------------------------------------------------

def restore(store: Store, version_or_tag, message: str | None = None, dry_run: bool = False) -> EditReport:
    """The content of an old lake version as the newest version (history kept: an undo that can be undone)."""
    old = _versions.resolve(store, version_or_tag)
    head = _versions.head(store)
    if old.version == head.version or old.tables == head.tables:
        raise NoChange(f"lake version {head.version} already holds the content of version {old.version}")
    for t, v in old.tables.items():  # fail before committing when a gc removed what the old version needs
        try:
            store.dataset(t, version=v)
        except (OSError, ValueError, FileNotFoundError) as e:
            raise KeyError(f"lake version {old.version} can no longer be restored: table {t!r} version {v} is gone "
                           f"({str(e).splitlines()[0]})") from None
    now = set(_episodes(store, head, columns=["episode_id"])["episode_id"].to_pylist())
    then = set(_episodes(store, old, columns=["episode_id"])["episode_id"].to_pylist())
    msg = message or f"restore version {old.version}" + (f" ({version_or_tag})" if str(version_or_tag) != str(old.version) else "")
    back, gone = sorted(then - now), sorted(now - then)
    notes = [f"{len(back)} episode(s) come back, {len(gone)} leave"]
    if dry_run:
        return EditReport("restore", None, back + gone, msg, notes=notes, dry_run=True)

    def build(h: _versions.LogEntry) -> dict[str, int]:
        pins = dict(old.tables)
        for t in h.tables:  # tables made after the old version: their content leaves with an empty version
            if t not in old.tables:
                pins[t] = _pinned.empty(store, t)
        return pins

    entry = _versions.commit(store, build, msg, {"operation": "restore", "by": who(), "restored": old.version,
                                                 "episodes_added": len(back), "episodes_removed": len(gone)})
    return EditReport("restore", entry.version, back + gone, msg, notes=notes)


# --- diff ---------------------------------------------------------------------------------------------------

def diff_details(store: Store, a: _versions.LogEntry, b: _versions.LogEntry) -> dict:
    """Edits between two versions: relabelled (task changed), moved (split changed: id -> [old, new]), other
    episode columns changed, and features (columns) added / removed per table."""
    cols = ["episode_id", "task", "split"]

    def rows(e: _versions.LogEntry) -> dict:
        if "episodes" not in e.tables:
            return {}
        names = [n for n in store.dataset("episodes", version=e.tables["episodes"]).schema.names if n != "stats"]
        return {r["episode_id"]: r for r in _episodes(store, e, columns=names).to_pylist()}

    ta, tb = rows(a), rows(b)
    relabelled, moved, changed = {}, {}, {}
    for eid in sorted(set(ta) & set(tb)):
        ra, rb = ta[eid], tb[eid]
        if ra.get("task") != rb.get("task"):
            relabelled[eid] = [ra.get("task"), rb.get("task")]
        if ra.get("split") != rb.get("split"):
            moved[eid] = [ra.get("split"), rb.get("split")]
        other = sorted(c for c in set(ra) & set(rb) if c not in cols and c != "tasks" and ra[c] != rb[c])
        if other:
            changed[eid] = other
    added, removed = [], []
    for t in sorted(set(a.tables) | set(b.tables)):
        if t in NOT_EPISODE_TABLES or t.startswith("packed_") or t == "decoded_frames":
            continue
        fa = _names(store, t, a.tables.get(t))
        fb = _names(store, t, b.tables.get(t))
        if fa and fb:
            added += [f"{t}:{n}" for n in sorted(fb - fa)]
            removed += [f"{t}:{n}" for n in sorted(fa - fb)]
    return {"relabelled": relabelled, "moved": moved, "changed": changed,
            "features_added": added, "features_removed": removed}


def _names(store: Store, table: str, v: int | None) -> set[str]:
    if v is None:
        return set()
    from ._schema import unnest

    schema = store.dataset(table, version=v).schema
    return set(unnest(schema.empty_table()).column_names)
