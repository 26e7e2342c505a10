"""``Recipe``: how episodes become training samples and packs. Typed, frozen, hashable, loadable from YAML.

Time offsets follow LeRobot's ``delta_timestamps`` (seconds, multiples of 1/fps): observation history
(``observation_deltas``) and the action chunk (``action_deltas``; default ``action_horizon`` steps from 0).
A query outside the episode is clamped to its edge and marked ``*_is_pad``, as LeRobotDataset does; the
``pad`` policy then keeps the repeated edge (``"repeat"``) or zeroes it (``"zero"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .mixture import Mixture

NORMALIZATIONS = ("mean_std", "quantile", "none")


@dataclass(frozen=True)
class Recipe:
    cameras: tuple[str, ...] = ()  # () = every camera in the lake
    image_size: tuple[int, int] = (64, 64)  # (height, width) after resize
    patch_size: int = 16  # image tokens per camera per step = (H / p) * (W / p)
    image_encoder: str = "patches"  # "patches" (raw uint8 p×p×3 patches) | "frozen" (embeddings)
    encoder: str | None = None  # for "frozen": a registered encoder name (packers.register_encoder)
    observation_deltas: tuple[float, ...] = (0.0,)  # seconds, e.g. (-0.1, 0.0) for one step of history
    action_deltas: tuple[float, ...] | None = None  # seconds; None = action_horizon steps from 0
    action_horizon: int = 16
    state_features: tuple[str, ...] = ()  # () = every numeric "observation.*" feature that is not an image
    action_features: tuple[str, ...] = ("action",)
    pad: str = "repeat"  # "repeat" | "zero"
    tokenizer: str = "byte"  # "byte" | path to a Hugging Face tokenizer.json
    max_text_tokens: int | None = None  # cut instructions longer than this (None: never)
    normalization: str = "mean_std"  # "mean_std" | "quantile" (q01..q99 -> -1..1) | "none"
    action_bins: int | None = None  # also discretize normalized actions into this many bins
    token_budget: int = 2048  # tokens per pack
    max_samples_per_pack: int | None = None
    too_long: str = "error"  # "error" | "truncate" (cut text tokens to fit the budget)
    frame_stride: int = 1  # one sample every `frame_stride` frames
    episodes_per_group: int = 64  # samples of this many episodes are packed together (bounds memory)
    packer: str = "bfd_refine"  # exact BFD, then a fill-to-budget repair where BFD strands gaps
    seed: int = 0
    mixture: Mixture | None = None  # sources with weights (see ``packers.mixture``); None = every episode once
    name: str = field(default="default", compare=False)

    def __post_init__(self):
        def fix(name, conv):
            object.__setattr__(self, name, conv(getattr(self, name)))

        for name in ("cameras", "state_features", "action_features"):
            fix(name, lambda v: tuple(v) if not isinstance(v, str) else (v,))
        fix("image_size", lambda v: tuple(int(x) for x in v))
        fix("observation_deltas", lambda v: tuple(float(x) for x in v))
        fix("action_deltas", lambda v: None if v is None else tuple(float(x) for x in v))
        fix("mixture", lambda v: None if v is None else Mixture.parse(v))
        h, w = self.image_size
        if self.patch_size <= 0 or h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.pad not in ("repeat", "zero"):
            raise ValueError(f"pad must be 'repeat' or 'zero', got {self.pad!r}")
        if self.too_long not in ("error", "truncate"):
            raise ValueError(f"too_long must be 'error' or 'truncate', got {self.too_long!r}")
        if self.image_encoder not in ("patches", "frozen") or (self.image_encoder == "frozen" and not self.encoder):
            raise ValueError("image_encoder is 'patches', or 'frozen' with encoder=NAME (packers.register_encoder)")
        if self.token_budget <= 0 or self.frame_stride <= 0 or self.action_horizon <= 0:
            raise ValueError("token_budget, frame_stride and action_horizon must be positive")
        if not self.observation_deltas:
            raise ValueError("observation_deltas needs at least one offset (0.0 = the current frame)")

    # --- identity -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}
        if self.mixture is None:
            del d["mixture"]  # recipes without one keep the hash they always had
        else:
            d["mixture"] = self.mixture.to_dict()
        return d

    @property
    def hash(self) -> str:
        """Changes when any field that shapes the samples or packs changes (not ``name``)."""
        d = {k: v for k, v in self.to_dict().items() if k != "name"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown recipe fields: {sorted(unknown)} (known: {sorted(known)})")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        import yaml

        d = yaml.safe_load(Path(path).read_text()) or {}
        d.setdefault("name", Path(path).stem)
        return cls.from_dict(d)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # --- derived --------------------------------------------------------------------------------------------

    def action_offsets(self, fps: float) -> list[int]:
        deltas = self.action_deltas if self.action_deltas is not None else [i / fps for i in range(self.action_horizon)]
        return _to_offsets(deltas, fps, "action_deltas")

    def observation_offsets(self, fps: float) -> list[int]:
        return _to_offsets(self.observation_deltas, fps, "observation_deltas")

    def resolved(self, features: dict[str, dict]) -> "Recipe":
        """Empty ``cameras`` / ``state_features`` filled from the lake's features (the hash stays the caller's)."""
        d = default_recipe(features)
        return dataclasses.replace(self, cameras=self.cameras or d.cameras,
                                   state_features=self.state_features or d.state_features)

    @property
    def patches_per_image(self) -> int:
        h, w = self.image_size
        return (h // self.patch_size) * (w // self.patch_size)


def _to_offsets(deltas, fps: float, what: str, tol: float = 1e-4) -> list[int]:
    """Seconds -> frame offsets; like LeRobot's check_delta_timestamps, each must be a multiple of 1/fps."""
    out = []
    for d in deltas:
        k = round(d * fps)
        if abs(d * fps - k) > tol * fps:
            raise ValueError(f"{what}: {d} s is not a multiple of 1/fps = {1 / fps:.6g} s")
        out.append(int(k))
    return out


def default_recipe(features: dict[str, dict], **overrides) -> Recipe:
    """The lake's default: all cameras, every numeric observation feature as state, 'action', byte tokens."""
    cams = tuple(k for k, f in features.items() if f.get("dtype") == "video")
    state = tuple(k for k, f in features.items()
                  if k.startswith("observation.") and f.get("dtype") not in ("video", "image", "string"))
    actions = tuple(k for k in features if k == "action") or tuple(k for k in features if k.startswith("action"))
    return Recipe(cameras=cams, state_features=state, action_features=actions, **overrides)
