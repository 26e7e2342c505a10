"""A mixture's plan on the driver: which episodes each source selects, and how often each sample is packed.

Pure given the lake version: the selection comes from SQL filters (and tags) over the episodes table, the
draw from ``mixture.multiplicities``. The lineage returned names every source, the lake version it was read
at, its weight and its sample counts per split (natural and drawn).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

from .mixture import multiplicities, pool_copies, targets

_COLS = ["episode_id", "split", "length", "task", "fps", "frames_table", "cameras", "robot_type", "source",
         "source_uri"]


def _select(lk, src) -> tuple[list[dict], int]:
    """Episodes of one mixture source (sorted by id) and the lake version they were chosen at."""
    if src.tag is None:
        rows, version = lk.episodes(filter=src.predicate, columns=_COLS).to_pylist(), lk.version
    else:  # the episodes the filter chose at the tagged version, as this version holds them
        old = lk.checkout(src.tag)
        version = old.version
        at_tag = set(old.episodes(filter=src.predicate, columns=["episode_id"])["episode_id"].to_pylist())
        now = {r["episode_id"]: r for r in lk.episodes(columns=_COLS).to_pylist()}
        gone = sorted(at_tag - set(now))
        if gone:
            raise ValueError(f"mixture source {src.name!r}: {len(gone)} episodes of tag {src.tag!r} are no longer "
                             f"in lake version {lk.version} (e.g. {gone[0]})")
        rows = [now[e] for e in at_tag]
    if not rows:
        raise ValueError(f"mixture source {src.name!r} selects no episodes (filter {src.predicate!r}"
                         f"{f', tag {src.tag!r}' if src.tag else ''}) in lake version {lk.version}")
    return sorted(rows, key=lambda r: r["episode_id"]), version


def plan_mixture(lk, recipe, eps: pa.Table) -> tuple[list[dict], dict]:
    """(episode rows to pack, each with ``mult``: per-sample counts, and the lineage) for ``recipe.mixture``."""
    mix, stride = recipe.mixture, recipe.frame_stride
    chosen, versions, owner = [], [], {}
    for i, src in enumerate(mix.sources):
        rows, version = _select(lk, src)
        for r in rows:
            if r["episode_id"] in owner:
                raise ValueError(f"episode {r['episode_id']} is in mixture sources {owner[r['episode_id']]!r} and "
                                 f"{src.name!r}: make their filters disjoint")
            owner[r["episode_id"]] = src.name
        chosen.append(rows)
        versions.append(version)
    splits = sorted({r["split"] for rows in chosen for r in rows})
    out: list[dict] = []
    counts = [{"samples": {}, "target": {}, **({"copies": {}} if mix.draw == "epoch" else {})} for _ in mix.sources]
    for split in splits:
        per = [[r for r in rows if r["split"] == split] for rows in chosen]
        n_samples = [[-(-int(r["length"]) // stride) for r in rows] for rows in per]
        sizes = np.array([sum(n) for n in n_samples], np.int64)
        weights = np.array([s.weight if size else 0.0 for s, size in zip(mix.sources, sizes)])
        if weights.sum() <= 0:
            continue
        total = int(mix.samples) if mix.samples is not None else int(sizes.sum())
        want = targets(weights, total)
        for i, (rows, ns) in enumerate(zip(per, n_samples)):
            counts[i]["samples"][split], counts[i]["target"][split] = int(sizes[i]), int(want[i])
            if not rows:
                continue
            if mix.draw == "epoch":  # a pool of copies; each epoch keeps its own `target` of them (loader)
                copies = pool_copies(int(sizes[i]), int(want[i]), mix.replacement_of(i), mix.max_repeats)
                counts[i]["copies"][split] = copies
                m = np.full(int(sizes[i]), copies, np.int64)
            else:
                m = multiplicities(int(sizes[i]), int(want[i]), mix.replacement_of(i), recipe.seed, split, i)
            bounds = np.concatenate([[0], np.cumsum(ns)])
            for r, a, b in zip(rows, bounds[:-1], bounds[1:]):
                if m[a:b].any():
                    out.append({**{k: r[k] for k in _COLS}, "mult": m[a:b].tolist(),
                                "mixture_source": mix.sources[i].name,
                                **({"slot": [i, int(a), int(sizes[i])]} if mix.draw == "epoch" else {})})
    ids = json.dumps([[r["episode_id"] for r in rows] for rows in chosen])
    selection = hashlib.sha256(ids.encode()).hexdigest()[:16]
    lineage = {
        "lake_version": lk.version, "replacement": mix.replacement, "samples": mix.samples, "seed": recipe.seed,
        "selection": selection, "draw": mix.draw,
        "sources": [{**src.to_dict(), "replacement": mix.replacement_of(i), "lake_version": versions[i],
                     "episodes": len(chosen[i]),
                     "lake_sources": sorted({r["source"] or "" for r in chosen[i]}),
                     "source_uris": sorted({r["source_uri"] or "" for r in chosen[i]}), **counts[i]}
                    for i, src in enumerate(mix.sources)],
    }
    return out, lineage
