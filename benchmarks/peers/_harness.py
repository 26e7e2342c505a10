"""Timing harness shared by the LeRobot peer script (.venv-peers) and the lake side (.venv): stdlib + psutil.

``measure(make_iter, count, warmup, batches)`` takes ``warmup`` batches from a fresh iterator (DataLoader
worker start-up, decoder caches, page cache), then times ``batches`` more (or up to the end of the epoch) and
reports wall seconds, CPU seconds of this process and of its child processes (DataLoader workers; the
children alive at both ends of the window), and peak RSS (VmHWM) of this process and of each worker.
"""

from __future__ import annotations

import os
import time

import psutil


def _status(pid: int, key: str) -> int:
    """A /proc/<pid>/status size field in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":")), 0)
    except OSError:
        return 0


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _children_cpu(me: psutil.Process) -> dict[int, float]:
    out = {}
    for c in me.children(recursive=True):
        try:
            out[c.pid] = _cpu(c)
        except psutil.Error:
            pass
    return out


def _reaped_cpu(me: psutil.Process) -> float:
    t = me.cpu_times()
    return t.children_user + t.children_system


def _pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between the processes that map them)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def measure(make_iter, count, warmup: int, batches: int) -> dict:
    """Run one round; ``count(batch)`` gives the samples in a batch. Returns a dict of figures."""
    me = psutil.Process()
    it = iter(make_iter())
    t0 = time.perf_counter()
    warm_samples = 0
    for _ in range(warmup):
        warm_samples += count(next(it))
    warm_s = time.perf_counter() - t0
    kids0, reaped0, cpu0, t0 = _children_cpu(me), _reaped_cpu(me), _cpu(me), time.perf_counter()
    samples = n = 0
    for b in it:
        samples += count(b)
        n += 1
        if n >= batches:
            break
    wall = time.perf_counter() - t0
    cpu_self = _cpu(me) - cpu0
    kids1 = _children_cpu(me)
    # children alive at the end: their CPU since the start; children that ended (and were reaped) in between:
    # the reaped total, less what they had used before the window
    cpu_kids = sum(kids1[p] - kids0.get(p, 0.0) for p in kids1)
    cpu_kids += _reaped_cpu(me) - reaped0 - sum(kids0[p] for p in kids0 if p not in kids1)
    children = me.children(recursive=True)
    worker_peaks = [_status(c.pid, "VmHWM") for c in children]
    pss = _pss(os.getpid()) + sum(_pss(c.pid) for c in children)
    del it
    return {
        "samples": samples, "batches": n, "wall_s": wall, "cpu_s": cpu_self + cpu_kids, "cpu_main_s": cpu_self,
        "cpu_workers_s": cpu_kids, "samples_per_s": samples / wall if wall else 0.0,
        "samples_per_cpu_s": samples / (cpu_self + cpu_kids) if cpu_self + cpu_kids else 0.0,
        "warmup_batches": warmup, "warmup_samples": warm_samples, "warmup_s": warm_s,
        "peak_rss_main": _status(os.getpid(), "VmHWM"), "peak_rss_workers": worker_peaks, "pss_end": pss,
    }
