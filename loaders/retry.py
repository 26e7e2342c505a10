"""Retrying reads on object storage: transient I/O errors back off and try again; the rest raise at once.

Lance raises ``OSError`` ("LanceError(IO): ...") for network and storage failures (a scan's reader: an Arrow
error carrying the same text), after its own client retries (``client_max_retries`` in storage options).
This is the second line: a retry with exponential backoff, long enough to ride out a restarting S3 endpoint
(whole reads here; ``reads.scan`` resumes a scan after its last delivered batch).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")

STATS = {"retries": 0}
"""Process-wide count of retried reads (for tests and benchmarks)."""

_PERMANENT = ("not found", "no such", "does not exist", "nosuchkey", "nosuchbucket", "access denied", "forbidden",
              "permission")


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all; waits ``base * 2**k`` seconds (capped at ``cap``, with +-25% jitter)."""

    attempts: int = 8
    base: float = 0.1
    cap: float = 5.0

    def delay(self, k: int) -> float:
        return min(self.cap, self.base * 2**k) * random.uniform(0.75, 1.25)


def transient(e: BaseException) -> bool:
    """An I/O error worth retrying: OSError (Lance's IO errors too), except missing files / bad requests."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    # a scan's reader hands Lance's IO errors through Arrow's C stream: ArrowInvalid("External error:
    # LanceError(IO): ...")
    lance_io = type(e).__module__.startswith("pyarrow") and "LanceError(IO)" in str(e)
    if not isinstance(e, (OSError, TimeoutError, ConnectionError)) and not lance_io:
        return False
    msg = str(e).lower()
    return not any(p in msg for p in _PERMANENT)


def retrying(fn: Callable[[], T], what: str, backoff: Backoff = Backoff()) -> T:
    """``fn()``, retried on transient errors. Raises the last error, naming ``what``, when tries run out."""
    for k in range(backoff.attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified just below
            if not transient(e):
                raise
            if k == backoff.attempts - 1:
                raise OSError(f"{what}: still failing after {backoff.attempts} tries: {e}") from e
            STATS["retries"] += 1
            time.sleep(backoff.delay(k))
    raise AssertionError("unreachable")
