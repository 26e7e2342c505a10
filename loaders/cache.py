"""A local copy of one split of a packed table, for streams that read it epoch after epoch.

``stream(..., cache_dir=DIR)`` writes the split's packs once (on the first ``Loader`` for that table version and
split) to ``DIR/<key>.arrow``: an Arrow IPC file with one record batch per pack, in table order, uncompressed.
Later loaders, epochs and runs read packs from it with plain file reads (``pread``) instead of Lance: a batch of
packs is a few reads and one concatenation, whatever the shuffle, so a uniform shuffle costs what table order
does. The key covers the table's URI and pinned Lance version, the split and the columns: a new packing or lake
version gets a new file, and a file is never changed once written (it is written under a temporary name and
renamed, so concurrent writers and crashes leave either no file or a whole one). This is MosaicML Streaming's
local shard cache, for an ``s3://`` lake above all (no download per epoch); it costs a local copy of the split.
Memory stays flat: only the packs being read are in memory (no memory map grows with the file).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from .retry import Backoff, retrying


def cache_file(cache_dir, table_uri: str, lance_version: int, split: str, columns: list[str]) -> Path:
    """Where the cache of (table version, split, columns) lives under ``cache_dir``."""
    key = hashlib.sha256("\0".join([table_uri, str(lance_version), split, *columns]).encode()).hexdigest()[:24]
    return Path(os.fspath(cache_dir)).expanduser() / f"{Path(table_uri).stem}-v{lance_version}-{key}.arrow"


def build(ds, path: Path, split_filter: str, columns: list[str], packs: int, what: str, backoff: Backoff,
          progress: bool = True) -> Path:
    """Write the split's packs (rows of ``ds`` passing ``split_filter``, table order) to ``path`` unless it is
    there already; returns ``path``. Raises RuntimeError when the scan returns another number of packs."""
    if path.exists():
        return path
    from tqdm.auto import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")

    def write() -> int:
        n = 0
        scanner = ds.scanner(columns=columns, filter=split_filter, scan_in_order=True, batch_size=64)
        with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, scanner.projected_schema) as w, \
                tqdm(total=packs, desc=f"caching {what}", unit="pack", disable=not progress) as bar:
            for rb in scanner.to_batches():
                w.write_table(pa.Table.from_batches([rb]), max_chunksize=1)  # a record batch per pack: one read each
                n += rb.num_rows
                bar.update(rb.num_rows)
        return n

    try:
        n = retrying(write, f"caching {what} in {path}", backoff)
        if n != packs:
            raise RuntimeError(f"caching {what}: the scan gave {n} packs, the split has {packs}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class CacheReader:
    """Packs of a cache file by number (split-local, table order), from any thread (a file reader per thread)."""

    def __init__(self, path: Path, packs: int):
        self.path, self.packs, self._local = Path(path), int(packs), threading.local()

    def __getstate__(self):
        return {"path": self.path, "packs": self.packs}

    def __setstate__(self, state):
        self.__init__(state["path"], state["packs"])

    def _reader(self) -> pa.ipc.RecordBatchFileReader:
        r = getattr(self._local, "reader", None)
        if r is None:
            try:
                r = pa.ipc.open_file(pa.OSFile(str(self.path)))
            except (pa.ArrowInvalid, OSError) as e:
                raise RuntimeError(f"cache {self.path} is unreadable ({e}): delete it and it is written again") from e
            if r.num_record_batches != self.packs:
                raise RuntimeError(f"cache {self.path} holds {r.num_record_batches} packs, the split has {self.packs}: "
                                   "delete it and it is written again")
            self._local.reader = r
        return r

    def read(self, packs: np.ndarray) -> pa.Table:
        """The packs as one table of single-chunk columns (one concatenation: the packs' bytes are read apart)."""
        r = self._reader()
        batches = [r.get_batch(int(p)) for p in packs]
        table = pa.Table.from_batches(batches)
        return table.combine_chunks() if len(batches) > 1 else table
