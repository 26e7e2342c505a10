"""The pack index of a packed table: every pack's split, token count and row address, as a small side file.

A stream starts by working out which packs its split holds and their sizes (the plan of every rank is a pure
function of them). Read from the packed table itself that is two columns of every pack: on an object store a
request per data file for its footer and more for the columns' pages (12 GETs of the PushT table, each on a
72-83 MiB object). The packer writes the same facts beside the table when it commits it, one small file per
Lance version (``lake._sidefiles``: ``<table>.lance/_lake/pack-index-v<N>.lance``), and a stream reads that
instead (one small object).

Trust: the file is derived data and is verified on every read; one that does not check out is not used (the
reader falls back to the table and says why):
- *corrupt*: a BLAKE2b digest over the table name, the version, the fragment list and every column's values,
  stored in the file's schema metadata, must match what was read (a damaged Lance file that still decodes
  decodes to other values);
- *stale*: it names the table and Lance version it was written for, and the fragments of that version as the
  manifest lists them (id, data files, physical rows, deletion file); all must equal those of the dataset the
  reader opened, whose manifest it reads anyway. A table rewritten at the same version number (other data
  files: names are random) or a file copied to another version's name does not match;
- *consistent*: addresses within their fragments, ascending in table order, one row per live row of the version.
Lifecycle: inside the table's folder, so gc keeps it with the version and deletes it with it (``lake._gc``).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from lake import _checksum, _sidefiles

KIND = "pack-index"
FORMAT = 1
_META = b"pack_index"


def fragments(ds) -> list:
    """The fragments of ``ds``'s version as its manifest lists them (no I/O beyond the manifest)."""
    out = []
    for f in ds.get_fragments():
        m = f.metadata
        d = m.deletion_file
        out.append([int(m.id), [df.path for df in m.files], int(m.physical_rows),
                    None if d is None else [int(d.read_version), int(d.id), int(d.num_deleted_rows or 0)]])
    return out


def _digest(meta: dict, codes: np.ndarray, tokens: np.ndarray, addrs: np.ndarray) -> str:
    h = _checksum._h()
    h.update(json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True).encode())
    for a, dtype in ((codes, "<i4"), (tokens, "<i8"), (addrs, "<u8")):
        a = np.ascontiguousarray(a.astype(dtype, copy=False))
        h.update(len(a).to_bytes(8, "little") + a.tobytes())
    return h.hexdigest()


def build(ds, table: str) -> tuple[dict, pa.Table]:
    """(metadata, table) of the pack index of ``ds`` (a packed table at one version): read from the table."""
    meta = ds.to_table(columns=["split", "n_tokens"], with_row_address=True)
    splits = np.asarray(meta["split"].to_numpy(zero_copy_only=False))
    names = sorted(set(splits.tolist()))
    codes = np.searchsorted(np.array(names, dtype=object), splits).astype(np.int32) if len(splits) else \
        np.zeros(0, np.int32)
    tokens = np.asarray(meta["n_tokens"].to_numpy()).astype(np.int64)
    addrs = meta["_rowaddr"].to_numpy().astype(np.uint64)
    info = {"format": FORMAT, "table": table, "lance_version": int(ds.version), "splits": names,
            "fragments": fragments(ds)}
    info["digest"] = _digest(info, codes, tokens, addrs)
    return info, pa.table({"split": pa.array(codes, pa.int32()), "n_tokens": pa.array(tokens, pa.int64()),
                           "addr": pa.array(addrs, pa.uint64())})


def write(ds, table_uri: str, table: str, storage_options=None) -> str:
    """Write the pack index of ``ds`` (the table ``table`` at ``table_uri``, one version) beside it; returns the
    file's URI. The file appears whole or not at all (a local file is renamed into place; an object store PUT is
    atomic)."""
    import os

    from lance.file import LanceFileWriter

    info, t = build(ds, table)
    uri = _sidefiles.path(table_uri, KIND, ds.version)
    local = "://" not in uri or uri.startswith("file://")
    dest = uri[len("file://"):] if uri.startswith("file://") else uri
    target = dest
    if local:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        target = f"{os.path.dirname(dest)}/.{os.path.basename(dest)}.{os.getpid()}.tmp"
    w = LanceFileWriter(target, t.schema, storage_options=storage_options)
    w.write_batch(t)
    w.add_schema_metadata(_META.decode(), json.dumps(info))
    w.close()
    if local:
        os.replace(target, dest)
    return uri


