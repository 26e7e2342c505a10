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
import math
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


def write_fragments(store: Store, table: str, data: pa.Table, schema: pa.Schema, version: int | None = None) -> str:
    """Write ``data`` as uncommitted fragments of ``table``; returns their metadata as JSON (``load_fragments``
    reads it; empty if no rows). Columns ``table`` does not have yet come after its own (see the module doc).
    ``version``: the Lance version the lake head pins, whose schema the fragments follow (opened by number, so
    no listing of the table's manifests); None: the newest, if the table exists."""
    if data.num_rows == 0:
        return dump_fragments([])
    from lance.fragment import write_fragments as _write

    opts = {}
    data = data.cast(schema)
    try:
        ds = store.dataset(table, version=version)
    except FileNotFoundError:
        ds = None
    if ds is not None:
        if set(schema.names) - set(ds.schema.names):  # Lance refuses appends with new columns
            opts = {"mode": "overwrite", "data_storage_version": ds.data_storage_version}
        schema = evolved_schema(table, ds.schema, schema, fields_from="new")  # field ids follow this order
    # handing Lance the opened dataset spares it opening the newest version (a listing of every manifest)
    frags = _write(_conform(data, schema), ds if ds is not None and not opts else store.table_uri(table),
                   schema=schema, storage_options=store.storage_options, max_rows_per_file=1 << 22, **opts)
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
            # First against the pinned version, opened by number: it is the newest unless another writer (or a
            # crashed one) committed to the table since, and committing on it lists no manifests (Lance finds
            # later versions by number). An Overwrite read at an older version conflicts with any Overwrite
            # since, so a retry reads at the newest version (one open that lists the table's manifests).
            read = pinned_ds if attempt == 0 and pinned_ds is not None else _latest(store, table)
            ds = lance.LanceDataset.commit(read if read is not None else store.table_uri(table),
                                           LanceOperation.Overwrite(schema, frags),
                                           read_version=None if read is None else read.version,
                                           storage_options=store.storage_options)
            return ds.version
        except Exception as e:  # Overwrite vs a concurrent Overwrite (or creation): retryable by design
            msg = str(e).lower()
            if not ("conflict" in msg or "already exists" in msg or "preempted" in msg) or attempt == 19:
                raise
            if attempt:
                time.sleep(0.02 * attempt)
    raise AssertionError("unreachable")


def _latest(store: Store, table: str):
    try:
        return store.dataset(table)
    except FileNotFoundError:
        return None


def append_tables(store: Store, pins: dict[str, int], batches: dict[str, tuple[pa.Schema, list]]) -> dict[str, int]:
    """For each table with new fragments, a new version on top of ``pins``; returns the changed pins."""
    return {
        name: overwrite_with(store, name, schema, pins.get(name), frags)
        for name, (schema, frags) in batches.items()
        if frags
    }


def write_rows(store: Store, table: str, rows: pa.Table, schema: pa.Schema, version: int | None = None) -> list:
    """Driver-side small writes (tasks, quarantine, sources): fragments, not yet committed (``version``: as for
    ``write_fragments``)."""
    return load_fragments(write_fragments(store, table, rows, schema, version))


# --- automatic compaction ------------------------------------------------------------------------------------
# Every commit adds a fragment to each table it touches, and a Lance manifest lists every fragment, so a table
# fed by small commits would make each commit (and each open) cost more than the last. Commits therefore merge
# small fragments, size-tiered as in an LSM tree: tier k holds fragments of TIER_BYTES * 16**(k-1) to
# TIER_BYTES * 16**k bytes; when one tier holds more than COMPACT_FRAGMENTS fragments, Lance ``compact_files``
# merges them (and any smaller) into fragments of about the tier's upper bound, i.e. into the next tier (its
# planner only takes fragments with fewer rows than the target). Each row is thus
# rewritten about once per tier (log16 of the data, not once per commit), fragments per table stay bounded
# (<= COMPACT_FRAGMENTS per tier), and a fragment of AUTO_COMPACT_MAX_BYTES or more (what a bulk ingest writes)
# is never rewritten by a commit, so a fresh ingest is stored once. ``Lake.compact`` merges everything on request.
# Training tables (packed, decoded), written by rare large jobs, are left alone.
COMPACT_FRAGMENTS = 16
TIER_BYTES = 64 << 10
AUTO_COMPACT_MAX_BYTES = 16 << 20


def is_small(table: str) -> bool:
    """Tables that commits compact automatically (every table but ``packed_*`` / ``decoded_*``)."""
    return not table.startswith(("packed_", "decoded_"))


def fragment_bytes(meta) -> int:
    """Bytes of a fragment's data files (from its metadata: no I/O)."""
    return sum(f.file_size_bytes or 0 for f in meta.files)


def merge_target(frags: list) -> int | None:
    """Rows per merged fragment for the merge these fragments (metadata) call for, or None (see above): the
    first tier holding more than COMPACT_FRAGMENTS fragments is merged, with every smaller fragment, into
    fragments of about the tier's upper bound. A fragment's size is its rows times the table's bytes per row
    (a tiny fragment's file is mostly overhead; and Lance's planner picks fragments by rows, so tiers and the
    target agree: a merged fragment lands in the next tier)."""
    rows = [f.physical_rows for f in frags]
    per_row = max(1.0, sum(fragment_bytes(f) for f in frags) / max(1, sum(rows)))
    low, bound = 0, TIER_BYTES
    while bound <= AUTO_COMPACT_MAX_BYTES:
        if sum(1 for r in rows if low <= r * per_row < bound) > COMPACT_FRAGMENTS:
            return max(2, math.ceil(bound / per_row))  # a merged fragment reaches the next tier
        low, bound = bound, bound * 16
    return None


def compact_version(store: Store, table: str, version: int, target_rows: int = 1 << 20) -> int | None:
    """Merge the fragments of ``table`` at ``version`` with fewer than ``target_rows`` rows (Lance
    ``compact_files``): a new Lance version with the same rows, or None when a concurrent commit to the table
    got in first. Merged fragments move after the others (Lance orders fragments by id): scan order may change,
    an episode's rows stay together and in order."""
    ds = store.dataset(table, version=version)
    rows = ds.count_rows()
    try:
        ds.optimize.compact_files(target_rows_per_fragment=target_rows, materialize_deletions=False, num_threads=1)
    except OSError as e:  # Rewrite vs a concurrent Overwrite: leave it for the next commit
        if "incompatible" in str(e).lower() or "conflict" in str(e).lower():
            return None
        raise
    if ds.version == version or ds.count_rows() != rows:
        return None
    return ds.version


def compact_small(store: Store, pins: dict[str, int], changed: dict[str, int]) -> dict[str, int]:
    """New pins for the ``changed`` tables whose small fragments call for a merge (``merge_target``)."""
    out = {}
    for name in changed:
        if not is_small(name):
            continue
        target = merge_target([f.metadata for f in store.dataset(name, version=pins[name]).get_fragments()])
        if target is not None:
            v = compact_version(store, name, pins[name], target)
            if v is not None:
                out[name] = v
    return out
