"""Importance corrections: decoupled PPO weights by pi_prox / pi_behaviour (truncated), clips around pi_prox."""

from __future__ import annotations

import numpy as np
import torch

from training.rl import get_correction


def _grad(name, logp0, prox, behav, adv, eps=0.2, cap=2.0):
    logp = logp0.clone().requires_grad_(True)
    loss, info = get_correction(name)(logp, prox, behav, adv, eps, cap)
    loss.backward()
    return logp.grad, info


def test_decoupled_weights_the_gradient_by_the_truncated_behaviour_ratio():
    n = 4
    logp = torch.zeros(n)
    behav = torch.log(torch.tensor([1.0, 0.5, 0.25, 2.0]))  # pi_prox / pi_behav = 1, 2, 4 (capped at 2), 0.5
    adv = torch.ones(n)
    g, info = _grad("decoupled", logp, logp.clone(), behav, adv)
    # at pi == pi_prox the ratio is 1 (inside the clip): d loss / d logp_i = -w_i * A_i / n
    torch.testing.assert_close(g, -torch.tensor([1.0, 2.0, 2.0, 0.5]) / n)
    assert abs(info["is_weight"] - 5.5 / 4) < 1e-6
    assert info["is_capped"] == 0.25  # only the weight 4 was truncated (2 is at the cap, not beyond it)
    assert abs(info["behav_gap"] - np.log(2)) < 1e-6  # mean |log w| = (0 + ln 2 + ln 4 + ln 2) / 4


def test_decoupled_clips_around_the_proximal_policy_not_the_behaviour_one():
    logp = torch.log(torch.tensor([1.5, 1.5]))  # pi / pi_prox = 1.5 > 1 + eps
    prox = torch.zeros(2)
    behav = torch.log(torch.tensor([0.5, 0.5]))  # far off-policy: standard PPO would clip everything
    g, _ = _grad("decoupled", logp, prox, behav, torch.tensor([1.0, -1.0]))
    assert g[0] == 0  # positive advantage beyond 1 + eps: clipped, no gradient
    assert g[1] != 0  # negative advantage: the pessimistic branch keeps the gradient
    g_clip, _ = _grad("clip", torch.zeros(2), prox, behav, torch.tensor([1.0, 1.0]))
    assert torch.all(g_clip == 0)  # ratio vs behaviour = 2: outside the clip for standard PPO


def test_no_correction_ignores_the_behaviour_policy():
    logp = torch.zeros(3)
    g1, _ = _grad("none", logp, logp.clone(), torch.full((3,), -3.0), torch.ones(3))
    g2, _ = _grad("none", logp, logp.clone(), torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(g1, g2)