def ensure(lk, table: str) -> str | None:
    """Write the pack index of ``table`` at the version ``lk`` pins unless a good one is there (the packer calls
    it after each commit and on a re-run that packed nothing, so lakes packed before side files existed get one).
    Returns the file's URI, None when ``lk`` has no such table."""
    if table not in lk.entry.tables:
        return None
    store = lk.store
    ds = store.dataset(table, version=lk.entry.tables[table])
    uri = _sidefiles.path(store.table_uri(table), KIND, ds.version)
    try:
        if read(ds, store.table_uri(table), table, store.storage_options) is not None:
            return uri
    except Unusable:
        pass  # replaced below
    return write(ds, store.table_uri(table), table, store.storage_options)


class Unusable(ValueError):
    """A pack index side file that is corrupt, stale or inconsistent (the message says which)."""


def read(ds, table_uri: str, table: str, storage_options=None):
    """(splits, addrs, tokens) of every live pack of ``ds`` in table order from its side file, or None when there
    is none. Raises ``Unusable`` for one that does not check out (see the module doc)."""
    from lance.file import LanceFileReader

    uri = _sidefiles.path(table_uri, KIND, ds.version)
    try:
        reader = LanceFileReader(uri, storage_options=storage_options)
        t = reader.read_all().to_table()
        raw = reader.metadata().schema.metadata or {}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - a damaged file can raise anything, a Rust panic included
        if not _exists(uri, storage_options):  # asked, not read off the error: a damaged file's can say "not found"
            return None
        raise Unusable(f"{uri}: unreadable ({type(e).__name__}: {e})") from e
    try:
        info = json.loads(raw[_META])
        codes, tokens, addrs = (np.asarray(t[c].to_numpy()) for c in ("split", "n_tokens", "addr"))
        names = list(info["splits"])
    except (KeyError, TypeError, ValueError, pa.ArrowException) as e:
        raise Unusable(f"{uri}: not a pack index ({e!r})") from e
    if info.get("format") != FORMAT or codes.dtype != np.int32 or tokens.dtype != np.int64 or addrs.dtype != np.uint64:
        raise Unusable(f"{uri}: format {info.get('format')!r} / column types not understood")
    if info.get("digest") != _digest(info, codes, tokens, addrs):
        raise Unusable(f"{uri}: checksum mismatch (corrupt)")
    if info.get("table") != table or info.get("lance_version") != ds.version or info.get("fragments") != fragments(ds):
        raise Unusable(f"{uri}: written for {info.get('table')}@{info.get('lance_version')} with other fragments "
                       f"than {table}@{ds.version} holds (stale)")
    if not _consistent(info["fragments"], codes, tokens, addrs, len(names)):
        raise Unusable(f"{uri}: rows do not match the fragments it names (inconsistent)")
    return np.array(names, dtype=object)[codes], addrs, tokens


def _consistent(frags: list, codes, tokens, addrs, n_splits: int) -> bool:
    """One row per live row of ``frags``, each address inside its fragment, in table order (fragment order as
    listed, then offset), split codes in range."""
    live = sum(f[2] - (f[3][2] if f[3] else 0) for f in frags)
    if not len(codes) == len(tokens) == len(addrs) == live:
        return False
    if live == 0:
        return True
    ids = np.array([f[0] for f in frags], np.int64)
    physical = np.array([f[2] for f in frags], np.int64)
    fid, off = (addrs >> np.uint64(32)).astype(np.int64), (addrs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    by_id = np.argsort(ids, kind="stable")
    at = np.searchsorted(ids[by_id], fid).clip(0, len(ids) - 1)
    pos = by_id[at]  # each row's fragment's position in table order
    return bool(np.all(ids[pos] == fid) and np.all(off < physical[pos]) and np.all(codes >= 0)
                and np.all(codes < n_splits) and np.all(np.diff(pos * 2**32 + off) > 0))


def _exists(uri: str, storage_options=None) -> bool:
    from lake import _store

    a = _store.arrow_filesystem(uri, storage_options)
    if a is not None:
        from pyarrow import fs as pafs

        return a[0].get_file_info(a[1]).type != pafs.FileType.NotFound
    fs, p = _store.filesystem(uri, storage_options)
    return fs.exists(p)
