"""Checkpoints that say what they were trained on, and the ``Policy`` protocol evaluation runs.

A checkpoint is one ``torch.save`` file:

    {"factory": "module:function", "config": {...}, "state_dict": ..., "step": int,
     "lineage": {"lake_uri", "lake_version", "lake_tag", "recipe_hash", "packed_table", ...},
     "optimizer": ..., "rng": ..., "loader": ...}        # the last three only for exact resume

``factory(**config)`` rebuilds the module; a module that can drive a simulator implements ``Policy``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """What closed-loop evaluation and RL rollouts call. Observations are batched numpy arrays keyed by the
    lake's feature names (e.g. "observation.state" (B, 2), "observation.images.top" (B, H, W, 3) uint8)."""

    def reset(self, batch_size: int) -> None:
        """Start new episodes (e.g. clear queued action chunks)."""

    def act(self, obs: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray:
        """Actions (B, action_dim) in the environment's units (un-normalized)."""


@dataclass(frozen=True)
class Lineage:
    """Which data a checkpoint was trained on."""

    lake_uri: str = ""
    lake_version: int | None = None
    lake_tag: str | None = None
    recipe_hash: str | None = None
    packed_table: str | None = None
    extra: dict = field(default_factory=dict)


def save(path: str | os.PathLike, module, *, factory: str, config: dict, step: int = 0,
         lineage: Lineage | dict | None = None, **resume: Any) -> str:
    """Write a checkpoint atomically (temp file + rename: a crash never leaves half a checkpoint)."""
    import dataclasses

    import torch

    lineage = dataclasses.asdict(lineage) if isinstance(lineage, Lineage) else dict(lineage or {})
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save({"factory": factory, "config": config, "state_dict": module.state_dict(), "step": step,
                "lineage": lineage, **resume}, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    import torch

    return torch.load(os.fspath(path), map_location=map_location, weights_only=False)


def build(factory: str, config: dict):
    mod, _, fn = factory.partition(":")
    if not fn:
        raise ValueError(f"factory must be 'module:function', got {factory!r}")
    return getattr(importlib.import_module(mod), fn)(**config)


def load_module(path: str | os.PathLike):
    """(module with weights loaded, checkpoint dict)."""
    ckpt = load(path)
    module = build(ckpt["factory"], ckpt["config"])
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), ckpt


def load_policy(path: str | os.PathLike) -> tuple[Policy, dict]:
    """A ``Policy`` from a checkpoint; raises TypeError if the saved module cannot act."""
    module, ckpt = load_module(path)
    if not isinstance(module, Policy):
        raise TypeError(f"{path}: {ckpt['factory']} builds a {type(module).__name__}, which has no reset()/act()")
    return module, ckpt
