"""Lake-level versions: one append-only Lance table (``_log``) whose rows pin a Lance version of every table.

A lake version is a row ``(version, parent, tables={name: lance_version}, ...)``. Writers append rows with
plain Lance appends (which never conflict); the log is the chain that starts at version 0 and, at each
step, takes the *first committed* row whose parent is the current head. A writer that lost the race sees
another row at its version number, rebuilds its table versions on the new head and appends again. So:

- readers only ever see table versions pinned by a committed row: a writer killed half-way leaves
  unreferenced Lance versions behind, never a half-ingested lake;
- concurrent writers serialize without locks, using only Lance's own atomic commits.

Tags are Lance tags on ``_log`` (pointing at the Lance version that made a lake version head) plus the same
tag on every pinned table version, so ``cleanup_old_versions`` never deletes what a tag names.
"""

from __future__ import annotations

import json
import time
import uuid
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa

from ._store import Store

LOG = "_log"

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


@dataclass(frozen=True)
class LogEntry:
    """One lake version. ``tables`` maps table name to the Lance version it pins."""

    version: int
    timestamp: datetime
    message: str
    tables: dict[str, int]
    summary: dict = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    writer: str = ""


class LakeBusy(RuntimeError):
    """A commit kept losing races to other writers."""


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


def _chain(rows: list[dict]) -> tuple[list[LogEntry], list[int]]:
    """Replay raw rows (commit order) into the valid chain; also each entry's raw row index."""
    chain: list[LogEntry] = []
    idx: list[int] = []
    for i, row in enumerate(rows):
        expected_parent = chain[-1].version if chain else -1
        if row["parent"] == expected_parent and row["version"] == expected_parent + 1:
            chain.append(_row_entry(row))
            idx.append(i)
    return chain, idx


def _raw_rows(store: Store, lance_version: int | str | None = None) -> list[dict]:
    ds = store.dataset(LOG, version=lance_version)
    return ds.to_table(columns=LOG_SCHEMA.names).to_pylist()


def chain(store: Store, lance_version: int | str | None = None) -> list[LogEntry]:
    """The lake versions, oldest first, as of a Lance version of the log (default: newest)."""
    return _chain(_raw_rows(store, lance_version))[0]


def head(store: Store) -> LogEntry:
    return chain(store)[-1]


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
    """
    import lance

    writer = uuid.uuid4().hex
    for attempt in range(max_attempts):
        base = head(store)
        pins = {**base.tables, **build(base)}
        _fault_point("before_log_append")
        row = {
            "version": [base.version + 1], "parent": [base.version], "writer": [writer],
            "timestamp": [datetime.now(timezone.utc)], "message": [message or ""],
            "tables": [json.dumps(pins, sort_keys=True)], "summary": [json.dumps(summary or {})],
        }
        lance.write_dataset(pa.table(row, schema=LOG_SCHEMA), store.table_uri(LOG), mode="append",
                            storage_options=store.storage_options)
        for entry in reversed(chain(store)):
            if entry.version == base.version + 1:
                if entry.writer == writer:
                    return entry
                break  # another writer took this version first: rebuild on the new head
        time.sleep(min(0.05 * 2**attempt, 1.0))
    raise LakeBusy(f"gave up committing to {store.uri} after {max_attempts} lost races")


def _fault_point(name: str) -> None:
    """Test hook: with EPISODE_LAKE_FAULT=<name>:<marker path>, touch the marker and hang here (to be killed)."""
    import os

    spec = os.environ.get("EPISODE_LAKE_FAULT", "")
    if spec.startswith(name + ":"):
        with open(spec.split(":", 1)[1], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(3600)


# --- tags -------------------------------------------------------------------------------------------------

def _row_counts(store: Store) -> dict[int, int]:
    """Lance version of ``_log`` -> rows it holds (from version metadata; no data read)."""
    return {v["version"]: int(v["metadata"]["total_rows"]) for v in store.dataset(LOG).versions()}


def _log_version_of(store: Store, lake_version: int) -> int:
    """The first Lance version of ``_log`` at which ``lake_version`` is the head."""
    entries, idx = _chain(_raw_rows(store))
    pos = next((i for e, i in zip(entries, idx) if e.version == lake_version), None)
    if pos is None:
        raise KeyError(f"no lake version {lake_version}")
    return min(v for v, n in _row_counts(store).items() if n > pos)


def tags(store: Store) -> dict[str, int]:
    """Tag name -> lake version."""
    entries, idx = _chain(_raw_rows(store))
    counts = _row_counts(store)
    out = {}
    for name, info in store.dataset(LOG).tags.list().items():
        # head at that Lance version = last chain entry whose raw row index is below the row count
        k = bisect_right(idx, counts[info["version"]] - 1) - 1
        out[name] = entries[k].version
    return out


def create_tag(store: Store, name: str, lake_version: int) -> None:
    """Name a lake version. Raises ValueError if the tag exists, KeyError if the version does not."""
    if name in tags(store):
        raise ValueError(f"tag {name!r} already exists")
    entry = next((e for e in chain(store) if e.version == lake_version), None)
    if entry is None:
        raise KeyError(f"no lake version {lake_version}")
    store.dataset(LOG).tags.create(name, _log_version_of(store, lake_version))
    for table, v in entry.tables.items():  # keep the pinned data safe from version cleanup
        ds = store.dataset(table)
        try:
            ds.tags.create(name, v)
        except (ValueError, OSError):
            pass  # a table tag of that name already exists; the log tag is what resolves


def resolve(store: Store, version_or_tag: int | str) -> LogEntry:
    """A lake version by number or tag name. Raises KeyError when there is none."""
    entries = chain(store)
    if isinstance(version_or_tag, str) and not version_or_tag.lstrip("-").isdigit():
        t = tags(store)
        if version_or_tag not in t:
            raise KeyError(f"no tag {version_or_tag!r} (tags: {sorted(t)})")
        version_or_tag = t[version_or_tag]
    v = int(version_or_tag)
    for e in entries:
        if e.version == v:
            return e
    raise KeyError(f"no lake version {v} (newest is {entries[-1].version})")
