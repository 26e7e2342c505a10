"""Policy-gradient losses with importance correction against the behaviour policy that produced the data.

Three policies matter when data can be a few versions old: the behaviour policy (log-probs recorded by the
rollout worker), the proximal policy (the trainer's weights when this global batch started) and the
current one. Corrections:

- ``decoupled`` (Hilton et al. 2021, "decoupled PPO", as in AReaL): the PPO clip is taken around the
  proximal policy, and the off-policy gap is corrected by the weight pi_prox / pi_behaviour, truncated at
  ``is_cap`` and not differentiated. Stale data stays usable without the trust region collapsing.
- ``clip``: standard PPO clip around the behaviour policy (the ratio is pi / pi_behaviour).
- ``none``: clip around the proximal policy, ignoring the behaviour gap (biased; a baseline).

All return (loss, metrics) where loss is a mean over the given steps.
"""

from __future__ import annotations

from typing import Callable

import torch


def _clipped(ratio: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


def _gap(logp_prox, logp_behav, is_cap: float) -> dict:
    """How far the behaviour policy is from the proximal one: the mean of the (untruncated) weight says little
    (its expectation under the behaviour policy is 1 whatever the gap), so also report the fraction of steps
    truncated at ``is_cap`` and the mean |log pi_prox - log pi_behaviour|."""
    d = (logp_prox - logp_behav).detach()
    return {"is_capped": float((d > torch.log(torch.tensor(float(is_cap)))).float().mean()),
            "behav_gap": float(d.abs().mean())}


def decoupled(logp, logp_prox, logp_behav, adv, clip_eps: float, is_cap: float):
    w = torch.exp(logp_prox - logp_behav).clamp(max=is_cap).detach()
    ratio = torch.exp(logp - logp_prox.detach())
    info = {"is_weight": float(w.mean()), "ratio": float(ratio.detach().mean()), **_gap(logp_prox, logp_behav, is_cap)}
    return -(w * _clipped(ratio, adv, clip_eps)).mean(), info


def clip(logp, logp_prox, logp_behav, adv, clip_eps: float, is_cap: float):
    ratio = torch.exp(logp - logp_behav.detach())
    return -_clipped(ratio, adv, clip_eps).mean(), {"is_weight": 1.0, "ratio": float(ratio.detach().mean()),
                                                    **_gap(logp_prox, logp_behav, is_cap)}


def none(logp, logp_prox, logp_behav, adv, clip_eps: float, is_cap: float):
    ratio = torch.exp(logp - logp_prox.detach())
    return -_clipped(ratio, adv, clip_eps).mean(), {"is_weight": 1.0, "ratio": float(ratio.detach().mean()),
                                                    **_gap(logp_prox, logp_behav, is_cap)}


CORRECTIONS: dict[str, Callable] = {"decoupled": decoupled, "clip": clip, "none": none}


def get_correction(name: str) -> Callable:
    try:
        return CORRECTIONS[name]
    except KeyError:
        raise KeyError(f"unknown importance correction {name!r} (known: {sorted(CORRECTIONS)})") from None


def value_loss(value: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    return 0.5 * (value - returns).pow(2).mean()
