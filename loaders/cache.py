"""A per-node shard cache of one split of a packed table, bounded in size, shared by every process of the node.

``stream(..., cache_dir=DIR, cache_limit="20GB")``: the split's packs are cut into *shards* of ``shard_packs``
consecutive packs (split-local table order). A rank (or DataLoader worker) fetches only the shards its own plan
reads this epoch, a window of ``cache_window`` shards ahead of use, into ``DIR/<key>/shard-NNNNNN.lks``
(``shardfile``: zstd frames, per pack and column). Every process of the node shares the folder:

- one download per shard per node: the fetcher holds ``flock`` on ``shard-NNNNNN.lock`` while it writes, and
  whoever waited finds the file there; files are written under a temporary name and renamed, so a process
  killed mid-download (even ``kill -9``) leaves a ``.tmp`` file, never a torn shard (stale ``.tmp`` files of
  dead processes are removed when a cache opens);
- a bounded size: after each fetch, shards (of any key under ``DIR``) are evicted, least recently used first,
  until the folder holds at most ``cache_limit`` bytes; the shards of the calling process's current window are
  never evicted. The limit must hold every process's window, or the folder goes over it by those windows.
  An evicted shard that is still needed is fetched again; a reader that has the file open keeps reading it.

The sample order is untouched (a pure function of seed, epoch and layout, see ``loader``): the cache only
changes where bytes come from, so resume and world-size changes keep exactly-once with any cache state.
``STATS`` counts, per process: hits, fetches, bytes fetched (Arrow bytes read from the table), bytes written
(compressed, on disk), evictions.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from . import shardfile
from .retry import retrying

STATS = {"hits": 0, "fetches": 0, "fetched_bytes": 0, "written_bytes": 0, "evictions": 0}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_size(size) -> int | None:
    """Bytes of ``size``: an int, or a string like "20GB" / "512MiB" / "1.5 TB". None stays None.
    Raises ValueError for anything else."""
    if size is None or isinstance(size, int):
        if isinstance(size, int) and size < 0:
            raise ValueError(f"cache_limit must be >= 0, got {size}")
        return size
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(size))
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"cache_limit {size!r} is not a size like '20GB' or '512MiB'")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def cache_key(table_uri: str, lance_version: int, split: str, columns: list[str], shard_packs: int) -> str:
    """The folder name of (table version, split, columns, shard size) under ``cache_dir``."""
    digest = hashlib.sha256("\0".join([table_uri, str(lance_version), split, str(shard_packs), *columns]).encode())
    return f"{Path(table_uri).stem}-v{lance_version}-{digest.hexdigest()[:20]}"


class ShardSource:
    """Fetches shard ``s`` (its packs as one table, table order) from the packed table; picklable."""

    def __init__(self, source, rows: np.ndarray, columns: list[str], shard_packs: int):
        self.source, self.rows, self.columns, self.shard_packs = source, rows, columns, int(shard_packs)
        self._ds = None

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}

    def __call__(self, s: int) -> pa.Table:
        from . import forks

        rows = self.rows[s * self.shard_packs:(s + 1) * self.shard_packs]
        src = self.source
        if forks.lance_forbidden():  # a worker forked from a Lance-using process: its helper process reads
            helper = forks.helper()
            read = lambda: helper.take(src.table_uri, src.lance_version, src.storage_options, rows,  # noqa: E731
                                       self.columns)
        else:
            if self._ds is None:
                self._ds = src.open()
            read = lambda: self._ds.take(rows, columns=self.columns)  # noqa: E731
        return retrying(read, f"fetching shard {s} of {src.table}", src.backoff)


class NodeCache:
    """Shards of one split under ``root/key`` (see the module doc). Picklable (spawned workers share it)."""

    def __init__(self, root, key: str, packs: int, shard_packs: int, fetch: Callable[[int], pa.Table],
                 limit: int | None = None, window: int = 4, level: int = shardfile.LEVEL):
        if shard_packs < 1 or window < 0:
            raise ValueError(f"shard_packs must be >= 1 and cache_window >= 0, got {shard_packs}, {window}")
        self.root = Path(os.fspath(root)).expanduser()
        self.dir = self.root / key
        self.packs, self.shard_packs, self.fetch = int(packs), int(shard_packs), fetch
        self.limit, self.window, self.level = parse_size(limit), int(window), int(level)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._init_local()
        self._sweep_tmp()

    def _init_local(self):
        self._lock = threading.Lock()
        self._pinned: dict[int, int] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_pinned")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_local()

    @property
    def shards(self) -> int:
        return -(-self.packs // self.shard_packs)

    def path(self, s: int) -> Path:
        return self.dir / f"shard-{s:06d}.lks"

    def _sweep_tmp(self) -> None:
        """Remove temporary files left by processes that died mid-download (their pid is in the name)."""
        for tmp in self.dir.glob(".*.tmp"):
            parts = tmp.name.split(".")
            try:
                os.kill(int(parts[-3]), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except (ValueError, IndexError, PermissionError):
                pass

    # --- shards on disk -----------------------------------------------------------------------------------------

    def ensure(self, s: int) -> Path:
        """Shard ``s`` on local disk (fetched once per node: under its lock, whoever waited finds it there)."""
        path = self.path(s)
        if self._valid(path):
            os.utime(path)  # last use, for eviction
            STATS["hits"] += 1
            return path
        with open(self.dir / f"shard-{s:06d}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self._valid(path):
                    STATS["hits"] += 1
                    return path
                table = self.fetch(s)
                want = min(self.shard_packs, self.packs - s * self.shard_packs)
                if table.num_rows != want:
                    raise RuntimeError(f"shard {s}: the table gave {table.num_rows} packs, expected {want}")
                STATS["written_bytes"] += shardfile.write(path, table, self.level)
                STATS["fetches"] += 1
                STATS["fetched_bytes"] += table.nbytes
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self.evict()
        return path

    def _valid(self, path: Path) -> bool:
        """Whether ``path`` is a whole shard; a damaged one is removed (it is then fetched again)."""
        try:
            with shardfile.ShardFile(path):
                return True
        except FileNotFoundError:
            return False
        except shardfile.TornShard:
            path.unlink(missing_ok=True)
            return False

    def usage(self) -> int:
        """Bytes of shards under ``root`` (every key)."""
        total = 0
        for p in self.root.glob("*/shard-*.lks"):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def evict(self) -> int:
        """Evict least recently used shards (any key under ``root``) until at most ``limit`` bytes remain,
        sparing this process's window. Returns the bytes freed."""
        if self.limit is None:
            return 0
        with self._lock:
            pinned = {self.path(s) for s in self._pinned}
        files = []
        for p in self.root.glob("*/shard-*.lks"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime_ns, st.st_size, p))
        total, freed = sum(f[1] for f in files), 0
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total <= self.limit:
                break
            if p in pinned:
                continue
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            total, freed = total - size, freed + size
            STATS["evictions"] += 1
        return freed

    # --- reading ------------------------------------------------------------------------------------------------

    def read(self, packs: np.ndarray) -> pa.Table:
        """The packs (split-local numbers) as one table of single-chunk columns, in that order."""
        packs = np.asarray(packs, dtype=np.int64)
        opened: dict[int, shardfile.ShardFile] = {}
        try:
            for s in dict.fromkeys((packs // self.shard_packs).tolist()):
                while s not in opened:
                    try:
                        opened[s] = shardfile.ShardFile(self.ensure(s))
                    except FileNotFoundError:  # evicted between ensure and open: fetch again
                        continue
            batch = shardfile.read_batch([(opened[int(p) // self.shard_packs], int(p) % self.shard_packs)
                                          for p in packs])  # each column decompressed into one buffer
        finally:
            for f in opened.values():
                f.close()
        return pa.Table.from_batches([batch])

    def units(self, batches: list[np.ndarray], make: Callable[[pa.Table], object]):
        """One callable per batch (in order) reading it from the cache; shards are fetched ``window`` shards
        ahead of the batch being handed out, on one side thread, and pinned while in that window."""
        seq, need = _shard_sequence(batches, self.shard_packs)
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loaders-cache")
        submitted = 0
        try:
            for b, packs in enumerate(batches):
                lo = 0 if b == 0 else need[b - 1]
                hi = min(len(seq), need[b] + 1 + self.window)
                self._pin(seq[lo:hi])
                while submitted < hi:
                    ahead.submit(self.ensure, seq[submitted])
                    submitted += 1
                yield lambda packs=packs, pins=seq[lo:hi]: self._read_unpin(packs, pins, make)
        finally:
            ahead.shutdown(wait=True, cancel_futures=True)

    def _read_unpin(self, packs, pins, make):
        try:
            return make(self.read(packs))
        finally:
            self._unpin(pins)

    def _pin(self, shards) -> None:
        with self._lock:
            for s in shards:
                self._pinned[int(s)] = self._pinned.get(int(s), 0) + 1

    def _unpin(self, shards) -> None:
        with self._lock:
            for s in shards:
                n = self._pinned.get(int(s), 0) - 1
                if n > 0:
                    self._pinned[int(s)] = n
                else:
                    self._pinned.pop(int(s), None)


def _shard_sequence(batches: list[np.ndarray], shard_packs: int) -> tuple[list[int], list[int]]:
    """Shards in first-need order over the batches, and per batch the index in that list of the last
    shard it needs (so shards up to it must be there when the batch is read)."""
    seq, where, need = [], {}, []
    last = -1
    for packs in batches:
        for s in (np.asarray(packs) // shard_packs).tolist():
            if s not in where:
                where[s] = len(seq)
                seq.append(s)
        last = max([last] + [where[s] for s in (np.asarray(packs) // shard_packs).tolist()])
        need.append(last)
    return seq, need
