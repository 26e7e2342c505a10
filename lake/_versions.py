"""Lake-level versions: one append-only Lance table (``_log``) whose rows pin a Lance version of every table.

A lake version is a row ``(version, parent, tables={name: lance_version}, ...)``. Writers append rows with
plain Lance appends (which never conflict); the log is the chain that starts at version 0 and, at each
step, takes the *first committed* row whose parent is the current head. A writer that lost the race sees
another row at its version number, rebuilds its table versions on the new head and appends again. So:

- readers only ever see table versions pinned by a committed row: a writer killed half-way leaves
  unreferenced Lance versions behind, never a half-ingested lake;
- concurrent writers serialize without locks, using only Lance's own atomic commits.

Reading the head costs the same at any history length. Every writer appends ``head + 1`` after reading a
valid head, so a row can only follow the valid row before it: the chain is found by replaying the rows that
come after a known-valid row. One fragment of the log is kept *clean* (its rows ``0..n-1`` are exactly lake
versions ``0..n-1``): the creating row, until the writer whose commit leaves more than ``LOG_FRAGMENTS``
fragments compacts the log (``compact_log``: one Lance ``Rewrite`` of every fragment into one holding just the
chain, in version order; rows that lost races are dropped). Rows appended meanwhile may land before it (Lance
places a rebased rewrite last) but are all newer, so a head lookup reads the clean fragment's last row plus
the other fragments (at most ``LOG_FRAGMENTS``), and version ``v < n`` is one ``take``. A log without a clean
fragment (written by hand, say) is read whole: slower, never wrong.

Old Lance versions of the log (not lake versions: those are rows) are pruned by commits (``prune_log``), so
opening the newest log, which lists its manifests, stays cheap without gc; every other table is opened at the
Lance version a lake version pins, by number.

Tags and gc records live in ``_refs`` (rows ``kind, name, version``: ``tag`` names a lake version; ``deleted``
says ``gc`` removed a version's data; its log row stays, so lineage still names it). A tag is also a Lance tag
of the same name on every table version it pins, so no cleanup deletes what a tag names. Lakes written
before ``_refs`` kept tags as Lance tags on ``_log``; those are still read.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import pyarrow as pa

from ._store import Store

LOG = "_log"
REFS = "_refs"
LOG_FRAGMENTS = 32  # compact the log past this many fragments (bounds what a head lookup reads)

LOG_SCHEMA = pa.schema(
    [
        pa.field("version", pa.int64(), nullable=False),
        pa.field("parent", pa.int64(), nullable=False),
        pa.field("writer", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("message", pa.string()),
        pa.field("tables", pa.string(), nullable=False),  # JSON {table: lance_version}
        pa.field("summary", pa.string()),  # JSON, free-form counts
    ]
)

REFS_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),  # "tag" | "deleted"
    pa.field("name", pa.string()),  # tag name; for "deleted", the gc run id
    pa.field("version", pa.int64(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
])

# rows of ``_log`` read by this process (tests assert a commit reads a bounded number, whatever the history)
counters = {"log_rows_read": 0}


@dataclass(frozen=True)
class LogEntry:
    """One lake version. ``tables`` maps table name to the Lance version it pins. ``data_deleted``: ``gc``
    removed this version's data (the entry itself stays, so lineage records still resolve to it)."""

    version: int
    timestamp: datetime
    message: str
    tables: dict[str, int]
    summary: dict = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    writer: str = ""
    data_deleted: bool = False


class LakeBusy(RuntimeError):
    """A commit kept losing races to other writers."""


