"""Merging another lake's episodes into this one, by content identity, as one lake version.

Episode ids derive from content, so an episode both lakes hold has the same id in both and is skipped (and so
is one whose ``content_hash``, where both lakes keep one, is already here). What comes in: the episodes rows
(stats included), their frames rows (into the frames table of the same layout, created if new), their video
rows with the stored packets copied byte for byte (no decode, no re-encode), the tasks they name and the sources
they come from. Decoded frames are not copied (``decode_videos`` decodes what is missing).
"""

from __future__ import annotations

import pyarrow as pa

from . import _edit, _tables, _versions
from ._store import Store


def _theirs(o, filter: str | None) -> pa.Table:
    if "episodes" not in o._entry.tables:
        return pa.table({"episode_id": pa.array([], pa.string())})
    return o.table("episodes").to_table(filter=filter)


def plan(store: Store, head: _versions.LogEntry, theirs: pa.Table) -> list[str]:
    ours = _edit._episodes(store, head, columns=None) if "episodes" in head.tables else pa.table({})
    have = set(ours["episode_id"].to_pylist()) if "episode_id" in ours.column_names else set()
    hashes = (set(ours["content_hash"].to_pylist()) - {None}
              if "content_hash" in ours.column_names and "content_hash" in theirs.column_names else set())
    out = []
    for r in theirs.select([c for c in ("episode_id", "content_hash") if c in theirs.column_names]).to_pylist():
        if r["episode_id"] in have or (hashes and r.get("content_hash") in hashes):
            continue
        out.append(r["episode_id"])
    return sorted(set(out))


def _videos(o, ids: list[str]) -> pa.Table | None:
    from ._schema import VIDEOS

    if "videos" not in o._entry.tables:
        return None
    ds = o.table("videos")
    meta = ds.to_table(columns=[n for n in ds.schema.names if n != "data"], filter=_edit.in_list(ids), with_row_id=True)
    if meta.num_rows == 0:
        return None
    blobs = ds.take_blobs("data", ids=meta["_rowid"].to_pylist())
    data = []
    for b in blobs:  # the stored packets as they are
        with b as f:
            data.append(f.read())
    t = meta.drop_columns(["_rowid"]).append_column(pa.field("data", pa.large_binary()), pa.array(data, pa.large_binary()))
    return _tables._conform(t, VIDEOS)


def merge(store: Store, other, filter: str | None = None, message: str | None = None,
          dry_run: bool = False) -> _edit.EditReport:
    """Episodes of ``other`` (an open Lake handle) that ``store`` lacks, as one new version."""
    from ._schema import EPISODES, SOURCES, TASKS, task_id

    o = other
    if o.uri == store.uri:
        raise ValueError("merging a lake into itself changes nothing")
    head = _versions.head(store)
    try:
        theirs = _theirs(o, filter)
    except (OSError, ValueError) as e:
        raise ValueError(f"bad filter {filter!r}: {str(e).splitlines()[0]}") from None
    ids = plan(store, head, theirs)
    msg = message or f"merge {len(ids)} episode(s) from {o.uri} (version {o.version})" + (f" where {filter}" if filter else "")
    if not ids:
        raise _edit.NoChange(f"every episode of {o.uri}{f' matching {filter!r}' if filter else ''} is already here")
    if dry_run:
        return _edit.EditReport("merge", None, ids, msg, dry_run=True)
    import pyarrow.compute as pc

    rows = theirs.filter(pc.is_in(theirs["episode_id"], value_set=pa.array(ids, pa.string())))
    frames: dict[str, pa.Table] = {}
    for table in sorted(set(rows["frames_table"].to_pylist())):
        sel = rows.filter(pc.equal(rows["frames_table"], table))["episode_id"].to_pylist()
        frames[table] = o.table(table).to_table(filter=_edit.in_list(sel))
    videos = _videos(o, ids)
    tasks = sorted({t for t in rows["task"].to_pylist() if t} | {t for lst in rows["tasks"].to_pylist() for t in lst or ()})
    sources = o._scan("sources").filter(pc.is_in(o._scan("sources")["source"],
                                                 value_set=pa.array(sorted(set(rows["source"].to_pylist())), pa.string())))

    def build(h: _versions.LogEntry) -> dict[str, int]:
        now = set(plan(store, h, rows))
        if not now:
            raise _edit.NoChange("the episodes to merge arrived meanwhile")
        keep = pa.array(sorted(now), pa.string())
        batches = {}

        def add(name, data, schema):
            data = data.filter(pc.is_in(data["episode_id"], value_set=keep)) if "episode_id" in data.column_names else data
            if data.num_rows:
                if name in h.tables and name != "videos":  # (the videos blob column reads back as a struct)
                    schema = store.dataset(name, version=h.tables[name]).schema
                    data = _tables._conform(data.select([c for c in data.column_names if c in schema.names]), schema)
                batches[name] = (schema, _tables.write_rows(store, name, data, schema))

        add("episodes", rows, EPISODES)
        for table, t in frames.items():
            add(table, t, t.schema)
        if videos is not None:
            from ._schema import VIDEOS

            add("videos", videos, VIDEOS)
        have_tasks = set(_edit._episodes(store, h, columns=None).column("task").to_pylist()) if "episodes" in h.tables else set()
        if "tasks" in h.tables:
            have_tasks |= set(store.dataset("tasks", version=h.tables["tasks"]).to_table()["task"].to_pylist())
        new_tasks = [t for t in tasks if t not in have_tasks]
        if new_tasks:
            add("tasks", pa.table({"task_id": [task_id(t) for t in new_tasks], "task": new_tasks}, schema=TASKS), TASKS)
        have_src = (set(store.dataset("sources", version=h.tables["sources"]).to_table()["source"].to_pylist())
                    if "sources" in h.tables else set())
        src = sources.filter(pc.invert(pc.is_in(sources["source"], value_set=pa.array(sorted(have_src), pa.string()))))
        if src.num_rows:
            add("sources", _tables._conform(src, SOURCES), SOURCES)
        return _tables.append_tables(store, h.tables, batches)

    entry = _versions.commit(store, build, msg, {"operation": "merge", "by": _edit.who(), "from": o.uri,
                                                 "from_version": o.version, "episodes_added": len(ids),
                                                 "frames_added": int(sum(rows["length"].to_pylist())), "filter": filter})
    return _edit.EditReport("merge", entry.version, ids, msg)
