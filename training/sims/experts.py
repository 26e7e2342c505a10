"""Meta-World's scripted experts (``metaworld.policies``) as a ``Policy`` that ``lake eval`` and the demo writer run.

    path = save_expert("expert.pt", "metaworld/push-v3", noise=0.1)
    # lake eval expert.pt --env metaworld/push-v3 --episodes 20 --lake ./lake   (--env may be left out)

The expert reads ``observation.state`` (Meta-World's 39-d state, goal included) and returns Meta-World's
action plus optional Gaussian noise (``noise``: std in action units), clipped to [-1, 1]. The noise of
episode wave ``k`` comes from ``(seed, k)``, so a rollout is a pure function of (seed, env seeds). The
checkpoint holds no weights: factory name + JSON config.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from . import metaworld as _mw
from ..factories import register_factory
from ._setup import require

STATE = "observation.state"


class ScriptedExpert(nn.Module):
    """Meta-World's expert for one task, batched (see the module doc). ``nn.Module`` so checkpoints hold it."""

    def __init__(self, env_id: str, noise: float = 0.0, seed: int = 0):
        super().__init__()
        name = _mw.task_name(env_id)
        policies = require("metaworld.policies", "Meta-World")
        if name not in policies.ENV_POLICY_MAP:
            raise ValueError(f"Meta-World has no scripted expert for {name!r}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.env_id, self.noise, self.seed = env_id, float(noise), int(seed)
        self.input_features = [STATE]
        self._policy = policies.ENV_POLICY_MAP[name]()
        self._waves = 0
        self._rng = np.random.default_rng([self.seed, 0])

    def reset(self, batch_size: int) -> None:
        self._rng = np.random.default_rng([self.seed, self._waves])
        self._waves += 1

    def act(self, obs: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray:
        state = np.asarray(obs[STATE], np.float64)
        with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips, as intended
            warnings.simplefilter("ignore", UserWarning)
            actions = np.stack([self._policy.get_action(row) for row in state])
        if self.noise > 0:
            actions = actions + self._rng.normal(0.0, self.noise, actions.shape)
        return np.clip(actions, -1.0, 1.0).astype(np.float32)

    def forward(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(self.act(obs, []))


def build_expert(env_id: str, noise: float = 0.0, seed: int = 0):
    """The scripted expert for ``env_id``: Meta-World's, or for ``libero/...`` ids the LIBERO pick-place expert
    (``training.sims.libero_expert``)."""
    if env_id.startswith("libero/"):
        from .libero_expert import build_libero_expert

        return build_libero_expert(env_id, noise=noise, seed=seed)
    return ScriptedExpert(env_id, noise=noise, seed=seed)


def demo_env_kwargs(env_id: str) -> dict:
    """The env options expert demos are recorded with: for LIBERO the object positions in the state (what the
    expert reads) and freshly sampled scenes (the 50 recorded init states stay held out for evaluation)."""
    if env_id.startswith("libero/"):
        from .libero_expert import ENV_KWARGS

        return {**ENV_KWARGS, "init": "sampled"}
    return {}


FACTORY = "metaworld_expert"  # checkpoints name it; ``import training`` registers it (no simulator loads)
register_factory(FACTORY, build_expert)


def save_expert(path, env_id: str, *, noise: float = 0.0, seed: int = 0) -> str:
    """Write a checkpoint of the expert for ``env_id`` (which it records, so ``lake eval`` needs no --env)."""
    from training.checkpoint import save

    if env_id.startswith("libero/"):
        from .libero_expert import save_libero_expert

        return save_libero_expert(path, env_id, noise=noise, seed=seed)
    expert = build_expert(env_id, noise=noise, seed=seed)
    return save(path, expert, factory=FACTORY, config={"env_id": env_id, "noise": float(noise), "seed": int(seed)},
                lineage={"extra": {"env_id": env_id, "expert": "metaworld.policies", "noise": float(noise)}})
