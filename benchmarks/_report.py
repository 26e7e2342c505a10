"""Shared by the benchmarks: machine description, peak-RSS sampling across Ray workers, RESULTS.md sections."""

from __future__ import annotations

import platform
import re
import threading
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    import os

    return f"{os.cpu_count()}-core {cpu_model()}, no GPU, Python {platform.python_version()}, {date.today().isoformat()}"


def record(section: str, body: str) -> None:
    """Replace (or append) ``## {section}`` in RESULTS.md; other sections are left alone."""
    head = f"## {section}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{head}\n\n{body.strip()}\n"
    m = re.search(rf"^{re.escape(head)}[ \t]*$", text, flags=re.M)
    if m:
        nxt = re.search(r"^## ", text[m.end():], flags=re.M)
        end = m.end() + nxt.start() if nxt else len(text)
        text = text[:m.start()] + block + ("\n" + text[end:] if nxt else "")
    else:
        text = text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)


class Sampler:
    """A context manager running ``self._sample()`` on a daemon thread until exit (``self._stop`` is set then)."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()

    def _sample(self):
        raise NotImplementedError

    def __enter__(self):
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


class PeakRSS(Sampler):
    """Samples the RSS of this process and of every Ray worker process ("ray::...") while active.

    ``.driver`` and ``.workers`` are peaks in bytes (workers: the peak of their *sum*); ``.largest`` is the
    largest single worker, ``.processes`` the most worker processes seen at once."""

    def __init__(self, interval: float = 0.1):
        super().__init__(interval)
        self.driver, self.workers, self.largest, self.processes = 0, 0, 0, 0

    def _sample(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, me.memory_info().rss)
                sizes = []
                for p in psutil.process_iter(["name", "cmdline"]):
                    cmd = " ".join(p.info["cmdline"] or [])
                    if cmd.startswith("ray::") and "IDLE" not in cmd:
                        try:
                            sizes.append(p.memory_info().rss)
                        except psutil.Error:
                            pass
                self.workers = max(self.workers, sum(sizes))
                self.largest = max([self.largest, *sizes])
                self.processes = max(self.processes, len(sizes))
            except Exception:  # a process vanished mid-iteration
                pass
            time.sleep(self.interval)


def mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"
