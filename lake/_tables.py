"""Table versions built from pinned fragments: the write half of a lake commit.

Workers write fragments (``lance.fragment.write_fragments``) and hand back their metadata; the driver
makes each table's new version with one Lance ``Overwrite`` whose fragment list is *exactly* the fragments
of the version pinned by the lake head plus the new ones. Nothing a crashed or concurrent writer left in
the table (committed-but-unpinned versions, stray data files) can leak into the result.

Schemas evolve by adding columns: when new data carries top-level columns a table does not have yet (a lake
written by an older release, say), the new fragments are written with the table's columns first, in its
order, and the new ones after them, and the version's schema gains them. Lance keys data files by field
ids, which follow that order, so the old fragments keep their files and read the new columns as nulls:
nothing is rewritten. Changing a column's type, or adding a field inside an existing struct, is refused.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from ._store import Store


class SchemaMismatch(ValueError):
    """New data does not fit a lake table's schema (a changed column type, a new field inside a struct)."""


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    # Lance reads some columns back as its own extension types (blobs): those are its business
    return isinstance(a, pa.BaseExtensionType) or isinstance(b, pa.BaseExtensionType) or a.equals(b)


def evolved_schema(table: str, current: pa.Schema, new: pa.Schema, *, fields_from: str = "current") -> pa.Schema:
    """``current``'s columns in its order, then the top-level columns only ``new`` has (nullable), with
    ``current``'s metadata. Shared columns take their field from ``fields_from`` ("current": the table's
    own, for a commit; "new": the writer's, for writing data). Raises SchemaMismatch naming the table and
    column when a shared column differs in type."""
    by_name = {f.name: f for f in new}
    for f in current:
        if f.name in by_name and not _same_type(f.type, by_name[f.name].type):
            raise SchemaMismatch(f"table {table!r}: column {f.name!r} is {f.type} in the lake but "
                                 f"{by_name[f.name].type} in the new data (columns can be added, not changed)")
    extra = [f.with_nullable(True) for f in new if f.name not in set(current.names)]
    if fields_from == "current" and not extra:
        return current
    base = list(current) if fields_from == "current" else [by_name.get(f.name, f) for f in current]
    return pa.schema(base + extra, metadata=current.metadata)


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``data`` with ``schema``'s columns in its order; columns ``data`` lacks are nulls."""
    cols = [data[f.name] if f.name in data.column_names else pa.nulls(data.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def dump_fragments(frags: list) -> str:
    """Fragment metadata as JSON: how workers hand it to the driver (never a pickle: nothing read back runs code)."""
    return json.dumps([f.to_json() for f in frags])


def load_fragments(text: str) -> list:
    """``dump_fragments``'s inverse: a list of ``lance.fragment.FragmentMetadata``."""
    from lance.fragment import FragmentMetadata

    return [FragmentMetadata.from_json(json.dumps(d)) for d in json.loads(text)]


def write_fragments(store: Store, table: str, data: pa.Table, schema: pa.Schema) -> str:
    """Write ``data`` as uncommitted fragments of ``table``; returns their metadata as JSON (``load_fragments``
    reads it; empty if no rows). Columns ``table`` does not have yet come after its own (see the module doc)."""
    if data.num_rows == 0:
        return dump_fragments([])
    from lance.fragment import write_fragments as _write

    opts = {}
    data = data.cast(schema)
    try:  # one open (opening the newest version lists the table's manifests)
        ds = store.dataset(table)
    except FileNotFoundError:
        ds = None
    if ds is not None:
        if set(schema.names) - set(ds.schema.names):  # Lance refuses appends with new columns
            opts = {"mode": "overwrite", "data_storage_version": ds.data_storage_version}
        schema = evolved_schema(table, ds.schema, schema, fields_from="new")  # field ids follow this order
    frags = _write(_conform(data, schema), store.table_uri(table), schema=schema,
                   storage_options=store.storage_options, max_rows_per_file=1 << 22, **opts)
    return dump_fragments(frags)


def pinned_fragments(store: Store, table: str, version: int | None) -> list:
    if version is None:
        return []
    return [f.metadata for f in store.dataset(table, version=version).get_fragments()]


def overwrite_with(store: Store, table: str, schema: pa.Schema, pinned: int | None, new: list,
                   base: list | None = None) -> int:
    """Commit ``table`` = fragments at version ``pinned`` (or ``base``: those fragments with some rows deleted)
    + ``new``; returns the new Lance version."""
    import dataclasses

    import lance
    from lance import LanceOperation

    from . import _pinned

    if _pinned.needs_pinned_path(store, table, pinned):  # an edited table (deletion vectors, dropped columns)
        have = store.dataset(table, version=pinned).schema.names
        if set(schema.names) - set(have):
            raise SchemaMismatch(f"table {table!r}: new columns {sorted(set(schema.names) - set(have))} cannot be "
                                 "added to a table edited by delete_episodes/remove_feature (add_feature adds columns)")
        return _pinned.append(store, table, pinned, new)
    pinned_ds = store.dataset(table, version=pinned) if pinned is not None else None
    if base is None:
        base = [f.metadata for f in pinned_ds.get_fragments()] if pinned_ds is not None else []
    next_id = max((f.id for f in base), default=-1) + 1
    frags = base + [dataclasses.replace(f, id=next_id + i) for i, f in enumerate(new)]
    if pinned_ds is not None:  # keep the field ids of the existing files; new columns after them
        schema = evolved_schema(table, pinned_ds.schema, schema)
    for attempt in range(20):
        try:
            # read at the newest version (an Overwrite read at an older one conflicts with any Overwrite since):
            # one open, which lists the table's manifests (gc keeps that list short)
            read = _latest(store, table)
            ds = lance.LanceDataset.commit(store.table_uri(table), LanceOperation.Overwrite(schema, frags),
                                           read_version=read, storage_options=store.storage_options)
            return ds.version
        except Exception as e:  # Overwrite vs a concurrent Overwrite (or creation): retryable by design
            msg = str(e).lower()
            if not ("conflict" in msg or "already exists" in msg) or attempt == 19:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def _latest(store: Store, table: str) -> int | None:
    try:
        return store.dataset(table).version
    except FileNotFoundError:
        return None


def append_tables(store: Store, pins: dict[str, int], batches: dict[str, tuple[pa.Schema, list]]) -> dict[str, int]:
    """For each table with new fragments, a new version on top of ``pins``; returns the changed pins."""
    return {
        name: overwrite_with(store, name, schema, pins.get(name), frags)
        for name, (schema, frags) in batches.items()
        if frags
    }


def write_rows(store: Store, table: str, rows: pa.Table, schema: pa.Schema) -> list:
    """Driver-side small writes (tasks, quarantine, sources): fragments, not yet committed."""
    return load_fragments(write_fragments(store, table, rows, schema))


# --- automatic compaction ------------------------------------------------------------------------------------
# Every commit adds a fragment to each table it touches, and a Lance manifest lists every fragment, so a table
# fed by small commits would make each commit (and each open) cost more than the last. Lance compaction merges
# only fragments below its target size (1M rows), so a full fragment is never rewritten. Training tables
# (packed, decoded), written by rare large jobs, are compacted on request only (``Lake.compact``).
COMPACT_FRAGMENTS = 16


def is_small(table: str) -> bool:
    """Tables that commits compact automatically (every table but ``packed_*`` / ``decoded_*``)."""
    return not table.startswith(("packed_", "decoded_"))


def compact_version(store: Store, table: str, version: int) -> int | None:
    """Merge the small fragments of ``table`` at ``version`` (Lance ``compact_files``): a new Lance version with
    the same rows in the same order, or None when a concurrent commit to the table got in first."""
    ds = store.dataset(table, version=version)
    rows = ds.count_rows()
    try:
        ds.optimize.compact_files(materialize_deletions=True, num_threads=1)
    except OSError as e:  # Rewrite vs a concurrent Overwrite: leave it for the next commit
        if "incompatible" in str(e).lower() or "conflict" in str(e).lower():
            return None
        raise
    if ds.version == version or ds.count_rows() != rows:
        return None
    return ds.version


def compact_small(store: Store, pins: dict[str, int], changed: dict[str, int]) -> dict[str, int]:
    """New pins for the ``changed`` small tables that have more than ``COMPACT_FRAGMENTS`` fragments."""
    out = {}
    for name in changed:
        if is_small(name) and len(store.dataset(name, version=pins[name]).get_fragments()) > COMPACT_FRAGMENTS:
            v = compact_version(store, name, pins[name])
            if v is not None:
                out[name] = v
    return out
