"""Several embodiments in one packed table (mixtures): per-embodiment normalization, dims padded to the widest.

An embodiment is a ``robot_type``. Each gets its own layout entry (``layout["embodiments"][robot_type]``): its
state/action features and dims and normalization constants from the stats of *its* episodes in the mixture,
with its ``lake.embodiments()`` modality (GR00T slices or the default layout) and sources. A sample's state and
actions are normalized with its embodiment's constants, then zero-padded to the table's ``state_dim`` /
``action_dim`` (the widest embodiment's), as π0 pads every robot to one action width. The top-level ``norm`` /
``*_features`` / ``*_dims`` are the first embodiment's (sorted by name), so single-embodiment readers work as
before.
"""

from __future__ import annotations

import numpy as np

from .samples import Samples, make_layout

KEYS = ("state_features", "state_dims", "state_dim", "action_features", "action_dims", "action_dim", "norm")


def embodiment_layout(lk, recipe, episodes: list[dict], fps: float, vocab_size: int) -> dict:
    """The packed table's layout for ``episodes`` (rows with robot_type, source, episode_id)."""
    from lake import _stats

    by: dict[str, list[dict]] = {}
    for e in episodes:
        by.setdefault(e.get("robot_type") or "unknown", []).append(e)
    if not by:
        raise ValueError("the mixture selects no samples")
    features_of = lk.features()
    stats_of = {r["episode_id"]: r["stats"] for r in lk.episodes(columns=["episode_id", "stats"]).to_pylist()}
    modality = {s: emb.to_dict() for s, emb in lk.embodiments().items()}
    per: dict[str, dict] = {}
    for robot in sorted(by):
        sources = sorted({e["source"] for e in by[robot]})
        features: dict = {}
        for s in sources:
            features.update(features_of.get(s, {}))
        stats = _stats.aggregate([_stats.from_rows(stats_of[e["episode_id"]]) for e in by[robot]])
        lay = make_layout(recipe.resolved(features), features, stats, fps, vocab_size)
        per[robot] = {**{k: lay[k] for k in KEYS}, "sources": sources, "modality": modality.get(sources[0]),
                      "cameras": lay["cameras"], "_layout": lay}
    first = per[sorted(per)[0]]
    for robot, p in per.items():
        if p["cameras"] != first["cameras"]:
            raise ValueError(f"embodiments {sorted(per)[0]!r} and {robot!r} have different cameras "
                             f"({first['cameras']} vs {p['cameras']}): name the shared ones in recipe.cameras")
    layout = dict(first["_layout"])
    layout["state_dim"] = max(p["state_dim"] for p in per.values())
    layout["action_dim"] = max(p["action_dim"] for p in per.values())
    layout["embodiments"] = {r: {k: v for k, v in p.items() if k not in ("_layout", "cameras")} for r, p in per.items()}
    return layout


def with_embodiment(layout: dict, robot_type: str | None) -> dict:
    """``layout`` with one embodiment's features, dims and normalization on top."""
    emb = layout["embodiments"].get(robot_type or "unknown")
    if emb is None:
        raise ValueError(f"robot type {robot_type!r} is not an embodiment of this packing "
                         f"({sorted(layout['embodiments'])})")
    return {**layout, **{k: emb[k] for k in KEYS}}


def group_columns(lk, episodes: list[dict], layout: dict, read) -> dict:
    """Frame columns of ``episodes``, each embodiment's own features (``read`` = ``_job._group_columns``)."""
    out: dict = {}
    by: dict[str, list[dict]] = {}
    for e in episodes:
        by.setdefault(e.get("robot_type") or "unknown", []).append(e)
    for robot, eps in by.items():
        lay = with_embodiment(layout, robot)
        out.update(read(lk, eps, list(dict.fromkeys(lay["state_features"] + lay["action_features"]))))
    return out


def _pad(x: np.ndarray | None, width: int) -> np.ndarray | None:
    if x is None or x.shape[-1] == width:
        return x
    pad = np.zeros((*x.shape[:-1], width - x.shape[-1]), x.dtype)
    return np.concatenate([x, pad], axis=-1)


def pad_samples(s: Samples, layout: dict) -> Samples:
    """State / actions (and action bins) zero-padded to the table's widths."""
    return Samples(s.episode, s.frame, s.image, s.text, _pad(s.state, layout["state_dim"]), s.state_pad,
                   _pad(s.actions, layout["action_dim"]), s.action_pad, _pad(s.action_bins, layout["action_dim"]))
