"""Reading Lance from processes that were forked: DataLoader workers under ``fork`` (LeRobot's default).

Lance's runtime does not survive ``fork()``: a child of a process that had opened a Lance dataset segfaults or
hangs in ``take``, even on a dataset it opens itself (measured here: 2 forks in 3 crash after the parent opened a
dataset, all after it read one; a parent that only imported ``lance`` forks safely). So:

- ``lance_forbidden()`` says whether this process is such a child: a fork hook records, in the parent just
  before each fork, whether Lance's runtime threads were running; the child inherits the answer (and hands it on
  to its own children).
- Such a process reads through a ``LanceHelper``: a clean Python process (started with exec, never forked from
  us) that opens the datasets and answers takes. Requests go as JSON lines, answers come back as Arrow IPC
  (length-prefixed; no pickle either way), so a batch costs one pipe transfer. The helper imports only lance and
  pyarrow (about half a second), once per worker: with persistent workers, once per run.

Every dataset handle is per process (``ProcessLocal``): one inherited through a fork is never used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa

_HELPER = Path(__file__).with_name("_lance_helper.py")
_fork = {"pending": False, "forbidden": False, "using": False}


def _lance_running() -> bool:
    """Has this process started Lance's runtime? (its threads are named lance-*; without /proc: lance imported)"""
    if "lance" not in sys.modules:
        return False
    try:
        names = [Path(f"/proc/self/task/{t}/comm").read_text() for t in os.listdir("/proc/self/task")]
    except OSError:
        return True
    return any(n.startswith(("lance", "tokio")) for n in names)


def _before_fork() -> None:
    _fork["pending"] = _fork["forbidden"] or _fork["using"] or _lance_running()


def using_lance() -> None:
    """Say that this process is about to use Lance (from a side thread, say): its children forked from now on
    must not use it, even before Lance's threads show up."""
    _fork["using"] = True


def _after_fork_in_child() -> None:
    _fork["forbidden"] = _fork["pending"]
    _fork["using"] = False


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def lance_forbidden() -> bool:
    """True in a process forked from one whose Lance runtime had started: Lance must not be used here."""
    return _fork["forbidden"]


class ProcessLocal:
    """A value made lazily by ``make()`` in each process that asks for it (a fork's child makes its own, and
    pickling drops it)."""

    def __init__(self, make, value=None):
        """``value``: this process's value, already made (None: made on first use)."""
        self._make, self._pid, self._value = make, None, None
        if value is not None:
            self._value, self._pid = value, os.getpid()

    def get(self):
        if self._pid != os.getpid():
            self._value, self._pid = self._make(), os.getpid()
        return self._value

    def __getstate__(self):
        return {"_make": self._make, "_pid": None, "_value": None}


