"""Where every trajectory went: the conservation account of a run.

Every trajectory the trainer acknowledged is, at the end, in exactly one of: consumed (in an optimizer
step), dropped as stale (older than ``max_staleness`` versions when its turn came), or dropped unused (still
buffered, or in an incomplete GRPO group, when training ended). Nothing is used silently or lost silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Ledger:
    received: tuple[str, ...]
    consumed: tuple[str, ...]
    dropped_stale: tuple[str, ...]
    dropped_unused: tuple[str, ...]
    staleness: tuple[int, ...]  # per consumed trajectory: trainer version - oldest step's version

    def problems(self) -> list[str]:
        """Empty when the account balances; otherwise what is wrong (duplicates, losses, inventions)."""
        out = []
        for name in ("received", "consumed", "dropped_stale", "dropped_unused"):
            dup = [k for k, n in Counter(getattr(self, name)).items() if n > 1]
            if dup:
                out.append(f"{name} has duplicates: {dup[:5]}")
        outcomes = Counter(self.consumed) + Counter(self.dropped_stale) + Counter(self.dropped_unused)
        twice = [k for k, n in outcomes.items() if n > 1]
        if twice:
            out.append(f"trajectories with two outcomes: {twice[:5]}")
        rec = set(self.received)
        lost, invented = rec - set(outcomes), set(outcomes) - rec
        if lost:
            out.append(f"{len(lost)} received trajectories neither consumed nor dropped: {sorted(lost)[:5]}")
        if invented:
            out.append(f"{len(invented)} outcomes for trajectories never received: {sorted(invented)[:5]}")
        return out

    def check(self) -> "Ledger":
        """Raise RuntimeError if the account does not balance."""
        p = self.problems()
        if p:
            raise RuntimeError("trajectory ledger does not balance: " + "; ".join(p))
        return self
