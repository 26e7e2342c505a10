"""Retention: ``gc`` deletes the data of lake versions nobody keeps (Delta's VACUUM, Iceberg's expire_snapshots).

Kept: every tagged version, the newest ``keep_last`` versions (the head always), and every version newer
than ``keep_within``. Deleted, for every other version: the Lance versions (manifests) of each table that no
kept version pins with their side files (``lake._sidefiles``), the data files only they reference (Lance
``cleanup_old_versions`` with an explicit list of versions, so a version a writer is building above the head's
pins is never touched), and whole tables that no kept version pins any more (old ``packed_*`` / ``decoded_*``
tables, frames tables of deleted sources). Old Lance versions of ``_log`` and ``_refs`` go too (their rows stay:
every log entry, with its message and pins, survives gc, marked ``data_deleted``, so checkpoint lineage still names
its version).

Crash safety: the deleted versions are recorded in ``_refs`` *first* (checkouts refuse them from then on),
then data goes table by table. Lance only ever deletes files no kept manifest references, and a table is
renamed out of the lake before it is removed, so a kill -9 at any point leaves every kept version readable;
running gc again finishes the job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from . import _sidefiles, _versions
from ._store import Store, filesystem



@dataclass(frozen=True)
class GcReport:
    """What ``gc`` deleted (or, with ``dry_run``, would delete). ``bytes_freed`` in bytes."""

    deleted_versions: list[int]
    retained_versions: list[int]
    bytes_freed: int
    tables_removed: list[str] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"gc {verb} {len(self.deleted_versions)} versions, {len(self.tables_removed)} whole tables, "
                f"{self.bytes_freed / 1e6:.1f} MB; retained versions: {_ranges(self.retained_versions)}")


def _ranges(vs: list[int]) -> str:
    out, start = [], None
    for i, v in enumerate(vs):
        if start is None:
            start = v
        if i + 1 == len(vs) or vs[i + 1] != v + 1:
            out.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ", ".join(out) or "none"


def parse_duration(text: str | timedelta | None) -> timedelta | None:
    """'90s', '30m', '12h', '7d', '2w' (or a timedelta) -> timedelta. Raises ValueError on anything else."""
    if text is None or isinstance(text, timedelta):
        return text
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    t = str(text).strip().lower()
    try:
        return timedelta(seconds=float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else timedelta(seconds=float(t))
    except (KeyError, ValueError):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 12h, 7d, 2w)") from None


def retained(entries: list[_versions.LogEntry], tags: dict[str, int], keep_last: int,
             keep_within: timedelta | None, now: datetime) -> set[int]:
    """Versions gc keeps: tagged, the newest ``keep_last`` (at least the head), newer than ``keep_within``."""
    keep = {e.version for e in entries[-max(keep_last, 1):]} | set(tags.values())
    if keep_within is not None:
        keep |= {e.version for e in entries if now - e.timestamp <= keep_within}
    return keep


def _lake_tables(store: Store) -> tuple[object, dict[str, str]]:
    fs, root = filesystem(store.uri, store.storage_options)
    names = {}
    for p in fs.ls(root, detail=False):
        base = p.rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(".lance") or ".lance.gc-" in base:
            names[base] = p
    return fs, names


def _lance_versions_to_delete(ds, keep: set[int], below: int) -> list[int]:
    return [v["version"] for v in ds.versions() if v["version"] not in keep and v["version"] < below]


def gc(store: Store, keep_last: int = 10, keep_within=None, dry_run: bool = False) -> GcReport:
    """Delete what no kept version needs (see module doc). Returns a GcReport."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1 (the head is always kept), got {keep_last}")
    keep_within = parse_duration(keep_within)
    entries = _versions.chain(store)
    tags = _versions.tags(store)
    keep = retained(entries, tags, keep_last, keep_within, datetime.now(timezone.utc))
    doomed = [e.version for e in entries if e.version not in keep and not e.data_deleted]
    kept_entries = [e for e in entries if e.version in keep]
    pins: dict[str, set[int]] = {}
    for e in kept_entries:
        for t, v in e.tables.items():
            pins.setdefault(t, set()).add(v)
    ever = {t for e in entries for t in e.tables}
    head = entries[-1].tables
    if doomed and not dry_run:
        _versions.add_refs(store, [{"kind": "deleted", "name": uuid.uuid4().hex[:12], "version": v} for v in doomed])
    _versions._fault_point("gc_marked")

    fs, tables = _lake_tables(store)
    freed, removed = 0, []
    for base, path in sorted(tables.items()):
        name = base.split(".lance", 1)[0]
        if ".lance.gc-" in base:  # a removal a killed gc left half done
            freed += _remove(fs, path, dry_run)
            continue
        if name in (_versions.LOG, _versions.REFS):
            freed += _versions.prune_log(store, name, dry_run)
        elif name in pins:
            ds = store.dataset(name)
            # versions above the head's pin may be a writer's work in progress: never touched
            below = head.get(name, max(pins[name]))
            doomed_lance = _lance_versions_to_delete(ds, pins[name], below)
            freed += _cleanup(ds, doomed_lance, dry_run)
            for side in _sidefiles.stale(fs, path, pins[name], below):  # derived from versions just deleted
                freed += _remove(fs, side, dry_run)
        elif name in ever:  # pinned once, by versions gc deleted: the whole table goes
            removed.append(name)
            if dry_run:
                freed += fs.du(path)
            else:
                gone = f"{path}.gc-{uuid.uuid4().hex[:8]}"
                fs.mv(path, gone, recursive=True)  # out of the lake first: never half a table under its name
                _versions._fault_point("gc_remove")
                freed += _remove(fs, gone, False)
        _versions._fault_point("gc_table")
    return GcReport(doomed, sorted(keep), int(freed), removed, dry_run)


def _cleanup(ds, versions: list[int], dry_run: bool) -> int:
    if not versions:
        return 0
    if dry_run:
        return int(ds.explain_cleanup_old_versions(versions=versions, error_if_tagged_old_versions=False)
                   .stats.bytes_removed)
    return int(ds.cleanup_old_versions(versions=versions, error_if_tagged_old_versions=False).bytes_removed)


def _remove(fs, path: str, dry_run: bool) -> int:
    size = fs.du(path)
    if not dry_run:
        fs.rm(path, recursive=True)
    return int(size)
