"""A stream's resolved start, kept beside the node shard cache: which packed table, and the split's pack index.

Starting ``stream(split, cache_dir=DIR)`` reads the lake's ``packings`` registry, opens the packed table and reads
two columns of every pack (split, n_tokens) to build the epoch's plan: on an object store ~20 requests before the
first batch (benchmarks/RESULTS.md, Streaming vs MosaicML Streaming). All of it is a pure function of the lake
version the handle reads, which never changes once committed, so it is kept in ``DIR/.index/<key>.arrow`` and a
later stream of the same lake version, recipe and split reads it from there and opens nothing remote until a
shard is missing. A new lake version (anything committed since) has another key, so it is resolved afresh: a
stale index is never served. The key also holds the version's commit time and writer, so a lake deleted and
made again at the same address (version numbers reused) does not match either.

The file is Arrow IPC (no pickle): columns ``rows`` (table positions of the split's packs), ``addrs`` (their row
addresses), ``tokens``; the schema metadata holds the source (table, Lance version, layout, ...) as JSON. One
that does not check out is ignored (and resolved again). At most ``KEEP`` files are kept per cache folder (the
least recently used removed when one is written).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .packings import PackedSource, _recipe_hash

FOLDER = ".index"  # under cache_dir
FORMAT = 1
KEEP = 64  # index files kept per cache folder (each a few KB per thousand packs)


@dataclass(frozen=True)
class SplitIndex:
    """One split of one packed table, resolved: the source, the split's packs (table positions, row addresses,
    tokens, split-local order) and the columns a batch reads."""

    source: PackedSource
    rows: np.ndarray
    addrs: np.ndarray
    tokens: np.ndarray
    columns: tuple[str, ...]


def key(lk, recipe, split: str) -> str:
    """The file name (without suffix) of ``split`` of ``recipe``'s packed table at the lake version ``lk`` reads."""
    e = lk.entry
    parts = [FORMAT, lk.uri, e.version, e.timestamp.isoformat(), e.writer, sorted(e.tables.items()),
             _recipe_hash(recipe), split]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def path(cache_dir, name: str) -> Path:
    return Path(os.fspath(cache_dir)).expanduser() / FOLDER / f"{name}.arrow"


def load(cache_dir, name: str, split: str, storage_options=None) -> SplitIndex | None:
    """The index kept under ``name``, or None (absent, or a file that does not check out)."""
    p = path(cache_dir, name)
    try:
        with pa.memory_map(str(p)) as f:
            table = pa.ipc.open_file(f).read_all()
        meta = json.loads(table.schema.metadata[b"split_index"])
        columns = table.schema.names
        if meta.get("format") != FORMAT or meta.get("split") != split or columns != ["rows", "addrs", "tokens"]:
            return None
        rows, addrs, tokens = (np.asarray(table[c].to_numpy()).copy() for c in ("rows", "addrs", "tokens"))
        if not (rows.dtype == np.int64 and addrs.dtype == np.uint64 and tokens.dtype == np.int64 and len(rows)
                and np.all(np.diff(rows) > 0) and meta["packs"] == len(rows)):
            return None
        source = PackedSource(uri=meta["uri"], table=meta["table"], lance_version=int(meta["lance_version"]),
                              lake_version=int(meta["lake_version"]), recipe_hash=meta["recipe_hash"],
                              layout=meta["layout"], storage_options=storage_options)
        os.utime(p)  # last use, for pruning
        return SplitIndex(source, rows, addrs, tokens, tuple(meta["columns"]))
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        return None


def save(cache_dir, name: str, split: str, index: SplitIndex) -> None:
    """Keep ``index`` under ``name`` (written whole, then renamed: readers see all of it or nothing); prunes the
    folder to ``KEEP`` files."""
    s = index.source
    meta = {"format": FORMAT, "split": split, "uri": s.uri, "table": s.table, "lance_version": s.lance_version,
            "lake_version": s.lake_version, "recipe_hash": s.recipe_hash, "layout": s.layout,
            "columns": list(index.columns), "packs": len(index.rows)}
    table = pa.table({"rows": pa.array(index.rows, pa.int64()), "addrs": pa.array(index.addrs, pa.uint64()),
                      "tokens": pa.array(index.tokens, pa.int64())})
    table = table.replace_schema_metadata({"split_index": json.dumps(meta)})
    p = path(cache_dir, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    os.replace(tmp, p)
    prune(p.parent)


def prune(folder: Path, keep: int = KEEP) -> None:
    """Remove all but the ``keep`` most recently used index files (and temporary files of dead writers)."""
    files = []
    for p in folder.glob("*.arrow"):
        try:
            files.append((p.stat().st_mtime_ns, p))
        except FileNotFoundError:
            pass
    for _, p in sorted(files, reverse=True)[keep:]:
        p.unlink(missing_ok=True)
    for tmp in folder.glob(".*.tmp"):
        try:
            os.kill(int(tmp.name.split(".")[-2]), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError):
            pass
