"""Mixtures: several sources (selections of lake episodes) with weights, as one packed table.

The weighting lives in the pack: for every split, each source's samples are repeated or subsampled so that
source ``s`` contributes exactly ``targets(...)[s]`` samples (its share ``w_s / sum(w)`` of the epoch's
``samples``, rounded by largest remainder: never more than one sample off the exact share). The packed table
then holds that multiset once, so *any* full pass of the loader (any shuffle, any world size, resumed or not)
delivers exactly those counts per source: the loader stays unchanged and its state dict stays a few numbers.

Which samples repeat is a pure function of (seed, split, source index, source size): ``multiplicities``.
Without replacement a source is taken whole ``target // n`` times plus ``target % n`` distinct samples of a
seeded permutation; with replacement ``target`` uniform draws.

When the draw happens (``draw``):

- ``"pack"`` (default): once, when the table is packed (re-pack with another recipe ``seed`` to draw again).
  The table holds exactly one epoch; the loader needs nothing.
- ``"epoch"``: afresh every epoch, a pure function of (the stream's seed, epoch, split, the table's layout):
  ``epoch_slots``. The table holds a *pool*: every sample of a source ``copies`` times (without replacement
  ``ceil(target / n)``; with replacement ``max_repeats``, default ``ceil(target / n) + 1``), each tagged with
  its slot (``mixture_slot``: source index << 40 | copy * n + sample). Each epoch keeps ``target`` slots per
  source: without replacement copies ``0 .. q-1`` of every sample and copy ``q`` of ``target % n`` samples of a
  seeded permutation (``q = target // n``, as ``multiplicities``); with replacement ``target`` slots drawn
  uniformly without replacement among the pool's (so a sample appears at most ``max_repeats`` times). The
  loader drops the others from each batch (``loaders.mixture_epoch``): every epoch still delivers exactly
  ``target`` samples per source over all ranks, resumes exactly (the draw is recomputed, never stored), and a
  batch is the packs' kept samples (fewer tokens than the packs hold; rarely none).
  ``replacement`` can be set per source.

    mixture = {"pusht": 1.0, "aloha": 3.0}                       # source name -> weight
    mixture = {"sources": [{"name": "pusht", "weight": 1.0},
                           {"name": "long", "filter": "length > 100", "weight": 2.0, "replacement": True},
                           {"name": "v1", "tag": "release-1", "weight": 1.0}],
               "replacement": False, "samples": None,            # samples: per split epoch (None: natural)
               "draw": "epoch", "max_repeats": None}
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MixtureSource:
    """One component: episodes matching ``filter`` (default: ``source = '<name>'``), at lake version ``tag``
    (default: the version packed), weighted ``weight``."""

    name: str
    weight: float = 1.0
    filter: str | None = None
    tag: str | None = None
    replacement: bool | None = None  # None: the mixture's

    @property
    def predicate(self) -> str:
        return self.filter if self.filter else "source = '" + self.name.replace("'", "''") + "'"

    def to_dict(self) -> dict:
        d = {"name": self.name, "weight": self.weight, "filter": self.filter, "tag": self.tag}
        if self.replacement is not None:  # omitted otherwise: older mixtures keep their recipe hash
            d["replacement"] = self.replacement
        return d


@dataclass(frozen=True)
class Mixture:
    sources: tuple[MixtureSource, ...]
    replacement: bool = False
    samples: int | None = None  # samples per split per epoch; None = the selected sources' natural total
    draw: str = "pack"  # "pack": once, at pack time; "epoch": afresh every epoch (module doc)
    max_repeats: int | None = None  # draw "epoch" with replacement: copies of each sample in the pool

    def replacement_of(self, i: int) -> bool:
        r = self.sources[i].replacement
        return self.replacement if r is None else bool(r)

    def __post_init__(self):
        if not self.sources:
            raise ValueError("a mixture needs at least one source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"mixture source names repeat: {names}")
        for s in self.sources:
            if not (isinstance(s.weight, (int, float)) and np.isfinite(s.weight) and s.weight >= 0):
                raise ValueError(f"mixture source {s.name!r}: weight must be a finite number >= 0, got {s.weight!r}")
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("mixture weights sum to 0")
        if self.samples is not None and int(self.samples) <= 0:
            raise ValueError(f"mixture samples must be positive, got {self.samples}")
        if self.draw not in DRAWS:
            raise ValueError(f"mixture draw must be one of {DRAWS}, got {self.draw!r}")
        if self.max_repeats is not None and (self.draw != "epoch" or int(self.max_repeats) < 1):
            raise ValueError(f"mixture max_repeats={self.max_repeats!r} needs draw: epoch and a value >= 1")

    @classmethod
    def parse(cls, spec) -> "Mixture":
        """From ``{name: weight}``, ``{"sources": [...] | {name: weight | {...}}, "replacement", "samples"}``
        or a Mixture. Raises ValueError naming what is wrong."""
        if isinstance(spec, Mixture):
            return spec
        if not isinstance(spec, dict):
            raise ValueError(f"mixture must be a mapping, got {type(spec).__name__}")
        if "sources" not in spec:
            return cls(tuple(_source(name, w) for name, w in spec.items()))
        unknown = set(spec) - {"sources", "replacement", "samples", "draw", "max_repeats"}
        if unknown:
            raise ValueError(f"unknown mixture fields {sorted(unknown)} "
                             "(known: sources, replacement, samples, draw, max_repeats)")
        src = spec["sources"]
        items = src.items() if isinstance(src, dict) else [(None, s) for s in src]
        return cls(tuple(_source(name, w) for name, w in items), bool(spec.get("replacement", False)),
                   None if spec.get("samples") is None else int(spec["samples"]), str(spec.get("draw", "pack")),
                   None if spec.get("max_repeats") is None else int(spec["max_repeats"]))

    def to_dict(self) -> dict:
        d = {"sources": [s.to_dict() for s in self.sources], "replacement": self.replacement,
             "samples": self.samples}
        if self.draw != "pack":  # omitted at the default: older mixtures keep their recipe hash
            d.update(draw=self.draw, max_repeats=self.max_repeats)
        return d


DRAWS = ("pack", "epoch")


def _source(name, spec) -> MixtureSource:
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return MixtureSource(str(name), float(spec))
    if not isinstance(spec, dict):
        raise ValueError(f"mixture source {name!r}: expected a weight or a mapping, got {spec!r}")
    unknown = set(spec) - {"name", "weight", "filter", "tag", "replacement"}
    if unknown:
        raise ValueError(f"mixture source {name or spec.get('name')!r}: unknown fields {sorted(unknown)}")
    name = spec.get("name", name)
    if not name:
        raise ValueError(f"mixture source without a name: {spec!r}")
    tag = spec.get("tag")
    rep = spec.get("replacement")
    return MixtureSource(str(name), float(spec.get("weight", 1.0)), spec.get("filter"),
                         None if tag is None else str(tag), None if rep is None else bool(rep))


# --- pure functions -----------------------------------------------------------------------------------------

def targets(weights, total: int) -> np.ndarray:
    """Samples per source for an epoch of ``total``: shares of ``weights`` rounded by largest remainder
    (ties to the earlier source), summing to ``total``; each within one sample of its exact share."""
    w = np.asarray(weights, np.float64)
    exact = w / w.sum() * int(total)
    out = np.floor(exact).astype(np.int64)
    left = int(total) - int(out.sum())
    if left > 0:
        out[np.argsort(-(exact - out), kind="stable")[:left]] += 1
    return out


def multiplicities(n: int, target: int, replacement: bool, seed: int, split: str, index: int) -> np.ndarray:
    """How often each of a source's ``n`` samples (in a stable order) appears in a split's epoch of ``target``
    samples: int64 (n,) summing to ``target``. Pure in (n, target, replacement, seed, split, index)."""
    if n == 0:
        if target:
            raise ValueError(f"mixture source {index} has no samples in split {split!r} but a weight above 0")
        return np.zeros(0, np.int64)
    rng = np.random.Generator(np.random.PCG64([int(seed), zlib.crc32(split.encode()), int(index)]))
    if replacement:
        return np.bincount(rng.integers(0, n, size=int(target)), minlength=n).astype(np.int64)
    out = np.full(n, int(target) // n, np.int64)
    out[rng.permutation(n)[: int(target) % n]] += 1
    return out


# --- the per-epoch draw (draw: "epoch") ---------------------------------------------------------------------

SLOT_BITS = 40  # mixture_slot = source index << SLOT_BITS | copy * n + sample


def pool_copies(n: int, target: int, replacement: bool, max_repeats: int | None = None) -> int:
    """How many times each of a source's ``n`` samples is packed for a per-epoch draw of ``target``."""
    if n == 0 or target == 0:
        return 0
    need = math.ceil(target / n)
    if not replacement:
        return need
    return max(need, int(max_repeats)) if max_repeats is not None else need + 1


