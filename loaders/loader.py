"""``stream()`` and its ``Loader``: packs of one split, shuffled, sharded over ranks and workers, resumable.

The epoch's order is ``shuffle(n_packs, seed, epoch)``; ``partition`` deals it to ranks in global steps so
that what all ranks have consumed is always a prefix of that order. The checkpoint is therefore a handful
of numbers (``state_dict``): the epoch, the seed, how many packs of the order are consumed, and where the
current world layout started dealing. The same layout resumes its deal exactly (same batches, same order);
another world size or batch size re-deals the rest of the order. Inside one rank, DataLoader worker ``k``
of ``K`` reads the rank's batches ``k, k+K, ...``; the DataLoader's in-order round robin gives them back in
the rank's order, so the stream is the same with any number of workers.

Workers, however they are run (``stream(num_workers=K)``'s own persistent ones, or a DataLoader of the user's,
persistent or not, fork / spawn / forkserver), take the position from a small shared-memory block (``Position``)
the loader writes in the main process (``set_epoch``, ``load_state_dict``, the start of each of its own
iterations): epoch, packs consumed, segment start, seed and world layout. A worker that finishes its share marks
it there, so a user's DataLoader that is simply iterated again (no ``set_epoch``) goes on to the next epoch, as
the loader itself does. The order of epoch ``e`` is therefore the same pure function of (seed, e, layout) in every
configuration. Workers forked from a process that used Lance read without it (``forks``): from the local copy
when there is one (``cache_dir``), else through a helper process.

Reading (``reads``): a batch's rows are asked for in table order; consecutive batches that ascend through
the table are read with one lazy Lance scan restricted to their rows (each batch a ``PackedBatch`` of views
over the Arrow buffers Lance returned), the others in groups of up to 32 MiB, one allow-list scan each, the
next ``GROUPS_AHEAD`` scanned concurrently, each batch then copied once out of its group (``gathered_batch``);
up to ``prefetch`` batches are read ahead on threads and retried on transient I/O errors. Memory is bounded by
the read-ahead, whatever the table's size. With ``cache_dir`` the packs come from a per-node shard cache instead
(``cache``): each process fetches the shards its plan reads, ahead of use, shared by the node, bounded by
``cache_limit``; a batch is a few file reads and one concatenation, in any order. A cold cache without a limit
over a local table is filled by one scan. A split of at most ``cache.WAIT_BYTES`` (512 MiB) is served from that
scan, the table decoded once: in a shuffled order nearly every batch needs a shard near the end of the scan, so
the epoch's second batch waits for about all of it (~0.3 s for 234 MiB). A larger one is read by the iteration
as without a cache, beside the scan (``NodeCache.fill_behind``), until that scan has read every shard, then from
the shards: its second batch does not wait for the whole fill.
"""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import cache as _cache
from . import shardfile as _shardfile
from . import forks as _forks
from . import mixture_epoch as _mixture_epoch
from . import partition as _partition
from . import reads as _reads
from . import split_index as _split_index
from .batch import PackedBatch, gathered_batch, packed_batch
from .packings import PackedSource, resolve_open
from .retry import retrying
from .shuffle import get_shuffle
from .world import World, detect

STATE_VERSION = 1
PRIME_BEFORE_END = 4  # batches before a run's end at which the next run's scan is opened
SCAN_RUN = 4  # ascending batches read with a scan of their own from this many on; fewer go into groups
GROUPS_AHEAD = 2  # groups read ahead of the one being handed out, concurrently (see ``_grouped``)
MAIN_FIRST = 8  # batches the main process reads itself while its own DataLoader workers start (see ``__iter__``)
_SKIP = ("split", "n_samples", "n_tokens")  # per-pack bookkeeping the batch does not need


def _split_filter(split: str) -> str:
    """SQL filter on the split column (a quote inside the name doubled, as SQL escapes it)."""
    return "split = '" + split.replace("'", "''") + "'"


def _identity(x):
    return x


