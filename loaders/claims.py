"""Claims: what each process reading through a node cache holds and needs next (see ``cache``'s module doc).

A claim is two files under ``DIR/.claims``: ``NAME.plan`` (the shards of every batch, written once) and
``NAME.json`` (where the process is, rewritten as it reads; its mtime is the heartbeat). Whoever evicts reads
every live claim (``live_claims``) and evicts the shards needed least soon, never held ones.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np

CLAIMS = ".claims"  # folder of the claim files, under cache_dir
LIMITED = ".limited"  # under cache_dir: a cache with a limit (an evictor) has opened it (see ``Claim._write``)
CLAIM_TTL = 300.0  # s: a claim not refreshed for this long is dead, whatever its pid (refreshed every batch)
CLAIM_HORIZON = 1024  # shards a claim announces ahead: enough to order evictions, small to rewrite per batch
_CLAIM_IDS = itertools.count()


class Claim:
    """This process's announcement for one iteration over ``batches`` (see the module doc), as two files:
    ``NAME.plan``, the shards of every batch in order (int64: batches, their offsets, the shards; written
    once), and ``NAME.json``, where the process is in it (the oldest batch not finished, the last one handed
    out, its window, its pinned shards; rewritten, small, each time a batch is handed out: its mtime is the
    heartbeat). Whoever evicts works out from both what the process holds and needs next. Removed at the
    end of the iteration."""

    def __init__(self, cache, batches: list[np.ndarray]):
        self.cache = cache
        sizes = np.fromiter((len(b) for b in batches), dtype=np.int64, count=len(batches))
        packs = np.concatenate(batches).astype(np.int64) if batches else np.empty(0, np.int64)
        shards = packs // cache.shard_packs
        batch = np.repeat(np.arange(len(batches)), sizes)
        keep = np.r_[True, (shards[1:] != shards[:-1]) | (batch[1:] != batch[:-1])] if len(shards) else []
        flat, per = shards[keep], np.bincount(batch[keep], minlength=len(batches))  # a batch's packs ascend
        offsets = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
        stem = cache.root / CLAIMS / f"{socket.gethostname()}-{os.getpid()}-{next(_CLAIM_IDS)}"
        self.path, self.plan = stem.with_suffix(".json"), stem.with_suffix(".plan")
        tmp = self.plan.with_name(f".{self.plan.name}.tmp")
        np.concatenate([[len(batches)], offsets, flat]).astype("<i8").tofile(tmp)
        os.replace(tmp, self.plan)
        self.lock = threading.Lock()
        self.open: set[int] = set()  # batches handed out, not finished
        self.last = -1  # last batch handed out

    def handed(self, b: int) -> None:
        """(The iterating thread only: the one writer of the position.)"""
        with self.lock:
            self.open.add(b)
            self.last = b
            start = min(self.open) if self.open else self.last + 1
        self._write(start, max(b, start))

    def done(self, b: int) -> None:
        with self.lock:  # published with the next batch handed out (one small write per batch: ~0.1 ms)
            self.open.discard(b)

    def _write(self, start: int, cur: int) -> None:
        """Publish the position; the file I/O outside ``lock``, so readers finishing batches never wait for it
        (a rename can wait for the file system's journal while it writes: several ms, measured). Not written
        while no cache with a limit has opened the folder: nobody would read it (see the module doc)."""
        if self.cache.limit is None and not (self.cache.root / LIMITED).exists():
            return
        with self.cache._lock:
            pinned = list(self.cache._pinned)
        doc = {"host": socket.gethostname(), "pid": os.getpid(), "key": self.cache.key, "start": start,
               "cur": cur, "window": self.cache.window, "pinned": pinned}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(doc).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)  # readers see a whole position, old or new

    def remove(self) -> None:
        with self.lock:
            self.path.unlink(missing_ok=True)
            self.plan.unlink(missing_ok=True)


_PLANS: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # claim plan file -> (offsets, shards): written once


def _plan_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, shards) of a claim's plan file; ValueError if it does not check out."""
    key = str(path)
    if key not in _PLANS:
        a = np.fromfile(path, dtype="<i8")
        n = int(a[0]) if len(a) else -1
        if n < 0 or len(a) < n + 2 or int(a[n + 1]) != len(a) - n - 2 or np.any(np.diff(a[1:n + 2]) < 0):
            raise ValueError(f"{path}: not a claim plan")
        if len(_PLANS) > 256:
            _PLANS.clear()
        _PLANS[key] = (a[1:n + 2], a[n + 2:])
    return _PLANS[key]


def _needs(offsets: np.ndarray, shards: np.ndarray, start: int, cur: int, window: int) -> tuple[list, list]:
    """(shards in order of next use from batch ``start``, up to ``CLAIM_HORIZON``; those held: the shards of
    batches ``start..cur`` and ``window`` more)."""
    batches = len(offsets) - 1
    lo = int(offsets[min(max(start, 0), batches)])
    ahead = shards[lo:lo + 4 * CLAIM_HORIZON]
    _, first = np.unique(ahead, return_index=True)
    nxt = ahead[np.sort(first)][:CLAIM_HORIZON]
    now = int(offsets[min(max(cur + 1, 0), batches)]) - lo
    k = len(np.unique(ahead[:max(now, 0)])) + max(window, 0)
    return nxt.tolist(), nxt[:k].tolist()


def live_claims(root) -> list[dict]:
    """The claims of live processes under cache folder ``root``: ``key``, ``hold`` (shards never to evict) and
    ``next`` (shards in order of next use). Those of dead processes (same host, pid gone) or not refreshed for
    ``CLAIM_TTL`` seconds are removed. A claim whose files do not check out is skipped (claims only order
    evictions), and removed once stale."""
    out, host, now = [], socket.gethostname(), time.time()
    folder = Path(root) / CLAIMS
    for p in [*folder.glob(".*.tmp"), *folder.glob("*.plan")]:  # half-written claims, plans without a position
        try:
            if now - p.stat().st_mtime > CLAIM_TTL and not (p.suffix == ".plan" and p.with_suffix(".json").exists()):
                p.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
    for p in folder.glob("*.json"):
        try:
            age = now - p.stat().st_mtime
            doc = json.loads(p.read_text())
            ok = (isinstance(doc, dict) and isinstance(doc.get("pid"), int) and isinstance(doc.get("key"), str)
                  and all(isinstance(doc.get(f), int) for f in ("start", "cur", "window"))
                  and isinstance(doc.get("pinned"), list))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            doc, ok = None, False
        if age > CLAIM_TTL or (ok and doc.get("host") == host and not _alive(doc["pid"])):
            p.unlink(missing_ok=True)
            p.with_suffix(".plan").unlink(missing_ok=True)
            _PLANS.pop(str(p.with_suffix(".plan")), None)
            continue
        if not ok:
            continue
        try:
            nxt, hold = _needs(*_plan_of(p.with_suffix(".plan")), doc["start"], doc["cur"], doc["window"])
        except (OSError, ValueError):  # the plan is gone (the claim just ended) or damaged
            continue
        out.append({"key": doc["key"], "pid": doc["pid"], "hold": hold + doc["pinned"], "next": nxt})
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