def epoch_slots(n: int, copies: int, target: int, replacement: bool, seed: int, epoch: int, split: str,
                index: int) -> np.ndarray:
    """Which of a source's ``n * copies`` pool slots (slot = copy * n + sample) epoch ``epoch`` keeps: bool
    (n * copies,) with exactly ``target`` set. Pure in its arguments (PCG64 of seed, epoch, split, index)."""
    if target > n * copies:
        raise ValueError(f"mixture source {index}: {target} samples per epoch but the pool holds {n} x {copies}")
    keep = np.zeros(n * copies, bool)
    if target == 0:
        return keep
    rng = np.random.Generator(np.random.PCG64([int(seed), int(epoch), zlib.crc32(split.encode()), int(index), 1]))
    if replacement:
        keep[rng.choice(n * copies, size=int(target), replace=False)] = True
        return keep
    q, r = divmod(int(target), n)
    keep[: q * n] = True
    keep[q * n + rng.permutation(n)[:r]] = True
    return keep


def pool_slots(index: int, base: int, n: int, copies: np.ndarray) -> np.ndarray:
    """``mixture_slot`` of every packed copy of one episode's samples (sample ``base + j`` of its source,
    packed ``copies[j]`` times, copies back to back): int64."""
    copies = np.asarray(copies, np.int64)
    sample = np.repeat(base + np.arange(len(copies), dtype=np.int64), copies)
    first = np.repeat(np.cumsum(copies) - copies, copies)
    copy = np.arange(len(sample), dtype=np.int64) - first
    return (np.int64(index) << SLOT_BITS) | (copy * n + sample)
