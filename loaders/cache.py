"""A per-node shard cache of one split of a packed table, bounded in size, shared by every process of the node.

``stream(..., cache_dir=DIR, cache_limit="20GB")``: the split's packs are cut into *shards* of ``shard_packs``
consecutive packs (split-local table order). A rank (or DataLoader worker) fetches only the shards its own plan
reads this epoch, a window of ``cache_window`` shards ahead of use, into ``DIR/<key>/shard-NNNNNN.lks``
(``shardfile``: zstd frames, per pack and column). Every process of the node shares the folder:

- one download per shard per node: the fetcher holds ``flock`` on ``shard-NNNNNN.lock`` while it writes, and
  whoever waited finds the file there; files are written under a temporary name and renamed, so a process
  killed mid-download (even ``kill -9``) leaves a ``.tmp`` file, never a torn shard (stale ``.tmp`` files of
  dead processes are removed when a cache opens). The fetching process itself does not wait for the file: it
  serves its own first reads of the shard from the rows it just read (``shardfile.Frames``: the same frames,
  so the same batches) while a writer thread writes and renames it, then releases the lock (no fsync: a shard
  torn by a crash is caught by its checksums after the reboot, see ``shardfile``). An
  iteration ends once the shards it fetched have landed, and a write still under way when a process exits is
  finished on its way out (a lock released with no file would make another process fetch the shard again);
- a bounded size, evicting the shard least soon *needed* by any process of the node: every process (rank or
  DataLoader worker) that reads through the cache announces its plan in a claim, ``DIR/.claims/<host>-<pid>-<n>``
  (``.plan``: the shards of each of its batches, written once; ``.json``: where it is, rewritten as it reads,
  each file written whole and renamed; the position's mtime is the heartbeat). From both, whoever evicts
  works out the shards the process *holds* (those of the batches it has handed out but not finished, and
  ``cache_window`` shards ahead) and the next shards it *needs*, in order of next use (up to
  ``CLAIM_HORIZON``). After each fetch, under one
  ``flock`` on ``DIR/.evict.lock``, shards (of any key under ``DIR``) are evicted until the folder holds at
  most ``cache_limit`` bytes: first those no live process needs (least recently used first), then the needed
  ones whose next use is furthest (Belady's rule, with the position in each announced list as the clock);
  held shards never. The limit must therefore hold the node's held shards (every process's window), or the
  folder goes over it by those. A claim is dead, and removed, when its process is gone (same host, pid not
  running: a ``kill -9`` included) or it has not been refreshed for ``CLAIM_TTL`` seconds (a process of
  another pid namespace that stopped). An evicted shard that is still needed is fetched again; a reader that
  has the file open keeps reading it. Only a cache with a limit evicts: until one has opened the folder (it
  leaves ``DIR/.limited``), processes without a limit keep their position to themselves (rewriting it costs a
  rename per batch, ~0.25 ms on ext4, ~15% of a warm epoch of PushT; measured).

Without ``cache_limit`` nothing fetched is evicted, so an iteration starts fetching every missing shard its plan
reads at once, as one read of the table (``prefetch``; up to ``LOCKS`` shards at a time, each lock an open file): on a node reading the whole split, about one read per
epoch, an allow-list scan in table order. From a local table, a cold iteration (most of its shards missing) of a
split of at most ``WAIT_BYTES`` waits for that read (its first batch excepted) and serves every batch from it, so
the table is decoded once; a larger one does not wait: it reads its batches from the table as a loader without a
cache does until the scan has read every shard, then from the shards (``fill_behind``). A cold start's first batch
from a local table is one ``take`` of exactly its packs (``ShardSource.packs``), read while its shards are fetched.

The sample order is untouched (a pure function of seed, epoch and layout, see ``loader``): the cache only
changes where bytes come from, so resume and world-size changes keep exactly-once with any cache state.
``STATS`` counts, per process: hits, fetches (shards read from the table), takes (reads of the table:
neighbouring missing shards a process needs soon are fetched with one read, see ``NodeCache._obtain``), direct
(batches read from the table itself: a cold start's first), bytes fetched (Arrow bytes read from the table),
bytes written (compressed, on disk), evictions.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from . import retry as _retry
from . import fragfiles, shardfile
from .claims import CLAIM_TTL, CLAIMS, LIMITED, Claim, live_claims  # noqa: F401 - CLAIM_TTL: kept as cache.CLAIM_TTL
from .reads import GROUP_BYTES, GROUP_ROWS, Gathered
from .retry import retrying

STATS = {"hits": 0, "fetches": 0, "takes": 0, "direct": 0, "fetched_bytes": 0, "written_bytes": 0, "evictions": 0}
_STATS_LOCK = threading.Lock()
FRESH_BYTES = 512 * 2**20  # shards read and not yet written that a process holds in memory; past it, reads wait
FILL_IO_BYTES = GROUP_BYTES  # Lance's I/O buffer for a fill's scan of a local table (None: Lance's default)
WAIT_BYTES = FRESH_BYTES  # a cold fill from a local table of at most this many bytes is waited for, not read
#                           beside (``NodeCache.fill_behind``)
LOCKS = 256  # shards one process takes the locks of for reads started ahead (each lock an open file until its
#              shard lands; a whole split's could pass the open-file limit), and most shards in one read
WRITERS = 4  # threads per process writing shards (copies into the page cache and checksums, both without the GIL)
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
    """Fetches shards ``s .. s + count - 1`` (their packs as one table, table order) from the packed table with
    one read; picklable. With ``addrs`` (the packs' row addresses) and ``filter`` (an SQL predicate true on every
    pack, e.g. the split's), ``pieces`` streams them shard by shard from one allow-list scan of their rows:
    against an object store a scan reads fewer, larger ranges than a take of the same rows, and the first shard
    is written while the next are still on the way (from local files in shard-sized batches, from an object
    store in one batch of the whole read: see ``pieces``)."""

    def __init__(self, source, rows: np.ndarray, columns: list[str], shard_packs: int, addrs=None, filter=None,
                 dataset=None, spool=None):
        self.source, self.rows, self.columns, self.shard_packs = source, rows, columns, int(shard_packs)
        self.spool = spool  # a local folder for whole data files on their way (``fragfiles``; None: the temp dir)
        self.addrs, self.filter = addrs, filter
        self.dataset = dataset  # a forks.ProcessLocal of the table shared with the loader (its metadata read once)
        self._ds = None

    def _open(self):
        from . import forks

        forks.using_lance()
        if self.dataset is not None:
            return self.dataset.get()
        if self._ds is None:
            self._ds = self.source.open()
        return self._ds

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}

    def direct(self) -> bool:
        """Whether this process reads a local table itself (``packs`` is then a cheap take)."""
        from . import forks

        return "://" not in self.source.uri and not forks.lance_forbidden()

    def pack_bytes(self) -> float | None:
        """Bytes per row of the table's data files (what reading a pack costs, about), None when Lance does not
        record their sizes."""
        ds, size, rows = self._open(), 0, 0
        for f in ds.get_fragments():
            for d in f.data_files():
                if not d.file_size_bytes:
                    return None
                size += d.file_size_bytes
            rows += f.physical_rows
        return size / rows if rows else None

    def packs(self, packs: np.ndarray) -> pa.Table:
        """The packs (split-local numbers) as one table, in that order: one take of exactly their rows."""
        rows = self.rows[np.asarray(packs, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")
        ds = self._open()
        table = retrying(lambda: ds.take(rows[order], columns=self.columns), f"fetching packs of {self.source.table}",
                         self.source.backoff)
        if np.any(order != np.arange(len(order))):
            table = table.take(np.argsort(order))
        return table.combine_chunks()

    def __call__(self, s: int, count: int = 1) -> pa.Table:
        from . import forks

        rows = self.rows[s * self.shard_packs:(s + count) * self.shard_packs]
        src = self.source
        if forks.lance_forbidden():  # a worker forked from a Lance-using process: its helper process reads
            helper = forks.helper()
            read = lambda: helper.take(src.table_uri, src.lance_version, src.storage_options, rows,  # noqa: E731
                                       self.columns)
        else:
            ds = self._open()
            read = lambda: ds.take(rows, columns=self.columns)  # noqa: E731
        what = f"shard {s}" if count == 1 else f"shards {s}-{s + count - 1}"
        return retrying(read, f"fetching {what} of {src.table}", src.backoff)

    def pieces(self, s: int, count: int):
        """Shards ``s .. s + count - 1``, one table each, in order (see the class doc). A transient error
        backs off and scans again from the first shard not yet handed out."""
        from lance.dataset import serialize_row_addrs

        from . import forks

        sp, src = self.shard_packs, self.source
        if self.addrs is None or forks.lance_forbidden():  # one read through the helper, cut into shards
            table = self(s, count)
            yield from (table.slice(i * sp, sp) for i in range(count))
            return
        done, failures, what = s, 0, f"fetching shards {s}-{s + count - 1} of {src.table}"
        while done < s + count:
            try:
                ds = self._open()
                addrs = self.addrs[done * sp:(s + count) * sp]
                # From an object store, one batch size for the whole read: Lance plans its I/O per batch, and
                # small batches cost several requests each (a 16-pack batch size read the same rows with 6x the
                # GETs; measured). From local files a request costs nothing, and one batch of the whole read
                # costs ~2.5x the CPU of shard-sized ones (Lance assembles it in fresh buffers: page faults and
                # copies; the PushT split: 1.0-1.5 vs 0.36-0.58 CPU-s, measured in session 8): there, batches of
                # at most GROUP_ROWS rows (small buffers the allocator reuses: 8 rows took 0.15-0.19 CPU-s on the
                # PushT split vs 0.29-0.31 for 16 and 0.37-0.51 for 32), each shard handed out once read.
                # From an object store the allow-list alone selects the rows: the filter (there for speed
                # locally: late materialization) reads its column too, 3 more GETs of the PushT split (42 vs 39).
                store = "://" in src.uri
                # from an object store, whole data files when the read needs most of their rows (``fragfiles``)
                batches = fragfiles.fetch(ds, addrs, self.columns, src.table_uri, src.storage_options,
                                          self.spool) if store else None
                if batches is None:
                    # locally, Lance's read-ahead bounded as a group's (``reads.GROUP_BYTES``): its default
                    # buffer is far larger, and the PushT split scanned with it cost ~1.5x the CPU (measured)
                    io = {} if store or FILL_IO_BYTES is None else {"io_buffer_size": FILL_IO_BYTES}
                    batches = ds.scanner(columns=self.columns, filter=None if store else self.filter,
                                         scan_in_order=True, row_addr_allowlist=serialize_row_addrs(addrs.tolist()),
                                         batch_size=len(addrs) if store else min(sp, GROUP_ROWS), **io).to_batches()
                pieces, have = [], 0
                for rb in batches:
                    pieces.append(rb)
                    have += rb.num_rows
                    while done < s + count and have >= min(sp, len(self.rows) - done * sp):
                        want = min(sp, len(self.rows) - done * sp)
                        table = pa.Table.from_batches(pieces)
                        yield table.slice(0, want)
                        rest = table.slice(want)
                        pieces, have, done = rest.to_batches(), rest.num_rows, done + 1
                if done < s + count:
                    raise RuntimeError(f"{what}: the scan ended at shard {done}")
            except Exception as e:  # noqa: BLE001 - classified just below
                if not _retry.transient(e):
                    raise
                if failures == src.backoff.attempts - 1:
                    raise OSError(f"{what}: still failing after {src.backoff.attempts} tries: {e}") from e
                _retry.STATS["retries"] += 1
                time.sleep(src.backoff.delay(failures))
                failures += 1


class NodeCache:
    """Shards of one split under ``root/key`` (see the module doc). Picklable (spawned workers share it).
    ``fetch(s, count=1)`` returns the packs of shards ``s .. s + count - 1`` as one table (``ShardSource``).

    ``plans``: announce this process's plan and evict by every live process's plans (default); False evicts
    least recently used, sparing only this process's own window (the behaviour before claims; a baseline)."""

    def __init__(self, root, key: str, packs: int, shard_packs: int, fetch: Callable[[int], pa.Table],
                 limit: int | None = None, window: int = 4, level: int = shardfile.LEVEL, plans: bool = True):
        if shard_packs < 1 or window < 0:
            raise ValueError(f"shard_packs must be >= 1 and cache_window >= 0, got {shard_packs}, {window}")
        self.root = Path(os.fspath(root)).expanduser()
        self.key = key
        self.dir = self.root / key
        self.packs, self.shard_packs, self.fetch = int(packs), int(shard_packs), fetch
        self.limit, self.window, self.level = parse_size(limit), int(window), int(level)
        self.plans = bool(plans)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.root / CLAIMS).mkdir(exist_ok=True)
        if self.limit is not None:
            (self.root / LIMITED).touch()
        self._init_local()
        self._sweep_tmp()
        live_claims(self.root)  # removes the claims of dead processes

    def _init_local(self):
        self._lock = threading.Lock()
        self._pinned: dict[int, int] = {}
        self._paths: dict[int, Path] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_pinned", "_paths")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_local()

    @property
    def shards(self) -> int:
        return -(-self.packs // self.shard_packs)

    def path(self, s: int) -> Path:
        got = self._paths.get(s)  # (made once: a Path costs ~10 us, a few per batch read)
        if got is None:
            got = self._paths[s] = self.dir / f"shard-{s:06d}.lks"
        return got

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

    def ensure(self, s: int, extend=()) -> Path:
        """Shard ``s`` on local disk (fetched once per node: under its lock, whoever waited finds it there).
        Fetches as ``_obtain`` does, then waits for the shard to land. Raises what its fetch or write raised."""
        self._obtain(s, extend)
        here = _landing()
        with here.cv:
            while (self.dir, s) in here.coming:
                here.cv.wait()
            error = here.errors.pop((self.dir, s), None)
        if error is not None and not self._valid(self.path(s)):
            raise error
        return self.path(s)

    def _obtain(self, s: int, extend=()) -> shardfile.Frames | None:
        """Shard ``s`` fetched, once per node: its frames while this process holds them in memory (it read them
        and is writing them), None when it is on disk (under its lock, whoever waited finds it there).

        ``extend``: shards this process needs soon (with ``plans``, so do those the node's live claims need
        soon). The consecutive ones next to ``s`` among them that are missing and that no other process is
        fetching (their lock is free) are fetched with ``s`` in one read of the table, up to ``window + 1``
        shards (without a limit, all of them: see ``_run_cap``): an object store serves
        whole pages around the rows a read asks for, so one read of k neighbouring shards costs fewer requests
        and bytes than k reads (benchmarks/RESULTS.md, Node shard cache). The read streams shard by shard
        (``ShardSource.pieces``): this returns once ``s`` is read; each shard is written on a writer thread,
        its lock released as it lands (``_take_in``), and the rest of the run is read behind on a side thread."""
        here, key, path = _landing(), (self.dir, s), self.path(s)
        while True:
            with here.cv:  # a thread of this process is fetching it: wait for its frames, not for the file
                while key in here.coming and key not in here.fresh:
                    here.cv.wait()
                if key in here.fresh:
                    return here.fresh[key]
            if self._valid(path):
                try:
                    os.utime(path)  # last use, for eviction
                except FileNotFoundError:  # evicted meanwhile (a shard nobody pinned): fetch it
                    continue
                _count(hits=1)
                return None
            with here.cv:  # this thread's now: the others of this process wait for its frames, never its lock
                if key in here.coming or key in here.fresh:
                    continue
                here.coming.add(key)
            break
        held: dict = {}
        try:
            held[s] = None  # (so that the finally gives it up whatever happens next)
            held[s] = open(self.dir / f"shard-{s:06d}.lock", "a+")
            fcntl.flock(held[s], fcntl.LOCK_EX)  # only another process can hold it
            if self._valid(path):
                _count(hits=1)
                return None
            if self.plans and self.window > 0:  # and what the node's other processes need soon
                soon = 4 * (self.window + 1)
                extend = set(extend).union(*(c["next"][:soon] for c in live_claims(self.root)
                                             if c["key"] == self.key))
            run = self._grow([s], held, extend)
            k = run.index(s)
            pieces = iter(_pieces(self.fetch, run[0], len(run), self.shard_packs))
            self._take_in(run, pieces, held, 0, k + 1)
            _count(takes=1)
            if k + 1 < len(run):  # the rest of the run is read behind
                _submit(_behind, self._finish, run, pieces, {t: held.pop(t) for t in run[k + 1:]}, k + 1)
            else:
                pieces.close()
            with here.cv:
                return here.fresh.get((self.dir, s))  # None: it has landed already
        finally:
            self._drop(held)

    def _lock_missing(self, t: int, held: dict) -> bool:
        """Take shard ``t``'s lock into ``held`` if the shard is missing and nobody is fetching it (no wait)."""
        if not 0 <= t < self.shards:
            return False
        here, key = _landing(), (self.dir, t)
        with here.cv:  # registered before its lock is tried (see _obtain)
            if key in here.coming or key in here.fresh:  # another thread of this process is fetching it
                return False
            here.coming.add(key)
        f = open(self.dir / f"shard-{t:06d}.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is fetching it
            f.close()
            self._drop({t: f})
            return False
        if self._valid(self.path(t)):
            self._drop({t: f})
            return False
        held[t] = f
        return True

    def _grow(self, run: list[int], held: dict, extend) -> list[int]:
        """``run`` (shards in a row, locks in ``held``) grown up, then down, by the neighbours in ``extend``
        that are missing and that nobody is fetching (their locks taken into ``held``), up to ``_run_cap``."""
        cap = self._run_cap()
        while len(run) < cap and run[-1] + 1 in extend and self._lock_missing(run[-1] + 1, held):
            run.append(run[-1] + 1)
        while len(run) < cap and run[0] - 1 in extend and self._lock_missing(run[0] - 1, held):
            run.insert(0, run[0] - 1)
        return run

    def prefetch(self, shards) -> int:
        """Start fetching the missing ones of ``shards`` (in order of need) on side threads (up to 4 at once),
        in runs (``_run_cap``); their locks are taken before this returns, so a process that needs one meanwhile
        (a DataLoader worker forked just after) waits for it instead of fetching it too. Only without a limit
        (with one, shards fetched far ahead would be evicted before their use), and up to ``LOCKS`` shards being
        fetched by this process. Returns the reads started."""
        if self.limit is not None or self.window == 0:
            return 0
        want, started, here = {int(s) for s in shards}, 0, _landing()
        for s in dict.fromkeys(int(s) for s in shards):
            with here.cv:
                if len(here.coming) >= LOCKS:  # the rest is fetched as it is needed (or by a later call)
                    break
            held: dict = {}
            if s not in want or self.path(s).exists() or not self._lock_missing(s, held):
                continue
            run = self._grow([s], held, want)
            want.difference_update(run)
            pieces = iter(_pieces(self.fetch, run[0], len(run), self.shard_packs))
            _submit(_behind, self._finish, run, pieces, held, 0)
            _count(takes=1)
            started += 1
        return started

    def fill_behind(self, batches: list[np.ndarray]) -> "_Fill | None":
        """Whether an iteration over ``batches`` should read the table itself while this cache fills behind it:
        without a limit, from a table this process reads itself (local: a second read costs CPU, no transfer),
        when at least half of the shards it needs are missing and they weigh more than ``WAIT_BYTES`` (in the
        table's data files). If so, their fetch is started (``prefetch``) and the returned ``_Fill`` says when
        the iteration may go over to the shards; else None.

        A smaller fill is waited for instead (``units``: the first batch one take, the others from the frames
        the fill reads, or their files): in a shuffled order nearly every batch needs a shard near the end of
        the fill's scan, so the second batch waits for about the whole scan (~0.3 s for the 234 MiB PushT split),
        but the table is read once, not twice (the iteration's grouped reads of a shuffled epoch cost ~1.1 CPU-s
        for that split, twice the whole fill's ~0.5; its cold epoch 1 went from a median of 0.75 s to 0.64 s
        over 8 alternated runs each on a loaded 2-core machine, benchmarks/stream_peers.py, local copy cold). A
        large cold split is read beside the fill, so the first batches do not wait for the scan of all of it."""
        direct = getattr(self.fetch, "direct", None)
        if not self._whole() or direct is None or not direct():
            return None
        seq = shard_order(batches, self.shard_packs)
        missing = sum(not self.path(s).exists() for s in seq)
        if 2 * missing < max(1, len(seq)):
            return None
        per = self.fetch.pack_bytes() if hasattr(self.fetch, "pack_bytes") else None
        if per is not None and per * missing * self.shard_packs <= WAIT_BYTES:
            return None
        self.prefetch(seq)
        return _Fill(self, seq)

    def all_read(self) -> bool:
        """Whether every shard this process is fetching for this cache has been read (it may still be being
        written: it is then served from memory)."""
        here = _landing()
        with here.cv:
            return all(k in here.fresh for k in here.coming if k[0] == self.dir)

    def _run_cap(self) -> int:
        """Most shards one read takes: ``window + 1``; without a limit, every missing shard in a row that is
        needed, up to ``LOCKS`` (nothing fetched is evicted; on a node reading all of the split, about one read per epoch: from
        an object store a request costs more than its bytes, and from local files one scan in table order
        costs less than many reads, measured in benchmarks/RESULTS.md, issue 15)."""
        if self.window == 0:
            return 1
        return min(self.shards, LOCKS) if self._whole() else self.window + 1

    def _whole(self) -> bool:
        return self.limit is None and self.window > 0

    def horizon(self) -> int:
        """How many shards after the next one a fetch may take along (see ``_run_cap``)."""
        return min(self.shards, LOCKS) if self._whole() else 4 * (self.window + 1)

    def _drop(self, held: dict) -> None:
        """Give up the shards of ``held`` (their locks) that were not read: whoever needs one fetches it."""
        if not held:
            return
        here = _landing()
        with here.cv:
            here.coming.difference_update((self.dir, t) for t in held)
            here.cv.notify_all()
        for f in held.values():
            if f is not None:
                _release(f)

    def _take_in(self, run: list[int], pieces, held: dict, first: int, last: int) -> None:
        """Shards ``run[first:last]`` from ``pieces`` (the run's shards, in order): each is prepared as frames
        and held in memory, where this process's readers take it at once, then written on a writer thread,
        which releases its lock (moved out of ``held``) when it lands and then drops the frames. So a cold
        epoch serves a shard's first reads from the rows just read, while the file lands behind; other processes wait for the file. Past ``FRESH_BYTES`` held, reading waits for writes."""
        here = _landing()
        for i in range(first, last):
            table = next(pieces, None)
            want = min(self.shard_packs, self.packs - run[i] * self.shard_packs)
            if table is None or table.num_rows != want:
                got = "nothing" if table is None else f"{table.num_rows} packs"
                raise RuntimeError(f"shards {run}: the read gave {got} for shard {run[i]}, expected {want} packs")
            frames = shardfile.Frames(table, self.path(run[i]))
            with here.cv:
                while here.bytes > FRESH_BYTES:
                    here.cv.wait()
                here.fresh[(self.dir, run[i])] = frames
                here.bytes += frames.nbytes
                here.cv.notify_all()
            _count(fetches=1, fetched_bytes=table.nbytes)
            _submit(_writers, self._land, run[i], frames, held.pop(run[i]))

    def _land(self, s: int, frames: shardfile.Frames, lock) -> None:
        """Write shard ``s`` (writer thread), then release its lock, evict for it and drop its frames from
        memory. If the write fails the shard stays missing: a reader of this process that needs it again
        fetches it again (and ``ensure`` raises the error)."""
        here = _landing()
        try:
            # compressed on this thread: a pool refuses work while the interpreter exits, and this write may
            # be one the process's end waits for (the writers run in parallel anyway)
            _count(written_bytes=shardfile.write_frames(self.path(s), frames, self.level, threads=1))
        except Exception as e:  # noqa: BLE001 - see the doc
            with here.cv:
                here.errors[(self.dir, s)] = e
        finally:
            _release(lock)
            try:
                self.evict()  # before the shard counts as landed: flush() returns with the folder under its limit
            finally:
                with here.cv:
                    here.fresh.pop((self.dir, s), None)
                    here.bytes -= frames.nbytes
                    here.coming.discard((self.dir, s))
                    here.cv.notify_all()

    def flush(self) -> None:
        """Wait until every shard this process is fetching for this cache (reading on a side thread, or read
        and being written) has landed on disk, and been evicted for. Call it from a thread that is not itself
        fetching."""
        here = _landing()
        with here.cv:
            while any(d == self.dir for d, _ in (*here.fresh, *here.coming)):
                here.cv.wait()

    def _finish(self, run: list[int], pieces, held: dict, first: int) -> None:
        """The rest of a run from ``run[first]``, on a side thread. If reading fails, the shards not read stay
        missing: their locks are released and whoever needs one fetches it (and meets the error, if it lasts)."""
        try:
            self._take_in(run, pieces, held, first, len(run))
        except Exception:  # noqa: BLE001 - see the doc: a reader of a missing shard fetches it again
            pass
        finally:
            pieces.close()
            self._drop(held)

    def _valid(self, path: Path) -> bool:
        """Whether ``path`` is a whole shard; a damaged one is removed (it is then fetched again)."""
        f = _open_whole(path)
        if f is not None:
            f.close()
        return f is not None

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
        """Evict shards (any key under ``root``) until at most ``limit`` bytes remain: those no live process
        needs first (least recently used first), then the needed ones used furthest ahead; held shards (and
        this process's pinned ones) never. Returns the bytes freed."""
        if self.limit is None:
            return 0
        with open(self.root / ".evict.lock", "a+") as lock:  # one evictor at a time: none over-evicts
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._evict()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _evict(self) -> int:
        files = []
        for p in self.root.glob("*/shard-*.lks"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime_ns, st.st_size, p))
        total, freed = sum(f[1] for f in files), 0
        if total <= self.limit:
            return 0
        with self._lock:
            held = {(self.key, s) for s in self._pinned}
        soon: dict[tuple[str, int], int] = {}  # (key, shard) -> fewest positions to its next use, any process
        if self.plans:
            for claim in live_claims(self.root):
                key = claim["key"]
                held.update((key, s) for s in claim["hold"])
                for i, s in enumerate(claim["next"]):
                    if soon.get((key, s), i + 1) > i:
                        soon[(key, s)] = i

        def rank(f):
            k = _shard_id(f[2])
            return (0, f[0]) if k not in soon else (1, -soon[k], f[0])

        for _, size, p in sorted(files, key=rank):
            if total <= self.limit:
                break
            if _shard_id(p) in held:
                continue
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            total, freed = total - size, freed + size
            _count(evictions=1)
        return freed

    # --- reading ------------------------------------------------------------------------------------------------

    def read(self, packs: np.ndarray, make: Callable):
        """``make`` of the packs (split-local numbers), in that order, made while their shards are open: of a
        ``reads.Gathered`` (their rows as they lie in the shards: the batch is built with one copy, each big
        column read straight into its slice of the batch's buffer), or, where a column the build reads lies in a
        big frame (``Packs.gatherable``), of one table of single-chunk columns (``shardfile.read_batch``)."""
        packs = np.asarray(packs, dtype=np.int64)
        opened: dict = {}  # shard -> an open ShardFile, or its frames while this process writes it
        try:
            for s in dict.fromkeys((packs // self.shard_packs).tolist()):
                f = self._open_landed(s)  # a hit opens the file once (``_obtain`` would check it, then open it)
                if f is not None:
                    opened[s] = f
                while s not in opened:
                    frames = self._obtain(s)
                    if frames is not None:
                        opened[s] = frames
                        continue
                    try:
                        opened[s] = shardfile.ShardFile(self.path(s))
                    except FileNotFoundError:  # evicted between _obtain and open: fetch again
                        continue
            views = {s: f.rows() for s, f in opened.items()}
            if all(v.gatherable for v in views.values()):
                return make(Gathered([(views[int(p) // self.shard_packs], int(p) % self.shard_packs, 1)
                                      for p in packs]))
            batch = shardfile.read_batch([(opened[int(p) // self.shard_packs], int(p) % self.shard_packs)
                                          for p in packs])  # each column decompressed into one buffer
        finally:
            for f in opened.values():
                f.close()
        return make(pa.Table.from_batches([batch]))

    def _open_landed(self, s: int) -> shardfile.ShardFile | None:
        """Shard ``s``'s file, open, if it is on disk and whole (a hit: its last use recorded, for eviction), else
        None (a damaged one is removed, as ``_valid`` does)."""
        path = self.path(s)
        f = _open_whole(path)
        if f is None:
            return None
        try:
            os.utime(f.fd if os.utime in os.supports_fd else path)
        except OSError:
            pass
        _count(hits=1)
        return f

    def units(self, batches: list[np.ndarray], make: Callable[[pa.Table], object]):
        """One callable per batch (in order) reading it from the cache; shards are fetched ``window`` shards
        ahead of the batch being handed out, on one side thread, and pinned while in that window. With
        ``plans``, the process's claim (see the module doc) is rewritten as batches are handed out and read,
        and removed at the end. The iteration ends once the shards it fetched have landed (``flush``)."""
        seq, need = _shard_sequence(batches, self.shard_packs)
        # a cold start from a local table: the first batch is one take of its packs, not a wait for its shards
        direct, here = getattr(self.fetch, "direct", None), _landing()
        with here.cv:
            coming = set(here.coming)
        first = len(batches) > 0 and direct is not None and direct() and not any(
            self.path(s).exists() or (self.dir, s) in coming
            for s in dict.fromkeys((np.asarray(batches[0]) // self.shard_packs).tolist()))
        if self._whole():  # without a limit: every missing shard now, in one read or few
            self.prefetch(seq)
        claim = Claim(self, batches) if self.plans else None
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loaders-cache")
        submitted = 0
        # the last landings evict while read-ahead batches still pin their shards: the iteration's last unpin
        # (after this generator has ended) evicts once more, or the folder could end a shard or two over its limit
        tail = _Tail(self.evict if self.limit is not None else None)
        try:
            for b, packs in enumerate(batches):
                lo = 0 if b == 0 else need[b - 1]
                hi = min(len(seq), need[b] + 1 + self.window)
                self._pin(seq[lo:hi])
                if claim is not None:
                    claim.handed(b)
                while submitted < hi:  # with the shards needed next after it: fetched in one read if neighbours
                    ahead.submit(self._obtain, seq[submitted],
                                 frozenset(seq[submitted + 1:submitted + 1 + self.horizon()]))
                    submitted += 1
                read = self._direct if b == 0 and first else self.read
                tail.add()
                yield lambda b=b, packs=packs, pins=seq[lo:hi], read=read: self._read_unpin(b, packs, pins, make,
                                                                                            claim, read, tail)
        finally:
            ahead.shutdown(wait=True, cancel_futures=True)
            # the shards this process fetched land before the iteration ends: a process that ends right after
            # its epoch leaves them all on disk (and the node's other processes never fetch them again)
            self.flush()
            if claim is not None:
                claim.remove()
            tail.end()

    def _direct(self, packs: np.ndarray, make: Callable) -> object:
        """``make`` of the packs read from the table itself (``ShardSource.packs``), not from shards."""
        table = self.fetch.packs(packs)
        _count(direct=1)
        return make(table)

    def _read_unpin(self, b, packs, pins, make, claim, read, tail):
        try:
            return read(packs, make)
        finally:
            self._unpin(pins)
            if claim is not None:
                claim.done(b)
            tail.done()

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


def _open_whole(path: Path) -> shardfile.ShardFile | None:
    """``path`` opened if it is a whole shard; None if absent, or damaged (then removed: it is fetched again)."""
    try:
        return shardfile.ShardFile(path)
    except FileNotFoundError:
        return None
    except shardfile.TornShard:
        path.unlink(missing_ok=True)
        return None


class _Tail:
    """Calls ``last`` (if any) once an iteration's generator has ended and every unit it handed out has been read
    (units handed out but never read, as when a consumer stops early, leave their shards pinned anyway)."""

    def __init__(self, last):
        self.last, self.open, self.ended, self.lock = last, 0, False, threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.open += 1

    def done(self) -> None:
        with self.lock:
            self.open -= 1
            fire = self.ended and self.open == 0
        if fire and self.last is not None:
            self.last()

    def end(self) -> None:
        with self.lock:
            self.ended = True
            fire = self.open == 0
        if fire and self.last is not None:
            self.last()


class _Fill:
    """A fill behind an iteration that reads the table (``NodeCache.fill_behind``): ``read()`` is True once every
    shard of ``seq`` is on disk or read by this process; until then, whenever this process's fetches have all
    been read, it starts the next missing ones (``prefetch`` locks at most ``LOCKS`` at a time). ``at``: every
    shard before it is known to be on disk or on its way (so each call looks at each shard about once)."""

    AGAIN = 0.05  # s between two tries to start the next fetches (a try opens the lock files of missing shards)

    def __init__(self, cache: NodeCache, seq: list[int]):
        self.cache, self.seq, self.at, self.tried = cache, seq, 0, time.monotonic()

    def read(self) -> bool:
        cache = self.cache
        if not cache.all_read():
            return False
        here = _landing()
        with here.cv:
            coming = {s for d, s in here.coming if d == cache.dir}
        while self.at < len(self.seq) and (self.seq[self.at] in coming or cache.path(self.seq[self.at]).exists()):
            self.at += 1
        if self.at == len(self.seq):
            return True
        # missing shards that this process could not lock yet (its LOCKS are taken by shards read and being
        # written) or that another process is fetching: the iteration goes on reading the table meanwhile
        if time.monotonic() - self.tried >= self.AGAIN:
            self.tried = time.monotonic()
            cache.prefetch(self.seq[self.at:])
        return False

    def finish(self) -> None:
        """The rest of the fill, run to its end (the iteration read every batch from the table first); stops early
        only where other processes are fetching what is missing."""
        here = _landing()
        while True:
            self.cache.flush()  # what this process fetches has landed: its locks are free again
            self.tried = -self.AGAIN
            if self.read():
                return
            with here.cv:
                if not any(d == self.cache.dir for d, _ in here.coming):  # nothing started: others fetch the rest
                    return


def _release(f) -> None:
    """Unlock and close a shard's lock file. Unlocked explicitly: a DataLoader worker forked while this process
    held the lock shares the open file, and closing only this process's copy would not release it."""
    if f.closed:
        return
    try:
        fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


_BEHIND: dict = {}  # pid -> the side threads that finish runs (one pool per process: not inherited by forks)
_WRITERS: dict = {}  # pid -> the threads that write shards
_LANDINGS: dict = {}  # pid -> this process's shards being read and written (_Landing)


class _Landing:
    """This process's shards in flight, per (cache folder, shard): ``coming`` (it holds their locks and is
    reading them), ``fresh`` (read, held in memory as frames until written), ``bytes`` (of ``fresh``),
    ``errors`` (writes that failed); ``cv`` guards them and is notified on every change."""

    def __init__(self):
        self.cv = threading.Condition()
        self.coming: set = set()
        self.fresh: dict = {}
        self.bytes = 0
        self.errors: dict = {}


def _landing() -> _Landing:
    """This process's ``_Landing`` (a forked child starts empty: the parent's fetches are not its own, and
    their threads did not come along)."""
    here = _LANDINGS.get(os.getpid())
    if here is None:
        _LANDINGS.clear()
        here = _LANDINGS[os.getpid()] = _Landing()
    return here


def _writers() -> ThreadPoolExecutor:
    pool = _WRITERS.get(os.getpid())
    if pool is None:
        _WRITERS.clear()
        pool = _WRITERS[os.getpid()] = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="loaders-write")
    return pool


def _submit(pool, fn, *args) -> None:
    """``fn(*args)`` on ``pool()``, or here when the pool refuses work: the interpreter is exiting (its thread
    pools then take no new work, while the running ones finish theirs) or the pool was shut down. A shard read
    or written at a process's end must still land: dropped, its lock would be released with no file, and the
    node's other processes would fetch it again."""
    try:
        pool().submit(fn, *args)
    except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
        fn(*args)


def _behind() -> ThreadPoolExecutor:
    pool = _BEHIND.get(os.getpid())
    if pool is None:
        _BEHIND.clear()
        pool = _BEHIND[os.getpid()] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="loaders-fetch")
    return pool


def _pieces(fetch, s: int, count: int, shard_packs: int):
    """Shards ``s .. s + count - 1`` one table each: ``fetch.pieces`` streams them, a plain ``fetch`` gives one
    table to cut."""
    if hasattr(fetch, "pieces"):
        return fetch.pieces(s, count)
    table = fetch(s, count) if count > 1 else fetch(s)
    return (table.slice(i * shard_packs, shard_packs) for i in range(count))


def _count(**deltas) -> None:
    with _STATS_LOCK:  # side threads and readers count at once
        for k, v in deltas.items():
            STATS[k] += v


def _shard_id(path: Path) -> tuple[str, int]:
    """(key, shard number) of a shard file ``root/key/shard-NNNNNN.lks``."""
    return path.parent.name, int(path.stem.split("-")[1])


def shard_order(batches: list[np.ndarray], shard_packs: int) -> list[int]:
    """The shards ``batches`` read, in order of first need."""
    return _shard_sequence(batches, shard_packs)[0]


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
