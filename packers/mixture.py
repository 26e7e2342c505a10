"""Mixtures: several sources (selections of lake episodes) with weights, as one packed table.

The weighting lives in the pack: for every split, each source's samples are repeated or subsampled so that
source ``s`` contributes exactly ``targets(...)[s]`` samples (its share ``w_s / sum(w)`` of the epoch's
``samples``, rounded by largest remainder: never more than one sample off the exact share). The packed table
then holds that multiset once, so *any* full pass of the loader (any shuffle, any world size, resumed or not)
delivers exactly those counts per source: the loader stays unchanged and its state dict stays a few numbers.

Which samples repeat is a pure function of (seed, split, source index, source size): ``multiplicities``.
Without replacement a source is taken whole ``target // n`` times plus ``target % n`` distinct samples of a
seeded permutation; with replacement ``target`` uniform draws. The draw is fixed when the table is packed
(re-pack with another ``seed`` to draw again).

    mixture = {"pusht": 1.0, "aloha": 3.0}                       # source name -> weight
    mixture = {"sources": [{"name": "pusht", "weight": 1.0},
                           {"name": "long", "filter": "length > 100", "weight": 2.0},
                           {"name": "v1", "tag": "release-1", "weight": 1.0}],
               "replacement": False, "samples": None}           # samples: per split epoch (None: natural)
"""

from __future__ import annotations

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

    @property
    def predicate(self) -> str:
        return self.filter if self.filter else "source = '" + self.name.replace("'", "''") + "'"

    def to_dict(self) -> dict:
        return {"name": self.name, "weight": self.weight, "filter": self.filter, "tag": self.tag}


@dataclass(frozen=True)
class Mixture:
    sources: tuple[MixtureSource, ...]
    replacement: bool = False
    samples: int | None = None  # samples per split per epoch; None = the selected sources' natural total

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
        unknown = set(spec) - {"sources", "replacement", "samples"}
        if unknown:
            raise ValueError(f"unknown mixture fields {sorted(unknown)} (known: sources, replacement, samples)")
        src = spec["sources"]
        items = src.items() if isinstance(src, dict) else [(None, s) for s in src]
        return cls(tuple(_source(name, w) for name, w in items), bool(spec.get("replacement", False)),
                   None if spec.get("samples") is None else int(spec["samples"]))

    def to_dict(self) -> dict:
        return {"sources": [s.to_dict() for s in self.sources], "replacement": self.replacement,
                "samples": self.samples}


def _source(name, spec) -> MixtureSource:
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return MixtureSource(str(name), float(spec))
    if not isinstance(spec, dict):
        raise ValueError(f"mixture source {name!r}: expected a weight or a mapping, got {spec!r}")
    unknown = set(spec) - {"name", "weight", "filter", "tag"}
    if unknown:
        raise ValueError(f"mixture source {name or spec.get('name')!r}: unknown fields {sorted(unknown)}")
    name = spec.get("name", name)
    if not name:
        raise ValueError(f"mixture source without a name: {spec!r}")
    tag = spec.get("tag")
    return MixtureSource(str(name), float(spec.get("weight", 1.0)), spec.get("filter"),
                         None if tag is None else str(tag))


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
