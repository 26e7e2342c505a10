"""Advantage estimators: GAE (PPO, with a critic) and group-relative (GRPO, without one).

Each estimator maps a list of trajectories (+ critic values where it uses them) to per-step advantages and,
for critic training, per-step returns. ``get_advantage(name)`` is the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def gae(rewards: np.ndarray, values: np.ndarray, last_value: float, terminated: bool, gamma: float, lam: float
        ) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation over one trajectory -> (advantages (T,), returns (T,)).

    ``values`` (T,) are V(s_t); ``last_value`` is V(s_T) after the last step, used only when the trajectory
    was truncated (a terminal state is worth 0).
    """
    rewards, values = np.asarray(rewards, np.float64), np.asarray(values, np.float64)
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {rewards.shape} and values {values.shape} differ")
    t = len(rewards)
    adv = np.zeros(t, np.float64)
    next_value, acc = (0.0 if terminated else float(last_value)), 0.0
    for i in range(t - 1, -1, -1):
        delta = rewards[i] + gamma * next_value - values[i]
        acc = delta + gamma * lam * acc
        adv[i] = acc
        next_value = values[i]
    return adv.astype(np.float32), (adv + values).astype(np.float32)


def group_relative(returns: np.ndarray, groups: list, eps: float = 1e-6) -> np.ndarray:
    """GRPO: (R - mean of its group) / (std of its group + eps), one value per trajectory.

    A group whose returns are all equal carries no signal: its advantages are 0.
    """
    returns = np.asarray(returns, np.float64)
    if len(returns) != len(groups):
        raise ValueError(f"{len(returns)} returns for {len(groups)} group keys")
    out = np.zeros(len(returns), np.float64)
    keys = np.asarray([str(g) for g in groups])
    for g in np.unique(keys):
        m = keys == g
        r = returns[m]
        out[m] = (r - r.mean()) / (r.std() + eps)
    return out.astype(np.float32)


@dataclass(frozen=True)
class AdvantageEstimator:
    """``fn(trajectories, values or None, gamma, lam) -> (advantages list, returns list or None)``."""

    fn: Callable
    uses_critic: bool


def _gae_all(trajs, values, gamma, lam):
    out = [gae(t.rewards, v[:-1], v[-1], t.terminated, gamma, lam) for t, v in zip(trajs, values)]
    return [a for a, _ in out], [r for _, r in out]


def _grpo_all(trajs, values, gamma, lam):
    per_traj = group_relative([t.episode_return for t in trajs], [t.group for t in trajs])
    return [np.full(t.length, a, np.float32) for t, a in zip(trajs, per_traj)], None


ADVANTAGES: dict[str, AdvantageEstimator] = {
    "gae": AdvantageEstimator(_gae_all, uses_critic=True),
    "grpo": AdvantageEstimator(_grpo_all, uses_critic=False),
}


def get_advantage(name: str) -> AdvantageEstimator:
    try:
        return ADVANTAGES[name]
    except KeyError:
        raise KeyError(f"unknown advantage estimator {name!r} (known: {sorted(ADVANTAGES)})") from None
