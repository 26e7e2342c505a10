"""Embodiments: each source's robot and the named slices of its state and action vectors.

A GR00T dataset says in ``meta/modality.json`` which slice of ``observation.state`` / ``action`` is which part
of the robot, which video is which view and where annotations live::

    {"state":  {"single_arm": {"start": 0, "end": 5}, "gripper": {"start": 5, "end": 6}},
     "action": {"single_arm": {"start": 0, "end": 5}, "gripper": {"start": 5, "end": 6}},
     "video":  {"front": {"original_key": "observation.images.front"}},
     "annotation": {"human.task_description": {"original_key": "task_index"}}}

``embodiment(info, modality)`` turns that (validated against info.json: keys exist, slices inside the
vectors) into an ``Embodiment``. A source without modality.json gets the default layout, flagged
``default_layout``: the whole state vector as one part named after its feature ("state"), the whole action as
"action", every camera as a view named after its key's last component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATE_KEY, ACTION_KEY = "observation.state", "action"


@dataclass(frozen=True)
class Part:
    """``name`` is ``key[start:end]`` (a slice of the flattened feature ``key``)."""

    name: str
    key: str
    start: int
    end: int

    @property
    def dim(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Embodiment:
    robot_type: str
    state: tuple[Part, ...]
    action: tuple[Part, ...]
    video: tuple[tuple[str, str], ...]  # (view name, camera feature)
    annotation: tuple[tuple[str, str], ...]  # (annotation name, source column)
    state_dim: int  # width of the state feature(s) the parts slice
    action_dim: int
    default_layout: bool

    def to_dict(self) -> dict:
        part = lambda p: {"key": p.key, "start": p.start, "end": p.end}  # noqa: E731
        return {"robot_type": self.robot_type, "state_dim": self.state_dim, "action_dim": self.action_dim,
                "default_layout": self.default_layout,
                "state": {p.name: part(p) for p in self.state}, "action": {p.name: part(p) for p in self.action},
                "video": {n: {"original_key": k} for n, k in self.video},
                "annotation": {n: {"original_key": k} for n, k in self.annotation}}


def _width(features: dict, key: str) -> int:
    return int(np.prod(features[key].get("shape") or [1]))


def _parts(group: str, spec: dict, features: dict, default_key: str) -> tuple[Part, ...]:
    if not isinstance(spec, dict):
        raise ValueError(f"{group!r} must map names to {{start, end}}, got {type(spec).__name__}")
    out = []
    for name, s in spec.items():
        if not isinstance(s, dict) or "start" not in s or "end" not in s:
            raise ValueError(f"{group}.{name} needs 'start' and 'end'")
        key = s.get("original_key", default_key)
        if key not in features:
            raise ValueError(f"{group}.{name}: feature {key!r} is not in info.json")
        start, end, width = int(s["start"]), int(s["end"]), _width(features, key)
        if not 0 <= start < end <= width:
            raise ValueError(f"{group}.{name}: slice [{start}, {end}) is outside {key!r} of width {width}")
        out.append(Part(str(name), key, start, end))
    return tuple(out)


def _keys(group: str, spec: dict, features: dict, kinds: tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
    if not isinstance(spec, dict):
        raise ValueError(f"{group!r} must be a mapping")
    out = []
    for name, s in spec.items():
        key = (s or {}).get("original_key", name) if isinstance(s, dict) else name
        if kinds is not None and (key not in features or features[key].get("dtype") not in kinds):
            raise ValueError(f"{group}.{name}: {key!r} is not a {'/'.join(kinds)} feature of info.json")
        out.append((str(name), str(key)))
    return tuple(out)


def embodiment(info: dict, modality: dict | None) -> Embodiment:
    """The embodiment of a source from its info.json and modality.json (None: the default layout).
    Raises ValueError saying which entry of modality.json is wrong."""
    features = info.get("features") or {}
    robot = info.get("robot_type") or "unknown"
    cams = tuple((k.rsplit(".", 1)[-1], k) for k, f in features.items() if f.get("dtype") in ("video", "image"))
    state_key = STATE_KEY if STATE_KEY in features else next(
        (k for k, f in features.items() if k.startswith("observation.") and f.get("dtype") not in
         ("video", "image", "string")), None)
    if modality is None:
        state = (Part("state", state_key, 0, _width(features, state_key)),) if state_key else ()
        action = (Part("action", ACTION_KEY, 0, _width(features, ACTION_KEY)),) if ACTION_KEY in features else ()
        return Embodiment(robot, state, action, cams, (), sum(p.dim for p in state), sum(p.dim for p in action), True)
    if not isinstance(modality, dict):
        raise ValueError("modality.json must be a JSON object")
    unknown = set(modality) - {"state", "action", "video", "annotation"}
    if unknown:
        raise ValueError(f"unknown top-level entries {sorted(unknown)} (known: state, action, video, annotation)")
    state = _parts("state", modality.get("state", {}), features, state_key or STATE_KEY)
    action = _parts("action", modality.get("action", {}), features, ACTION_KEY)
    video = _keys("video", modality.get("video", {}), features, ("video", "image")) if "video" in modality else cams
    annotation = _keys("annotation", modality.get("annotation", {}), features, None)
    width = lambda parts: sum(_width(features, k) for k in dict.fromkeys(p.key for p in parts))  # noqa: E731
    return Embodiment(robot, state, action, video, annotation, width(state), width(action), False)
