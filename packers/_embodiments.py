"""Several embodiments in one packed table (mixtures): per-embodiment normalization, dims padded to the widest.

An embodiment is a ``robot_type``. Each gets its own layout entry (``layout["embodiments"][robot_type]``): its
state/action features and dims and normalization constants from the stats of *its* episodes in the mixture
(``lk.stats`` over them: exact moments, sketch quantiles, as a single-source pack normalizes),
with its ``lake.embodiments()`` modality (GR00T slices or the default layout) and sources. A sample's state and
actions are normalized with its embodiment's constants, then zero-padded to the table's ``state_dim`` /
``action_dim`` (the widest embodiment's), as π0 pads every robot to one action width. The top-level ``norm`` /
``*_features`` / ``*_dims`` are the first embodiment's (sorted by name), so single-embodiment readers work as
before.

Cameras are matched by *view*: every source's embodiment names its camera views (a GR00T modality.json's
``video`` keys, e.g. ``"top": {"original_key": "observation.images.cam_high"}``; without one, the key's last
component: ``observation.images.top`` is view ``top``). The table's cameras (``layout["cameras"]``: the recipe's,
as camera keys or view names, else the first embodiment's camera keys) are looked up in each source by key, else
by view, and the result is stated in ``layout["camera_map"]``: ``{source: {table camera: source camera}}``. So a
GR00T source and a LeRobot source with differently named cameras pack into one table when their views agree.
"""

from __future__ import annotations

from dataclasses import replace

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
    import pyarrow as pa
    import pyarrow.compute as pc

    table = lk.episodes(columns=["episode_id", "stats", "sketch"])
    embodiments = lk.embodiments()
    modality = {s: emb.to_dict() for s, emb in embodiments.items()}
    sources = sorted({e["source"] for e in episodes})
    cameras = list(recipe.cameras) or [k for k, f in features_of.get(by[sorted(by)[0]][0]["source"], {}).items()
                                       if f.get("dtype") == "video"]
    views = {s: dict(embodiments[s].video) if s in embodiments else {} for s in sources}
    camera_map = {s: camera_map_of(cameras, s, views) for s in sources}
    per: dict[str, dict] = {}
    for robot in sorted(by):
        sources = sorted({e["source"] for e in by[robot]})
        features: dict = {}
        for s in sources:
            features.update(features_of.get(s, {}))
        mine = table.filter(pc.is_in(table["episode_id"], pa.array([e["episode_id"] for e in by[robot]])))
        stats = _stats.aggregate_columns(mine["stats"], mine["sketch"] if "sketch" in mine.column_names else None)
        lay = make_layout(replace(recipe.resolved(features), cameras=tuple(cameras)), features, stats, fps, vocab_size)
        per[robot] = {**{k: lay[k] for k in KEYS}, "sources": sources, "modality": modality.get(sources[0]),
                      "_layout": lay}
    first = per[sorted(per)[0]]
    layout = dict(first["_layout"])
    layout["camera_map"] = camera_map
    layout["state_dim"] = max(p["state_dim"] for p in per.values())
    layout["action_dim"] = max(p["action_dim"] for p in per.values())
    layout["embodiments"] = {r: {k: v for k, v in p.items() if k != "_layout"} for r, p in per.items()}
    return layout


def camera_map_of(cameras: list[str], source: str, views: dict[str, dict[str, str]]) -> dict[str, str]:
    """``{table camera: camera key of source}``: the camera itself when the source has it, else the source's
    camera of the same view (``views``: {source: {view: camera key}}, from ``lake.embodiments()``). Raises
    ValueError naming the camera and the source's views when there is none."""
    mine = views.get(source, {})
    view_of = {key: view for vs in views.values() for view, key in vs.items()}
    out = {}
    for cam in cameras:
        if cam in mine.values():
            out[cam] = cam
            continue
        view = view_of.get(cam, cam)  # a camera key of another source, or a view name itself
        if view not in mine:
            raise ValueError(f"camera {cam!r} (view {view!r}) has no match in source {source!r}, whose views are "
                             f"{mine or 'none'}: name the view in its meta/modality.json 'video' section "
                             "(GR00T) or choose recipe.cameras both sources have")
        out[cam] = mine[view]
    return out


def camera_of(layout: dict, episode: dict, camera: str) -> str:
    """The episode's own camera key for the table's ``camera`` (``layout["camera_map"]``; itself without one)."""
    return (layout.get("camera_map") or {}).get(episode.get("source"), {}).get(camera, camera)


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