class VersionDeleted(KeyError):
    """A lake version whose data ``gc`` deleted. ``retained``: the versions that can still be checked out."""

    def __init__(self, version: int, retained: list[int], uri: str = ""):
        self.version, self.retained = version, retained
        shown = ", ".join(map(str, retained[-20:])) + (f" (and {len(retained) - 20} older)" if len(retained) > 20 else "")
        super().__init__(f"lake version {version} at {uri}: data deleted by gc; retained versions: {shown}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def _row_entry(row: dict) -> LogEntry:
    return LogEntry(
        version=row["version"],
        timestamp=row["timestamp"],
        message=row["message"] or "",
        tables=json.loads(row["tables"]),
        summary=json.loads(row["summary"] or "{}"),
        writer=row["writer"],
    )


def create(store: Store) -> None:
    """Create the log with version 0 (an empty lake). A concurrent creator winning is fine."""
    import lance

    if store.exists(LOG):
        return
    row = {
        "version": [0], "parent": [-1], "writer": ["create"], "timestamp": [datetime.now(timezone.utc)],
        "message": ["create lake"], "tables": ["{}"], "summary": ["{}"],
    }
    try:
        lance.write_dataset(pa.table(row, schema=LOG_SCHEMA), store.table_uri(LOG), mode="create",
                            storage_options=store.storage_options)
    except (OSError, ValueError) as e:
        if not store.exists(LOG):
            raise RuntimeError(f"could not create lake at {store.uri}: {e}") from e


def _chain(rows: list[dict], start: list[LogEntry] | None = None) -> tuple[list[LogEntry], list[int]]:
    """Replay raw rows (commit order) into the valid chain, continuing ``start``; also each new entry's row index."""
    chain: list[LogEntry] = list(start or [])
    idx: list[int] = []
    for i, row in enumerate(rows):
        expected_parent = chain[-1].version if chain else -1
        if row["parent"] == expected_parent and row["version"] == expected_parent + 1:
            chain.append(_row_entry(row))
            idx.append(i)
    return chain, idx


def _read(ds, fragments=None, columns=None, **kw) -> list[dict]:
    t = ds.scanner(columns=columns or LOG_SCHEMA.names, fragments=fragments, scan_in_order=True, **kw).to_table()
    counters["log_rows_read"] += t.num_rows
    return t.to_pylist()


def _layout(ds) -> tuple[object | None, list, int]:
    """(clean fragment, the others in commit order, n): the clean fragment holds exactly lake versions 0..n-1.
    It is the largest fragment (one row each until the first compaction: then the creating row comes first).
    A log not of this shape gives (None, every fragment, 0)."""
    frags = ds.get_fragments()
    big = max(frags, key=lambda f: f.metadata.physical_rows)
    c = big if big.metadata.physical_rows > 1 else frags[0]
    n = c.count_rows()
    if n == 0 or c.metadata.deletion_file is not None:
        return None, frags, 0
    last = c.take([n - 1], columns=["version"]).column("version")[0].as_py()
    counters["log_rows_read"] += 1
    if last != n - 1:  # n rows ending at version n-1, each after its parent: no row lost a race
        return None, frags, 0
    # fragments appended while a compaction ran may sit before the compacted one: all are newer than it
    return c, [f for f in frags if f.fragment_id != c.fragment_id], n


def _take(frag, i: int) -> LogEntry:
    counters["log_rows_read"] += 1
    return _row_entry(frag.take([i], columns=LOG_SCHEMA.names).to_pylist()[0])


def _recent(store: Store, lance_version: int | str | None = None, ds=None) -> tuple[list[LogEntry], int]:
    """The valid entries from the clean fragment's last version to the head, and that fragment's length."""
    ds = ds if ds is not None else store.dataset(LOG, version=lance_version)
    c, tail, n = _layout(ds)
    if c is None:  # not the expected shape: replay everything
        return _chain(_ordered_rows(ds))[0], 0
    rows = _read(ds, tail) if tail else []
    return _chain(rows, [_take(c, n - 1)])[0], n


def _ordered_rows(ds, columns=None) -> list[dict]:
    """Every row of the log in commit order: the clean fragment first (rows appended while it was being
    written may sit before it), then the others as they lie."""
    c, tail, _ = _layout(ds)
    return _read(ds, ([c] if c is not None else []) + tail, columns)


def chain(store: Store, lance_version: int | str | None = None) -> list[LogEntry]:
    """Every lake version, oldest first, as of a Lance version of the log (default: newest). Reads the whole log."""
    entries = _chain(_ordered_rows(store.dataset(LOG, version=lance_version)))[0]
    deleted = deleted_versions(store)
    if not deleted:
        return entries
    return [LogEntry(e.version, e.timestamp, e.message, e.tables, e.summary, e.tags, e.writer, e.version in deleted)
            for e in entries]


def head(store: Store) -> LogEntry:
    """The newest lake version (reads a bounded tail of the log)."""
    return _recent(store)[0][-1]


def entry(store: Store, version: int, ds=None) -> LogEntry:
    """Lake version ``version`` (deleted or not) from a bounded read (of ``ds``, an opened Lance version of the
    log, or the newest). Raises KeyError when there is none."""
    ds = ds if ds is not None else store.dataset(LOG)
    c, _, n = _layout(ds)
    if 0 <= version < n:
        return _take(c, version)
    entries = _recent(store, ds=ds)[0] if c is not None else _chain(_ordered_rows(ds))[0]
    for e in entries:
        if e.version == version:
            return e
    raise KeyError(f"no lake version {version} (newest is {entries[-1].version})")


def commit(
    store: Store,
    build: Callable[[LogEntry], dict[str, int]],
    message: str | None,
    summary: dict | None = None,
    max_attempts: int = 50,
) -> LogEntry:
    """Make a new lake version on top of the current head.

    ``build(head)`` writes whatever Lance table versions the change needs *on top of the tables pinned by
    ``head``* and returns the updated pins (only the tables it changed). It may be called again, with a newer
    head, if another writer commits first; it raises to abort (e.g. when the new head makes the change moot).
    Small fragments of the changed tables are merged into the same version (``_tables.compact_small``: same rows).
    """
    import lance
    from lance import LanceOperation
    from lance.fragment import write_fragments

    from ._tables import compact_small

    writer = uuid.uuid4().hex
    for attempt in range(max_attempts):
        log = store.dataset(LOG)  # the one open per attempt that lists manifests (pruned: see prune_log)
        opened = time.monotonic()
        base = _recent(store, ds=log)[0][-1]
        changed = build(base)
        pins = {**base.tables, **changed, **compact_small(store, {**base.tables, **changed}, changed)}
        _fault_point("before_log_append")
        row = {
            "version": [base.version + 1], "parent": [base.version], "writer": [writer],
            "timestamp": [datetime.now(timezone.utc)], "message": [message or ""],
            "tables": [json.dumps(pins, sort_keys=True)], "summary": [json.dumps(summary or {})],
        }
        # appended on the log version just read (Lance rebases the append over any appended since, finding them
        # by number); the version it makes holds every row committed before ours: enough to tell who won. After a
        # long build those versions may be pruned (older than LOG_GRACE); Lance 14 still finds the newest (tested
        # on local disk), but rather than depend on that on every store, a long build appends on the newest.
        if time.monotonic() - opened > LOG_GRACE.total_seconds() / 3:
            log = store.dataset(LOG)
        frags = write_fragments(pa.table(row, schema=LOG_SCHEMA), log, schema=LOG_SCHEMA)
        ds = lance.LanceDataset.commit(log, LanceOperation.Append(frags), read_version=log.version,
                                       storage_options=store.storage_options)
        won = entry(store, base.version + 1, ds)
        if won.writer == writer:
            if len(ds.get_fragments()) > LOG_FRAGMENTS:
                if compact_log(store):
                    prune_log(store)
            return won
        time.sleep(min(0.05 * 2**attempt, 1.0))  # another writer took this version first: rebuild on the new head
    raise LakeBusy(f"gave up committing to {store.uri} after {max_attempts} lost races")


def compact_log(store: Store) -> bool:
    """Rewrite the log as one fragment holding exactly the chain (rows that lost races dropped, in version
    order): one Lance ``Rewrite`` of every fragment read, so a concurrent compaction makes it fail (False) and a
    concurrent append survives it. Every lake version is unchanged."""
    import lance
    from lance import LanceOperation
    from lance.fragment import write_fragments

    ds = store.dataset(LOG)
    rows = _ordered_rows(ds)
    _, keep = _chain(rows)
    new = write_fragments(pa.Table.from_pylist([rows[i] for i in keep], LOG_SCHEMA), store.table_uri(LOG),
                          schema=LOG_SCHEMA, storage_options=store.storage_options)
    _fault_point("log_compaction")
    group = LanceOperation.RewriteGroup([f.metadata for f in ds.get_fragments()], new)
    try:
        lance.LanceDataset.commit(store.table_uri(LOG), LanceOperation.Rewrite([group], []), read_version=ds.version,
                                  storage_options=store.storage_options)
        return True
    except OSError as e:  # a concurrent compaction rewrote these fragments first
        if "conflict" in str(e).lower() or "preempted" in str(e).lower():
            return False
        raise


LOG_KEEP = 8  # newest Lance versions of _log / _refs never pruned (a head lookup in flight reads one of them)
LOG_GRACE = timedelta(seconds=30)  # nor any younger than this


def prune_log(store: Store, name: str = LOG, dry_run: bool = False) -> int:
    """Delete old Lance versions of ``_log`` (or ``_refs``): all but the newest ``LOG_KEEP``, the tagged ones and
    any younger than ``LOG_GRACE``. Their rows live on in the newest version (lake versions are rows, not Lance
    versions), so no lake version changes; what goes is the log's own history of fragments. Bounds the
    manifests that opening the newest log lists (once per commit) without gc. Returns the bytes freed."""
    ds = store.dataset(name)
    cutoff = datetime.now(timezone.utc) - LOG_GRACE
    vs = ds.versions()
    newest = sorted(v["version"] for v in vs)[-LOG_KEEP:]
    tagged = {t["version"] for t in ds.tags.list().values()}
    old = [v["version"] for v in vs if v["version"] not in newest and v["version"] not in tagged
           and v["timestamp"].replace(tzinfo=v["timestamp"].tzinfo or timezone.utc) < cutoff]
    if not old:
        return 0
    if dry_run:
        return int(ds.explain_cleanup_old_versions(versions=old, error_if_tagged_old_versions=False)
                   .stats.bytes_removed)
    try:
        return int(ds.cleanup_old_versions(versions=old, error_if_tagged_old_versions=False).bytes_removed)
    except (OSError, ValueError) as e:  # a concurrent prune removed some first: the next one finishes
        if "not found" in str(e).lower():
            return 0
        raise


_fault_hits: dict[str, int] = {}


def _fault_point(name: str) -> None:
    """Test hook: with EPISODE_LAKE_FAULT=<name>:<marker path>, touch the marker and hang here (to be killed);
    EPISODE_LAKE_FAULT_SKIP=k passes the first k hits."""
    import os

    spec = os.environ.get("EPISODE_LAKE_FAULT", "")
    if spec.startswith(name + ":"):
        _fault_hits[name] = _fault_hits.get(name, 0) + 1
        if _fault_hits[name] <= int(os.environ.get("EPISODE_LAKE_FAULT_SKIP", "0")):
            return
        with open(spec.split(":", 1)[1], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(3600)


# --- refs: tags and deleted versions ---------------------------------------------------------------------

def _refs(store: Store) -> list[dict]:
    if not store.exists(REFS):
        return []
    return store.dataset(REFS).to_table(columns=["kind", "name", "version"]).to_pylist()


def add_refs(store: Store, rows: list[dict]) -> None:
    """Append rows to ``_refs`` (created on first use); compacted past ``LOG_FRAGMENTS`` fragments."""
    import lance

    now = datetime.now(timezone.utc)
    t = pa.Table.from_pylist([{**r, "timestamp": now} for r in rows], REFS_SCHEMA)
    mode = "append" if store.exists(REFS) else "create"
    try:
        ds = lance.write_dataset(t, store.table_uri(REFS), mode=mode, storage_options=store.storage_options)
    except (OSError, ValueError):
        if mode != "create":
            raise
        ds = lance.write_dataset(t, store.table_uri(REFS), mode="append", storage_options=store.storage_options)
    if len(ds.get_fragments()) > LOG_FRAGMENTS:
        try:
            ds.optimize.compact_files(num_threads=1)
        except Exception as e:  # noqa: BLE001 - concurrent compaction: the other one did it
            if "conflict" not in str(e).lower() and "retry" not in str(e).lower():
                raise


def deleted_versions(store: Store) -> set[int]:
    """Lake versions whose data ``gc`` deleted (or is deleting)."""
    return {r["version"] for r in _refs(store) if r["kind"] == "deleted"}


def tags(store: Store) -> dict[str, int]:
    """Tag name -> lake version (the first tag of a name wins)."""
    out: dict[str, int] = {}
    for r in _refs(store):
        if r["kind"] == "tag":
            out.setdefault(r["name"], r["version"])
    for name, info in store.dataset(LOG).tags.list().items():  # lakes written before _refs
        if name not in out:
            out[name] = _recent(store, info["version"])[0][-1].version
    return out


def create_tag(store: Store, name: str, lake_version: int) -> None:
    """Name a lake version. Raises ValueError if the tag exists, KeyError if the version does not (or its data
    was deleted)."""
    if name in tags(store):
        raise ValueError(f"tag {name!r} already exists")
    e = resolve(store, lake_version)
    for table, v in e.tables.items():  # keep the pinned data safe from version cleanup
        ds = store.dataset(table)
        try:
            ds.tags.create(name, v)
        except (ValueError, OSError):
            pass  # a table tag of that name already exists; _refs is what resolves
    add_refs(store, [{"kind": "tag", "name": name, "version": e.version}])


def resolve(store: Store, version_or_tag: int | str) -> LogEntry:
    """A lake version by number or tag name. Raises KeyError when there is none, VersionDeleted (a KeyError)
    when ``gc`` deleted its data."""
    refs = _refs(store)
    if isinstance(version_or_tag, str) and not version_or_tag.lstrip("-").isdigit():
        t = tags(store)
        if version_or_tag not in t:
            raise KeyError(f"no tag {version_or_tag!r} (tags: {sorted(t)})")
        version_or_tag = t[version_or_tag]
    v = int(version_or_tag)
    e = entry(store, v)
    deleted = {r["version"] for r in refs if r["kind"] == "deleted"}
    if v in deleted:
        retained = [x.version for x in chain(store) if not x.data_deleted]
        raise VersionDeleted(v, retained, store.uri)
    return e
