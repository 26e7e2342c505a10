"""Table versions built from pinned fragments: the write half of a lake commit.

Workers write fragments (``lance.fragment.write_fragments``) and hand back their metadata; the driver
makes each table's new version with one Lance ``Overwrite`` whose fragment list is *exactly* the fragments
of the version pinned by the lake head plus the new ones. Nothing a crashed or concurrent writer left in
the table (committed-but-unpinned versions, stray data files) can leak into the result.
"""

from __future__ import annotations

import pickle
import time

import pyarrow as pa

from ._store import Store


def write_fragments(store: Store, table: str, data: pa.Table, schema: pa.Schema) -> bytes:
    """Write ``data`` as uncommitted fragments of ``table``; returns their pickled metadata (empty if no rows)."""
    if data.num_rows == 0:
        return pickle.dumps([])
    from lance.fragment import write_fragments as _write

    frags = _write(data.cast(schema), store.table_uri(table), schema=schema,
                   storage_options=store.storage_options, max_rows_per_file=1 << 22)
    return pickle.dumps(frags)


def pinned_fragments(store: Store, table: str, version: int | None) -> list:
    if version is None:
        return []
    return [f.metadata for f in store.dataset(table, version=version).get_fragments()]


def overwrite_with(store: Store, table: str, schema: pa.Schema, pinned: int | None, new: list) -> int:
    """Commit ``table`` = fragments at version ``pinned`` + ``new``; returns the new Lance version."""
    import dataclasses

    import lance
    from lance import LanceOperation

    base = pinned_fragments(store, table, pinned)
    next_id = max((f.id for f in base), default=-1) + 1
    frags = base + [dataclasses.replace(f, id=next_id + i) for i, f in enumerate(new)]
    if pinned is not None:
        schema = store.dataset(table, version=pinned).schema  # keep field ids of the existing files
    for attempt in range(20):
        try:
            latest = store.dataset(table).latest_version if store.exists(table) else None
            ds = lance.LanceDataset.commit(store.table_uri(table), LanceOperation.Overwrite(schema, frags),
                                           read_version=latest, storage_options=store.storage_options)
            return ds.version
        except Exception as e:  # Overwrite vs a concurrent Overwrite (or creation): retryable by design
            msg = str(e).lower()
            if not ("conflict" in msg or "already exists" in msg) or attempt == 19:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def append_tables(store: Store, pins: dict[str, int], batches: dict[str, tuple[pa.Schema, list]]) -> dict[str, int]:
    """For each table with new fragments, a new version on top of ``pins``; returns the changed pins."""
    return {
        name: overwrite_with(store, name, schema, pins.get(name), frags)
        for name, (schema, frags) in batches.items()
        if frags
    }


def write_rows(store: Store, table: str, rows: pa.Table, schema: pa.Schema) -> list:
    """Driver-side small writes (tasks, quarantine, sources): fragments, not yet committed."""
    return pickle.loads(write_fragments(store, table, rows, schema))
