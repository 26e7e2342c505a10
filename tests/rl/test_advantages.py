"""GAE against its definition; group-relative advantages within each group only."""

from __future__ import annotations

import numpy as np
import pytest

from training.rl import gae, group_relative


def _gae_by_definition(r, v, last, terminated, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t), V(terminal) = 0."""
    t = len(r)
    nxt = np.append(v[1:], 0.0 if terminated else last)
    delta = r + gamma * nxt - v
    return np.array([sum((gamma * lam) ** l * delta[i + l] for l in range(t - i)) for i in range(t)])


@pytest.mark.parametrize("terminated", [True, False])
def test_gae_matches_the_definition_and_bootstraps_only_truncated_trajectories(terminated):
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=12), rng.normal(size=12)
    adv, ret = gae(r, v, 5.0, terminated, 0.97, 0.9)
    np.testing.assert_allclose(adv, _gae_by_definition(r, v, 5.0, terminated, 0.97, 0.9), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, adv + v, rtol=1e-5, atol=1e-5)
    other, _ = gae(r, v, -5.0, terminated, 0.97, 0.9)
    assert np.allclose(adv, other) == terminated  # the bootstrap value matters only after truncation


def test_group_relative_advantages_are_normalized_within_each_group():
    returns = np.array([1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 0.0, 4.0])
    groups = ["a", "a", "a", "b", "b", "b", "c", "c"]
    adv = group_relative(returns, groups)
    for g in "abc":
        m = np.array(groups) == g
        assert abs(adv[m].mean()) < 1e-6
    np.testing.assert_allclose(adv[:3], [-1.2247, 0.0, 1.2247], atol=1e-3)
    assert np.all(adv[3:6] == 0)  # equal returns: no signal
    np.testing.assert_allclose(adv[6:], [-1.0, 1.0], atol=1e-5)
    with pytest.raises(ValueError, match="group keys"):
        group_relative(returns, groups[:-1])