class Position:
    """Where the next iteration starts, in shared memory so that DataLoader workers (persistent or not, any
    start method) read what the main process last set: ``(epoch, consumed, segment, seed, rank, world_size)``,
    a generation bumped on every change, and per worker the number of full shares it finished since (tagged
    with the generation: a worker still busy with an older one cannot count)."""

    FIELDS = ("epoch", "consumed", "segment", "seed", "rank", "world_size", "generation", "workers", "counted")
    MAX_WORKERS = 256

    def __init__(self, epoch: int, consumed: int, segment: int, seed: int, world: World):
        self.block = torch.zeros(len(self.FIELDS) + self.MAX_WORKERS, dtype=torch.int64)
        try:
            self.block.share_memory_()
        except RuntimeError:  # no shared memory (a sandbox): workers then see the position they were made with
            pass
        self.set(epoch, consumed, segment, seed, world)

    def set(self, epoch: int, consumed: int, segment: int, seed: int, world: World, counted: bool = False) -> None:
        """A new position; ``counted``: the main process counts what it hands out (its own iteration), so the
        workers' marks do not move it."""
        b = self.block
        n = len(self.FIELDS)
        b[n:] = 0
        b[:n] = torch.tensor([epoch, consumed, segment, seed, world.rank, world.world_size, int(b[6]) + 1, 0,
                              int(counted)])

    def read(self, workers: int = 0) -> dict:
        """The published position: ``position`` (epoch, consumed, segment) moved on by the epochs every worker
        finished since (``done`` of them), ``seed``, ``world``, ``generation``, ``counted``. ``workers``: how
        many workers' marks to count (0: as many as the workers last recorded)."""
        v = self.block.tolist()
        epoch, consumed, segment, seed, rank, size, gen, recorded, counted = v[:len(self.FIELDS)]
        workers = workers or recorded
        done = 0
        if 0 < workers <= self.MAX_WORKERS:
            marks = v[len(self.FIELDS):len(self.FIELDS) + workers]
            done = min((m & 0xFFFFFFFF) if (m >> 32) == gen else 0 for m in marks)
        return {"position": (epoch + done, 0, 0) if done else (epoch, consumed, segment), "done": done,
                "seed": seed, "world": World(rank=rank, world_size=size), "generation": gen, "counted": bool(counted)}

    def finished(self, worker: int, workers: int, generation: int, shares: int) -> None:
        """Worker ``worker`` of ``workers`` finished a share: ``shares`` full shares done in ``generation``."""
        if worker < self.MAX_WORKERS:
            self.block[7] = workers
            self.block[len(self.FIELDS) + worker] = (generation << 32) | shares