def _wide_pipe(f, size: int = 1 << 20) -> None:
    """Grow a pipe's buffer (Linux, 64 KiB by default) so that an answer of tens of MiB crosses it in fewer
    writer/reader switches; where that is not allowed, the pipe stays as it is."""
    try:
        import fcntl

        fcntl.fcntl(f.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass


class HelperError(RuntimeError):
    """The helper process failed a request (its message says why) or died."""


def _helper_env() -> dict:
    """The helper's environment: this process's, with glibc keeping freed memory for reuse (unless the user set
    these). The helper decodes every group it reads into fresh buffers; with glibc's defaults freed ones go back
    to the kernel and the next read faults every page in again (on this VM ~4 us a page: ~35% of a W=2 read's
    page faults were the helper's, measured with perf). Its own process, so nothing else is affected; what it
    keeps is bounded by its largest reads (a group, ``reads.GROUP_BYTES``)."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(256 * 2**20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1024 * 2**20))
    return env


class LanceHelper:
    """A clean process that reads Lance datasets for this one (see the module doc). Thread-safe (one request at a
    time); started on first use, stopped with this process (or ``close()``)."""

    def __init__(self):
        self._proc = None
        self._pid = os.getpid()  # the process that started it (a forked child uses it without polling)
        self._for_forks = False
        self._lock = threading.Lock()

    def start_for_fork(self) -> "LanceHelper":
        """Start the process now, for a worker about to be forked (its imports then overlap the fork and the
        worker's start; the worker uses it as is). Closing it here then stops it at once: the worker holds
        its pipe too, so closing ours would not end it."""
        with self._lock:
            self._start()
            self._for_forks = True
        return self

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._pid != os.getpid():
            return self._proc  # started by the parent for this forked process: not our child, cannot poll it
        if self._proc is None or self._proc.poll() is not None:
            # -P: no script directory on sys.path (the helper sits among the loaders' modules); -s: no user site
            self._proc = subprocess.Popen([sys.executable, "-P", "-s", str(_HELPER)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, close_fds=True, env=_helper_env())
            _wide_pipe(self._proc.stdout)
            self._pid = os.getpid()
        return self._proc

    def _ask(self, request: dict) -> pa.Table:
        with self._lock:
            proc = self._start()
            try:
                proc.stdin.write((json.dumps(request) + "\n").encode())
                proc.stdin.flush()
                header = proc.stdout.readline()
            except (BrokenPipeError, OSError) as e:
                raise HelperError(f"Lance helper process died ({e})") from e
            if not header:
                raise HelperError(f"Lance helper process exited with {proc.wait()}")
            head = json.loads(header)
            if "error" in head:
                raise HelperError(head["error"])
            data = pa.allocate_buffer(head["nbytes"])  # Arrow's allocator reuses it: no fresh pages per answer
            view, got = memoryview(data), 0
            while got < len(view):
                n = proc.stdout.readinto(view[got:])
                if not n:
                    raise HelperError(f"Lance helper process exited with {proc.wait()} while answering")
                got += n
        return pa.ipc.open_stream(data).read_all()

    def take(self, uri: str, version: int | None, storage_options: dict | None, rows, columns: list[str] | None,
             ) -> pa.Table:
        """``lance.dataset(uri, version).take(rows, columns)``, read in the helper."""
        return self._ask({"op": "take", "uri": uri, "version": version, "storage_options": storage_options,
                          "rows": [int(r) for r in rows], "columns": columns})

    def scan(self, uri: str, version: int | None, storage_options: dict | None, addrs, columns: list[str],
             batch_size: int, io_buffer_size: int) -> list[pa.RecordBatch]:
        """The rows at sorted row addresses ``addrs`` (allow-list scan, with ``_rowaddr``) in record batches of
        ``batch_size``, read in the helper."""
        t = self._ask({"op": "scan", "uri": uri, "version": version, "storage_options": storage_options,
                       "addrs": [int(a) for a in addrs], "columns": columns, "batch_size": int(batch_size),
                       "io_buffer_size": int(io_buffer_size)})
        return t.to_batches()

    def source(self, uri: str, version: int | None, storage_options: dict | None, columns: list[str]):
        """How a ``reads.Group`` reads ``columns`` through this helper: (take, scan), as ``reads.lance_source``."""
        from . import reads

        return (lambda rows: self.take(uri, version, storage_options, rows, columns),
                lambda addrs: self.scan(uri, version, storage_options, addrs, columns, reads.GROUP_ROWS,
                                        reads.GROUP_BYTES))

    def blobs(self, uri: str, version: int | None, storage_options: dict | None, column: str, ids) -> list[pa.Buffer]:
        """The bytes of blob column ``column`` at row ids ``ids`` (``take_blobs``), read in the helper."""
        t = self._ask({"op": "blobs", "uri": uri, "version": version, "storage_options": storage_options,
                       "column": column, "ids": [int(i) for i in ids]})
        return [v.as_buffer() for v in t.column("data").combine_chunks()]

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._pid != os.getpid():  # the parent's: it stops it
                self._proc = None
                return
            if self._proc is not None and self._for_forks:
                self._proc.kill()
                self._proc.wait()
                self._proc = None
                return
            if self._proc is not None and self._proc.poll() is None:
                self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()


_helper = ProcessLocal(LanceHelper)


def helper() -> LanceHelper:
    """This process's Lance helper (one per process, started on first use)."""
    return _helper.get()
