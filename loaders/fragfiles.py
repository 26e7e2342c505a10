"""Whole data files of a packed table fetched with one GET each, for a cache fill that needs most of their rows.

A cold node cache fills from an object store with one allow-list scan of the shards it reads (``cache``). Lance
plans that scan as many range reads per data file: the footer, then each column's pages, the big columns cut
into ranges of at most 16 MiB (``LANCE_MAX_IOP_SIZE``, process-wide): 13 GETs per 72-83 MiB data file of the
PushT table. When the read needs most of a data file's rows anyway (a cold fill of a whole split), one GET of
the whole file costs about the same bytes and a thirteenth of the requests; the file is spooled to local disk
(the cache's folder) and its rows read with Lance's own file reader, then the spool file is removed.

Used only when it reads exactly what the scan would: every fragment the read touches has one data file (no
columns added since: those live in further files) written with the dataset's schema as it is (names, types,
order: checked against the file's own footer after the download), and the read needs at least ``MOST`` of the
fragment's rows. Otherwise ``fetch`` returns None and the caller scans. Rows come out in the order of the given
row addresses (table order), as record batches of the requested columns: equal to the scan's (tested).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

MOST = 0.5  # share of a data file's rows a read must need for the whole file to be fetched (bytes: at most ~2x)
PARALLEL = 2  # files downloading at once (the next ones while one is read)
BATCH_ROWS = 16  # rows per record batch read from a file: small buffers the allocator reuses (less CPU than big)
STATS = {"files": 0, "bytes": 0}  # whole data files fetched by this process, and their bytes


def plan(ds, addrs: np.ndarray) -> list[tuple[str, int, np.ndarray]] | None:
    """[(data file path relative to the table, size in bytes, row offsets in it)] per fragment, in the order of
    ``addrs`` (ascending row addresses), or None when the whole files would not read exactly / mostly what the
    addresses ask for. Reads only the manifest ``ds`` already holds."""
    addrs = np.asarray(addrs, dtype=np.uint64)
    if len(addrs) == 0 or np.any(np.diff(addrs.astype(np.int64)) <= 0):
        return None
    fid = (addrs >> np.uint64(32)).astype(np.int64)
    off = (addrs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    frags = {f.fragment_id: f.metadata for f in ds.get_fragments()}
    cut = np.flatnonzero(np.diff(fid)) + 1
    out = []
    for ids, offs in zip(np.split(fid, cut), np.split(off, cut)):
        m = frags.get(int(ids[0]))
        if m is None or len(m.files) != 1 or m.files[0].file_major_version < 2 or not m.files[0].file_size_bytes:
            return None
        if len(offs) < MOST * m.physical_rows:
            return None
        out.append((f"data/{m.files[0].path}", int(m.files[0].file_size_bytes), offs))
    if len({p for p, _, _ in out}) != len(out):  # a fragment twice: addresses not in table order
        return None
    return out


def fetch(ds, addrs, columns: list[str], table_uri: str, storage_options=None, spool=None):
    """Record batches of ``columns`` for the rows at ``addrs`` (ascending), read from whole data files fetched
    with one GET each (the next files downloading while one is read), or None when ``plan`` says no. A file
    that turns out not to hold the dataset's schema as it is (checked after its download) ends the whole-file
    reading: its rows and the rest come from an allow-list scan, so the batches are the scan's either way."""
    files = plan(ds, addrs)
    return None if files is None else _read(ds, files, list(columns), table_uri, storage_options, spool)


def _read(ds, files, columns, table_uri, storage_options, spool):
    from lance.dataset import serialize_row_addrs
    from lance.file import LanceFileReader

    from lake._store import arrow_filesystem, filesystem

    arrow = arrow_filesystem(table_uri, storage_options)
    fs, root = arrow or filesystem(table_uri, storage_options)
    if spool is not None:  # the cache folder (as given to stream: "~" allowed)
        spool = os.path.expanduser(os.fspath(spool))
        os.makedirs(spool, exist_ok=True)
        _sweep(spool)
    folder = tempfile.mkdtemp(prefix=f".spool-{os.getpid()}-", dir=spool)

    def get(path: str, size: int) -> str:
        local = os.path.join(folder, uuid.uuid4().hex + ".lance")
        if arrow is None:  # fsspec: local files, other object stores
            fs.get_file(f"{root}/{path}", local, max_concurrency=1)  # one GET of the whole object
            return local
        with fs.open_input_file(f"{root}/{path}") as remote, open(local, "wb") as out:  # a HEAD, then:
            out.write(remote.read_at(size, 0))  # one GET of the whole object
        return local

    want = pa.schema([ds.schema.field(c) for c in columns])
    pool = ThreadPoolExecutor(PARALLEL)
    try:
        coming = [pool.submit(get, path, size) for path, size, _ in files]
        for i, (future, (_, _, offs)) in enumerate(zip(coming, files)):
            local = future.result()
            STATS["files"] += 1
            STATS["bytes"] += os.path.getsize(local)
            t = None
            if LanceFileReader(local).metadata().schema.equals(ds.schema, check_metadata=False):
                t = LanceFileReader(local, columns=columns).take_rows(offs.tolist(), batch_size=BATCH_ROWS).to_table()
            os.unlink(local)
            if t is None or not t.schema.equals(want, check_metadata=False) or t.num_rows != len(offs):
                # written with another schema (evolved since): only the dataset maps it right; scan the rest
                rest = np.concatenate([(np.uint64(fid) << np.uint64(32)) | o.astype(np.uint64)
                                       for fid, (_, _, o) in zip(_ids(ds, files[i:]), files[i:])])
                yield from ds.scanner(columns=columns, scan_in_order=True, batch_size=len(rest),
                                      row_addr_allowlist=serialize_row_addrs(rest.tolist())).to_batches()
                return
            yield from t.to_batches()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def _ids(ds, files) -> list[int]:
    """Fragment ids of ``files`` (as ``plan`` lists them)."""
    by_path = {f"data/{f.metadata.files[0].path}": f.fragment_id for f in ds.get_fragments()}
    return [by_path[p] for p, _, _ in files]


def _sweep(spool) -> None:
    """Remove spool folders left by processes of this node that died mid-fetch (``kill -9``)."""
    import shutil

    for name in os.listdir(spool):
        if name.startswith(".spool-"):
            try:
                os.kill(int(name.split("-")[1]), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(spool, name), ignore_errors=True)
            except (ValueError, IndexError, PermissionError):
                pass