class Loader(IterableDataset):
    """Iterable of ``PackedBatch`` over one split of a packed table (see the module doc).

    Also a ``torch.utils.data.IterableDataset``: inside a DataLoader each worker reads its share, with any
    start method (forked workers read without Lance: see ``forks``) and persistent or not; ``set_epoch`` /
    ``load_state_dict`` reach the workers (see the module doc). ``stream(..., num_workers=K)`` runs that
    DataLoader itself, its workers started once, and keeps ``state_dict()`` exact (it counts the batches it
    hands out); a DataLoader of your own gives the same stream, but this object sees only the epochs it
    finished.

    Every pack is delivered once per epoch, so when the split's packs do not fill the last global step some
    ranks get one batch fewer (``len(loader)`` says how many): a synchronous trainer stops the epoch at the
    minimum over ranks, or calls ``set_epoch`` when any rank runs out.
    """

    def __init__(self, source: PackedSource, split: str, *, batch_packs: int = 1, shuffle: str = "random",
                 seed: int = 0, epoch: int = 0, world: World = World(), num_workers: int = 0, prefetch: int = 2,
                 pin_memory: bool = False, device=None, partition: str = "balanced", cache_dir=None,
                 progress: bool = True, persistent_workers: bool = True, multiprocessing_context=None,
                 cache_limit=None, shard_packs: int = 16, cache_window: int = 4, cache_level: int | None = None,
                 index: _split_index.SplitIndex | None = None, dataset=None):
        if batch_packs < 1:
            raise ValueError(f"batch_packs must be >= 1, got {batch_packs}")
        if num_workers < 0 or prefetch < 0:
            raise ValueError(f"num_workers and prefetch must be >= 0, got {num_workers}, {prefetch}")
        get_shuffle(shuffle), _partition.get_partition(partition)  # fail early on unknown names
        self.source, self.split, self.world = source, split, world
        self.batch_packs, self.shuffle, self.partition = int(batch_packs), shuffle, partition
        self.num_workers, self.prefetch, self.pin_memory = int(num_workers), int(prefetch), bool(pin_memory)
        self.device = torch.device(device) if device is not None else None
        self.seed, self.epoch, self.consumed = int(seed), int(epoch), 0
        self.segment = 0  # position in the epoch's order where this world layout started dealing
        self.multiprocessing_context = multiprocessing_context
        self.persistent_workers = bool(persistent_workers)
        self.shared = Position(self.epoch, 0, 0, self.seed, world)  # what workers start from (see Position)
        # each process opens the table itself, after any fork (``dataset``: this process's, opened by resolve)
        self._ds = _forks.ProcessLocal(source.open, dataset)
        self._workers = None  # this loader's own DataLoader (num_workers > 0), made on first iteration
        self._helpers: list = []  # Lance helpers started for its forked workers, one each (see _context)
        if index is None:  # read the split's pack index (``index``: kept from an earlier start, see split_index)
            index = self._read_index(source, split)
        self.rows, self.addrs = index.rows, index.addrs  # table positions of the split's packs, row addresses
        self.tokens, self.columns = index.tokens, list(index.columns)
        self.cache = None  # a NodeCache when reading through a per-node shard cache (see ``cache``)
        if cache_dir is not None:
            key = _cache.cache_key(source.table_uri, source.lance_version, split, self.columns, shard_packs)
            self.cache = _cache.NodeCache(cache_dir, key, len(self.rows), shard_packs,
                                          _cache.ShardSource(source, self.rows, self.columns, shard_packs,
                                                             self.addrs, _split_filter(split), self._ds,
                                                             spool=cache_dir),
                                          limit=cache_limit, window=cache_window,
                                          level=_shardfile.LEVEL if cache_level is None else int(cache_level))

    def _read_index(self, source: PackedSource, split: str) -> _split_index.SplitIndex:
        from packers import pack_index as _pack_index  # here: ``lake`` is imported only where a stream starts

        ds = self._dataset()
        # the packer's side file (one small object, verified against this version's manifest), else the table
        # itself (two columns of every pack: a footer and pages per data file)
        got = None
        try:
            got = _pack_index.read(ds, source.table_uri, source.table, source.storage_options)
        except _pack_index.Unusable as e:
            import warnings

            warnings.warn(f"{e}: reading the pack index from the table", RuntimeWarning, stacklevel=3)
        if got is None:
            meta = retrying(lambda: ds.to_table(columns=["split", "n_tokens"], with_row_address=True),
                            f"reading {source.table} index", source.backoff)
            got = (np.asarray(meta["split"].to_numpy(zero_copy_only=False)), meta["_rowaddr"].to_numpy(),
                   np.asarray(meta["n_tokens"].to_numpy()))
        splits, addrs, tokens = got
        rows = np.flatnonzero(splits == split).astype(np.int64)
        if len(rows) == 0:
            raise ValueError(f"packed table {source.table} has no packs in split {split!r} "
                             f"(splits: {sorted(set(splits.tolist()))})")
        return _split_index.SplitIndex(source, rows, np.asarray(addrs)[rows], np.asarray(tokens)[rows].astype(np.int64),
                                       tuple(n for n in ds.schema.names if n not in _SKIP))

    def split_index(self) -> _split_index.SplitIndex:
        """What this loader resolved at its start (kept beside a shard cache by ``stream``)."""
        return _split_index.SplitIndex(self.source, self.rows, self.addrs, self.tokens, tuple(self.columns))

    # --- order ------------------------------------------------------------------------------------------------

    @property
    def packs(self) -> int:
        """Packs in the split (one epoch)."""
        return len(self.rows)

    def _per_step(self) -> int:
        return self.world.world_size * self.batch_packs

    def _position(self) -> tuple[int, int, int]:
        """(epoch, consumed, segment) the next ``iter()`` starts from; a finished epoch moves on to the next
        (also one finished by the workers of a DataLoader of the user's)."""
        pub = self.shared.read()
        if pub["done"] and not pub["counted"]:
            return pub["position"]  # epochs a user's DataLoader's workers finished since the position was set
        if self.consumed >= self.packs:
            return self.epoch + 1, 0, 0
        return self.epoch, self.consumed, self.segment

    def plan(self, world: World | None = None, position: tuple[int, int, int] | None = None,
             seed: int | None = None) -> list[np.ndarray]:
        """Batches (split-local pack numbers) ``world`` (default: this rank) reads from ``position`` (epoch,
        consumed, segment; default: where the next ``iter()`` starts) to the epoch's end. Pure: reads nothing."""
        epoch, consumed, segment = position or self._position()
        world = world or self.world
        order = get_shuffle(self.shuffle)(self.packs, self.seed if seed is None else seed, epoch)[segment:]
        per = world.world_size * self.batch_packs
        return _partition.batches_of(order, self.tokens[order], world, self.batch_packs,
                                     self.partition, skip_steps=(consumed - segment) // per)

    def __len__(self) -> int:
        """Batches the next ``iter()`` yields on this rank."""
        return len(self.plan())

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (DataLoader workers, persistent or not, read it when the
        DataLoader is next iterated)."""
        self.epoch, self.consumed, self.segment = int(epoch), 0, 0
        self._publish()

    def set_world(self, world: World) -> None:
        """Another world layout (an elastic change): the rest of the epoch is dealt afresh from what is consumed."""
        self.world, self.segment = world, self.consumed
        self._publish()

    def _publish(self, counted: bool = False) -> None:
        self.shared.set(self.epoch, self.consumed, self.segment, self.seed, self.world, counted)

    # --- checkpoints --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Where the stream is: epoch, seed, packs of the epoch's order consumed (by all ranks), and what for.
        Exact when this loader runs the iteration (with or without its own workers); behind a DataLoader of the
        user's it knows only the epochs the workers finished."""
        pub = self.shared.read()
        if pub["done"] and not pub["counted"]:
            self.epoch, self.consumed, self.segment = pub["position"]  # epochs finished by a user's workers
        return {"version": STATE_VERSION, "epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "packs": self.packs, "split": self.split, "table": self.source.table,
                "recipe_hash": self.source.recipe_hash, "lake_version": self.source.lake_version,
                "shuffle": self.shuffle, "partition": self.partition, "world_size": self.world.world_size,
                "batch_packs": self.batch_packs, "segment_start": self.segment}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (any world size, batch size or partition). Raises ValueError if it is
        another table, split or shuffle.

        The same world layout continues its deal exactly (same batches, same order); another layout deals
        what is left of the epoch afresh."""
        for key, mine in (("table", self.source.table), ("split", self.split), ("packs", self.packs),
                          ("shuffle", self.shuffle)):
            if state.get(key) != mine:
                raise ValueError(f"state is for {key}={state.get(key)!r}, this loader reads {key}={mine!r}")
        if not 0 <= int(state["consumed"]) <= self.packs:
            raise ValueError(f"state consumed={state['consumed']} is outside 0..{self.packs}")
        self.seed, self.epoch, self.consumed = int(state["seed"]), int(state["epoch"]), int(state["consumed"])
        same = (state.get("world_size"), state.get("batch_packs"), state.get("partition")) == (
            self.world.world_size, self.batch_packs, self.partition)
        self.segment = int(state.get("segment_start", self.consumed)) if same else self.consumed
        misaligned = (self.consumed - self.segment) % self._per_step() != 0 and self.consumed < self.packs
        if not 0 <= self.segment <= self.consumed or misaligned:
            raise ValueError(f"state segment_start={self.segment} does not fit consumed={self.consumed}")
        self._publish()

    # --- reading ------------------------------------------------------------------------------------------------

    def __getstate__(self):  # _ds (ProcessLocal) pickles without its handle
        return {**self.__dict__, "_workers": None, "_helpers": []}

    def _dataset(self):
        return self._ds.get()

    def read(self, packs: np.ndarray) -> PackedBatch:
        """One batch: the split-local packs ``packs``, merged, in that order."""
        return next(self._units([np.asarray(packs, dtype=np.int64)], pin=False))()

    def _units(self, batches: list[np.ndarray], pin: bool):
        """One callable per batch, in order, reading it (see ``reads``): the next record batch of a long run's
        shared scan inside one, else a gather from its group's scan (the first batch: a take). The next
        group is read on a side thread as one starts, the next run's scan opened near a run's end: a scan's
        first batch takes ~4x a later one (Lance fills its pipeline), which would otherwise stall every start."""
        if self.cache is not None:
            make = lambda table: self._batch(table, pin)  # noqa: E731
            fill = self.cache.fill_behind(batches)
            if fill is not None:  # cold: read as without a cache until the fill has read it all
                done = 0
                try:
                    ds = self._dataset()
                    grouped = self._grouped(batches, pin, _reads.lance_source(ds, self.columns), ds)
                    for unit in grouped:
                        if fill.read():  # the rest from the shards, a few file reads a batch
                            break
                        yield unit
                        done += 1
                    else:  # every batch came from the table first (a fill of more than LOCKS shards): finish it
                        fill.finish()
                    grouped.close()
                    if done < len(batches):
                        yield from self.cache.units(batches[done:], make)
                finally:
                    self.cache.flush()  # as ``units``: the iteration ends once its shards have landed
                return
            # any batch is a few file reads: no runs, no Lance
            yield from self.cache.units(batches, make)
            return
        if _forks.lance_forbidden():  # forked from a process that used Lance: its helper process reads, in groups
            info = get_worker_info()
            src = self.source
            helper = self._helpers[info.id] if info is not None and info.id < len(self._helpers) else _forks.helper()
            yield from self._grouped(batches, pin, helper.source(src.table_uri, src.lance_version,
                                                                 src.storage_options, self.columns))
            return
        ds = self._dataset()
        yield from self._grouped(batches, pin, _reads.lance_source(ds, self.columns), ds)

    def _grouped(self, batches: list[np.ndarray], pin: bool, source, ds=None):
        """``_units`` reading through ``source`` (see ``reads.Group``); long runs with a scan of ``ds`` when
        given (this process may use Lance), else in groups too."""
        what = self.source.table_uri
        seen = [0, 0]  # rows and Arrow bytes read by this iteration's groups: what a pack weighs, for their size

        def weighed(rows, nbytes):
            seen[0] += rows
            seen[1] += nbytes

        def group(batches):
            rows = [self.rows[b] for b in batches]
            named = f"packs {rows[0].tolist()}" if len(rows) == 1 else f"{len(rows)} batches"
            return _reads.Group(source, rows, [self.addrs[b] for b in batches], f"{named} of {what}",
                                self.source.backoff, weighed)

        def scan(run):
            return _reads.Ordered(_reads.scan(ds, [self.rows[b] for b in run], [self.addrs[b] for b in run],
                                              self.columns, _split_filter(self.split),
                                              f"{len(run)} batches of {what}", self.source.backoff))

        def readers():
            """Each long run of ascending batches one scan; the batches between them in groups (a short run
            costs a Lance call of its own; in a group it shares one with dozens of batches)."""
            lone: list[np.ndarray] = []
            sizes = _reads.group_sizes(self.batch_packs, lambda: seen[1] / seen[0] if seen[0] else None)
            for run in [*_reads.runs(batches, self.batch_packs), None]:
                if run is not None and (len(run) < SCAN_RUN or ds is None):
                    lone.extend(run)
                    continue
                while lone:
                    now = lone[:next(sizes)]
                    yield group(now), len(now)
                    lone = lone[len(now):]
                if run is not None:
                    yield scan(run), len(run)  # opened lazily, on first read

        starter = ThreadPoolExecutor(max_workers=GROUPS_AHEAD, thread_name_prefix="loaders-open")
        try:
            it = readers()
            ahead: deque = deque()  # the next readers, made (not read) ahead of use, to prime them
            primed: set[int] = set()
            while True:
                while len(ahead) < GROUPS_AHEAD + 1 and (nxt := next(it, None)) is not None:
                    ahead.append(nxt)
                if not ahead:
                    break
                reader, n = ahead.popleft()
                # groups are read whole: the next GROUPS_AHEAD ones (up to the next scan) started as this reader
                # starts, each on a thread of its own (one group's scan keeps about one core busy: two overlap),
                # so GROUPS_AHEAD + 1 groups in memory at most; a scan's first record batch late in this reader
                # (two scans' read-ahead overlap briefly)
                soon = []
                for r, _ in ahead:
                    if not isinstance(r, _reads.Group) or len(soon) == GROUPS_AHEAD:
                        break
                    soon.append(r)
                at = 0 if soon else max(0, n - PRIME_BEFORE_END)
                for k in range(n):
                    if k == at:
                        for r in soon or [r for r, _ in list(ahead)[:1]]:
                            if id(r) not in primed:
                                primed.add(id(r))
                                starter.submit(r.prime)
                    yield lambda k=k, r=reader: self._batch(r.get(k), pin)
                primed.discard(id(reader))
                del reader  # the consumer holds what it needs; forget the run
        finally:
            starter.shutdown(wait=True, cancel_futures=True)

    def _batch(self, table: pa.Table | _reads.Gathered, pin: bool) -> PackedBatch:
        if isinstance(table, _reads.Gathered):  # rows of a group's scan: copied once, into the batch's buffer
            batch = gathered_batch(table.picks, self.source.layout)
        else:
            batch = packed_batch(table, self.source.layout)
        return batch.pin_memory() if pin else batch

    def _pin(self) -> bool:
        if self.pin_memory and not torch.cuda.is_available():
            import warnings

            warnings.warn("pin_memory=True but no accelerator is available: batches stay in pageable memory",
                          stacklevel=3)
            self.pin_memory = False
        return self.pin_memory

    def _worker_share(self, info):
        """A DataLoader worker's batches: its share of the position the main process published."""
        pub = self.shared.read(info.num_workers)
        plan = self.plan(pub["world"].with_worker(info.id, info.num_workers), pub["position"], pub["seed"])
        yield from _mixture_epoch.drawn(_reads.read_ahead(self._units(plan, False), self.prefetch),
                                        self.source.layout, self.split, pub["seed"], pub["position"][0])
        self.shared.finished(info.id, info.num_workers, pub["generation"], pub["done"] + 1)

    def _context(self):
        """Start method of this loader's own workers: fork (no imports: ~0.1 s). Through the shard cache they
        read shards from disk (the main process fetches them, see ``__iter__``); without one they read the table
        through Lance helper processes (``forks``) that the main process starts, one per worker, just before
        forking them: a helper imports only Lance and pyarrow (~1.6 s at load 8, vs ~5.7 s for a forkserver
        that imports torch and the loaders, measured), and it does so while the workers start. Where fork
        is missing: forkserver (forked from a clean server that imported the loaders, never used Lance)."""
        import multiprocessing as mp

        if self.multiprocessing_context is not None:
            return self.multiprocessing_context
        if "fork" in mp.get_all_start_methods():
            return mp.get_context("fork")
        if "forkserver" not in mp.get_all_start_methods():
            return mp.get_context("spawn")
        ctx = mp.get_context("forkserver")
        from multiprocessing import forkserver

        preload = list(getattr(forkserver._forkserver, "_preload_modules", None) or [])
        ctx.set_forkserver_preload(list(dict.fromkeys([*preload, "loaders.loader"])))  # before the server starts
        return ctx

    def _dataloader(self, pin: bool):
        if self._workers is not None and self.persistent_workers:
            return self._workers
        self._workers = torch.utils.data.DataLoader(
            self, batch_size=None, num_workers=self.num_workers, collate_fn=_identity, pin_memory=pin,
            multiprocessing_context=self._context(), prefetch_factor=max(1, self.prefetch),
            persistent_workers=self.persistent_workers)
        return self._workers

    def __iter__(self):
        info = get_worker_info()
        if info is not None:  # inside a DataLoader worker: this worker's share, nothing else
            yield from self._worker_share(info)
            return
        self.epoch, self.consumed, self.segment = self._position()
        self._publish(counted=True)
        start, per = self.consumed, self._per_step()
        pin = self._pin()
        if self.num_workers > 0:
            first = []  # batches this process reads itself while its workers start (see MAIN_FIRST)
            if self._workers is None or not self.persistent_workers:  # workers are about to start
                if self.cache is not None:
                    # with this rank's shards already coming: fetched here (Lance runs in this process anyway),
                    # each locked before they fork, so none fetches one again through a helper
                    self.cache.prefetch(_cache.shard_order(self.plan(), self.cache.shard_packs))
                else:
                    if _start_method(self._context()) == "fork":  # their helpers start now, beside them
                        for h in self._helpers:
                            h.close()
                        self._helpers = [_forks.LanceHelper().start_for_fork() for _ in range(self.num_workers)]
                    if not _forks.lance_forbidden():
                        # the workers deal the epoch's order from MAIN_FIRST steps on: what all of them read is
                        # the rest of this rank's plan, exactly as a resume from there (same batches, same order).
                        # Not capped at the split's size: a last, short step is skipped too (whole steps are)
                        first = self.plan()[:MAIN_FIRST]
                        self.shared.set(self.epoch, start + len(first) * per, self.segment, self.seed, self.world,
                                        counted=True)
            source = iter(self._dataloader(pin))  # forks (if fork) before this process reads anything below
            if first:
                source = itertools.chain(_mixture_epoch.drawn(
                    _reads.read_ahead(self._units(first, pin), self.prefetch), self.source.layout, self.split,
                    self.seed, self.epoch, pin), source)
        else:
            source = _mixture_epoch.drawn(_reads.read_ahead(self._units(self.plan(), pin), self.prefetch),
                                          self.source.layout, self.split, self.seed, self.epoch, pin)
        for i, batch in enumerate(source):
            self.consumed = min(start + (i + 1) * per, self.packs)
            yield batch.to(self.device, non_blocking=pin) if self.device is not None else batch
        self.consumed = self.packs
        self._publish(counted=True)


def _start_method(ctx) -> str:
    return ctx if isinstance(ctx, str) else ctx.get_start_method()


def stream(lk, split: str, recipe=None, version=None, batch_packs: int = 1, shuffle: bool | str = True,
           seed: int = 0, epoch: int = 0, rank: int | None = None, world_size: int | None = None,
           num_workers: int = 0, prefetch: int = 2, pin_memory: bool = False, device=None,
           partition: str = "balanced", read_bytes: int | None = None, cache_dir=None, progress: bool = True,
           persistent_workers: bool = True, multiprocessing_context=None, cache_limit=None, shard_packs: int = 16,
           cache_window: int = 4, cache_level: int | None = None) -> Loader:
    """Stream ``split`` of the packed table of ``recipe`` (None = newest) at lake ``version`` (number or tag;
    None = ``lk``'s) as ``PackedBatch`` es of ``batch_packs`` packs.

    ``shuffle``: True (= "random") / False (= "none") or a name from ``loaders.shuffle`` ("blocks:64" reads
    about as fast as table order, where "random" reads rows one batch at a time, at some cost in mixing: see
    its doc); ``rank`` / ``world_size`` default to torch.distributed, then $RANK / $WORLD_SIZE, then 0 / 1.
    ``num_workers`` > 0 reads in DataLoader workers, started once per loader (``persistent_workers``) with
    ``multiprocessing_context`` (default: fork with ``cache_dir``, else forkserver; any start method gives the
    same stream; without ``cache_dir`` the first ``MAIN_FIRST`` batches of an epoch whose workers are starting are
    read in this process meanwhile); ``prefetch`` bounds the batches read ahead (per worker). ``pin_memory`` /
    ``device`` put batches in page-locked memory / on a device (one copy each).
    ``cache_dir``: read through a per-node shard cache there (``loaders.cache``: shards of ``shard_packs`` packs,
    zstd, fetched ``cache_window`` shards ahead of use, once per node, the shard least soon needed evicted past
    ``cache_limit`` bytes, e.g. "20GB"; fast for any shuffle; a batch's columns are then decompressed into one
    buffer each, not views of Lance's buffers). ``cache_level``: the shards' zstd level (default
    ``shardfile.LEVEL``; 0 stores them raw: ~6x the disk, reads at page-cache speed, as MosaicML Streaming keeps
    its local shards). ``progress`` is kept for old callers.
    ``read_bytes`` is accepted for old callers and ignored (with a DeprecationWarning). Raises
    PackedTableNotFound when there is nothing packed, ValueError for an unknown split.
    """
    if read_bytes is not None:
        import warnings

        warnings.warn("stream(read_bytes=...) no longer has an effect: batches are read one take each or a run "
                      "of them with one lazy scan (see loaders.reads)", DeprecationWarning, stacklevel=2)
    name = shuffle if isinstance(shuffle, str) else ("random" if shuffle else "none")
    if version is not None:
        lk = lk.checkout(version)  # raises for an unknown version or one whose data gc deleted
    index = kept = None
    if cache_dir is not None:  # the resolved start of this lake version, kept beside the shards (split_index)
        kept = _split_index.key(lk, recipe, split)
        index = _split_index.load(cache_dir, kept, split, lk.storage_options)
    source, dataset = (index.source, None) if index is not None else resolve_open(lk, recipe)
    loader = Loader(source, split, batch_packs=batch_packs, shuffle=name, seed=seed, epoch=epoch,
                    world=detect(rank, world_size), num_workers=num_workers, prefetch=prefetch,
                    pin_memory=pin_memory, device=device, partition=partition, cache_dir=cache_dir, progress=progress,
                    persistent_workers=persistent_workers, multiprocessing_context=multiprocessing_context,
                    cache_limit=cache_limit, shard_packs=shard_packs, cache_window=cache_window,
                    cache_level=cache_level, index=index, dataset=dataset)
    if kept is not None and index is None:
        _split_index.save(cache_dir, kept, split, loader.split_index())
    return loader
