"""One Lance operation applied to exactly the version of a table that a lake version pins.

Lance applies an operation to the *latest* version of a dataset and rebases it over concurrent commits. A lake
edit must instead apply to the version its head pins: other writers (a crashed ingest, a build that lost the
race) may have left newer, unpinned versions whose fragments must not leak in. So, before the operation, the
table is put back on the pinned version with Lance's own ``restore`` (a new version with the pinned manifest:
no data written), and after it the result must sit exactly one version above (no rebase over someone else's
commit happened); otherwise it is tried again. Whatever is left behind is an unpinned Lance version, which the
lake never reads.

Deletion vectors (``Delete``), column addition (``Merge``), column removal (``Project``), row rewrites
(``Update``) and appends to fragments that carry deletion vectors all go through ``on_pinned``: Lance refuses an
``Overwrite`` of fragments with deletion files, which the ingest path uses otherwise.
"""

from __future__ import annotations

import time
from typing import Callable

from ._store import Store


def _manifest_key(ds) -> list:
    """What a version holds: its fragments' data files and deletion vectors (not when it was made)."""
    keep = ("id", "files", "deletion_file", "physical_rows")
    return [{k: v for k, v in fr.metadata.to_json().items() if k in keep} for fr in ds.get_fragments()]


def _lost_race(e: Exception) -> bool:
    """Whether a Lance commit failed only because a concurrent commit came first."""
    return "conflict" in str(e).lower() or "preempted" in str(e).lower()


def on_pinned(store: Store, table: str, pinned: int, apply: Callable | None, attempts: int = 20) -> int:
    """Run ``apply(ds)``, with ``ds`` the newest Lance version of ``table`` holding exactly the pinned version's
    content; ``apply`` commits one Lance operation on ``ds.version`` and returns the new dataset (or version).
    Returns the new Lance version. Raises RuntimeError after ``attempts`` lost races."""
    want = key = None
    if apply is not None:  # first on the pinned version opened by number: usually the newest, and then
        ds = store.dataset(table, version=pinned)  # nothing lists the table's manifests (they grow with history)
        try:
            out = apply(ds)
            new = out if isinstance(out, int) else out.version
            if new == pinned + 1:
                return new
        except (OSError, ValueError) as e:  # a newer version conflicts: the general path below
            if not _lost_race(e):
                raise
    for attempt in range(attempts):
        ds = store.dataset(table)
        if ds.version != pinned and want is None:  # (manifest keys cost ~3 ms a fragment: only when needed)
            want = store.dataset(table, version=pinned)
            key = _manifest_key(want)
        if ds.version != pinned and (ds.schema != want.schema or _manifest_key(ds) != key):
            try:
                store.dataset(table, version=pinned).restore()
            except (OSError, ValueError) as e:  # a concurrent commit took the version number: retry
                if "conflict" not in str(e).lower() and "already exists" not in str(e).lower():
                    raise
            ds = store.dataset(table)
            if ds.schema != want.schema or _manifest_key(ds) != key:
                time.sleep(0.02 * (attempt + 1))
                continue
        base = ds.version
        if apply is None:  # only make the pinned content the newest version
            return base
        try:
            out = apply(ds)
        except (OSError, ValueError) as e:  # another writer's restore or edit landed first (Lance refuses to
            if not _lost_race(e):  # rebase an Append over a Restore): put the pinned content back and retry
                raise
            time.sleep(0.02 * (attempt + 1))
            continue
        new = out if isinstance(out, int) else out.version
        if new == base + 1:
            return new
        time.sleep(0.02 * (attempt + 1))  # rebased over a concurrent commit: its content is not ours to pin
    raise RuntimeError(f"could not apply an edit to table {table!r} at {store.uri}: kept losing races")


def commit_op(store: Store, table: str, pinned: int, make_op: Callable) -> int:
    """``on_pinned`` for a ``LanceOperation`` built by ``make_op(ds)`` and committed on ``ds.version``."""
    import lance

    def apply(ds):
        return lance.LanceDataset.commit(ds, make_op(ds), read_version=ds.version,
                                         storage_options=store.storage_options)

    return on_pinned(store, table, pinned, apply)


def append(store: Store, table: str, pinned: int, fragments: list) -> int:
    """A new version of ``table`` = the pinned version's fragments (deletion vectors kept) + ``fragments``."""
    from lance import LanceOperation

    if not fragments:
        return on_pinned(store, table, pinned, None)
    return commit_op(store, table, pinned, lambda ds: LanceOperation.Append(list(fragments)))


def empty(store: Store, table: str) -> int:
    """A new version of ``table`` with its newest schema and no rows (to unpin a table's content)."""
    import lance
    from lance import LanceOperation

    ds = store.dataset(table)
    out = lance.LanceDataset.commit(store.table_uri(table), LanceOperation.Overwrite(ds.lance_schema, []),
                                    read_version=ds.version, storage_options=store.storage_options)
    return out.version


def needs_pinned_path(store: Store, table: str, pinned: int | None) -> bool:
    """Whether appending to this pinned version must go through ``append`` (not an Overwrite): its fragments
    carry deletion vectors, or a dropped column left its field ids out of sequence."""
    if pinned is None:
        return False
    ds = store.dataset(table, version=pinned)
    if any(f.metadata.deletion_file is not None for f in ds.get_fragments()):
        return True
    return _field_ids(ds) != list(range(len(_field_ids(ds))))


def _field_ids(ds) -> list[int]:
    out: list[int] = []

    def walk(fields):
        for f in fields:
            out.append(f.id())
            walk(f.children())

    walk(ds.lance_schema.fields())
    return out
