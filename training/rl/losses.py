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

What the trainer minimizes is an *objective* (``OBJECTIVES``, chosen by ``algo.loss``):

- ``pg``: the policy gradient above through the policy's log-probs (``evaluate_actions``), corrected by
  ``algo.correction``, minus the entropy bonus, plus the critic's value loss when the estimator uses one.
- ``flow_rwr``: advantage-weighted flow matching, for flow policies (``FlowPolicy``; RWR / AWR, ReST-style
  filtering, pi0.6 RECAP-style self-improvement): the SFT flow-matching loss on the action chunks the policy's
  own rollouts executed, each row weighted by exp(A / beta) (capped), or kept only where A > 0, or only where
  its trajectory's return exceeds a threshold (``algo.rwr_weight``). It needs no
  likelihood of the action, so the randomness outside the denoising chain's log-prob (its start x_0, which
  carries most of an under-trained flow's action spread) is credited too. No importance correction: a
  weighted maximum-likelihood fit to data from recent versions, bounded by ``max_staleness`` as the PPO path is.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# --- objectives (``algo.loss``) ------------------------------------------------------------------------------


def policy_gradient(policy, mb: dict, algo, *, correction: Callable, first: bool, generator=None):
    """The corrected PPO surrogate on ``mb``'s log-probs (re-scored under the current weights), minus the entropy
    bonus, plus the value loss when ``mb`` carries critic returns. ``first``: the first pass over this batch,
    whose log-probs are the proximal policy's (stored in ``mb``)."""
    logp, entropy, value = policy.evaluate_actions(mb["obs"], mb["raw"])
    if first:  # the proximal policy is the one at the start of this batch: these very weights
        mb["logp_prox"] = logp.detach()
    pg, info = correction(logp, mb["logp_prox"], mb["logp_behav"], mb["adv"], algo.clip_eps, algo.is_cap)
    log_r = (logp - mb["logp_prox"]).detach()  # k3 estimate of KL(proximal || current): >= 0, unbiased
    info["kl_prox"] = float((log_r.exp() - 1 - log_r).mean())
    loss = pg - algo.entropy_coef * entropy.mean()
    vl = value_loss(value, mb["ret"]) if mb["ret"] is not None else None
    if vl is not None:
        loss = loss + algo.value_coef * vl
    return loss, {**info, "policy_loss": float(pg.detach()), "entropy": float(entropy.detach().mean()),
                  "value_loss": float(vl.detach()) if vl is not None else 0.0}


def exp_weights(mb: dict, algo) -> torch.Tensor:
    """RWR / AWR: exp(A / beta), truncated at ``rwr_max_weight`` (one lucky row must not dominate a batch)."""
    return torch.exp(mb["adv"] / algo.rwr_beta).clamp(max=algo.rwr_max_weight)


def positive_weights(mb: dict, algo) -> torch.Tensor:
    """Advantage filtering: weight 1 where A > 0, exactly 0 elsewhere (a GRPO group whose returns are all equal
    has A = 0: it is left out, as are the rows below their group's mean)."""
    return (mb["adv"] > 0).to(mb["adv"].dtype)


def return_weights(mb: dict, algo) -> torch.Tensor:
    """Return filtering (ReST-style): weight 1 on the rows of trajectories whose return exceeds
    ``rwr_min_return``, whatever their group (with the success reward at 0: every successful episode, also those
    of goals all of whose rollouts succeeded, which a group advantage leaves out), exactly 0 elsewhere."""
    return (mb["episode_return"] > algo.rwr_min_return).to(mb["adv"].dtype)


RWR_WEIGHTS: dict[str, Callable] = {"exp": exp_weights, "positive": positive_weights, "return": return_weights}


def flow_rwr(policy, mb: dict, algo, *, correction=None, first: bool = True, generator=None):
    """Advantage-weighted flow matching: mean over the micro-batch's rows of w(A) * the flow-matching loss of the
    row's executed chunk (``policy.flow_matching_loss``; noise and times drawn from ``generator``, fresh each
    epoch). With every weight 1 this is the plain SFT loss on the rollouts' chunks; rows of weight 0 contribute
    no gradient at all."""
    w = RWR_WEIGHTS[algo.rwr_weight](mb, algo).detach()
    per_row = policy.flow_matching_loss(mb["obs"], mb["raw"], generator)
    loss = (w * per_row).mean()
    kept = w > 0
    return loss, {"policy_loss": float(loss.detach()), "fm_loss": float(per_row.detach().mean()),
                  "fm_loss_kept": float(per_row.detach()[kept].mean()) if kept.any() else 0.0,
                  "rwr_weight": float(w.mean()), "rwr_kept": float(kept.float().mean()),
                  "adv_positive": float((mb["adv"] > 0).float().mean())}


@dataclass(frozen=True)
class Objective:
    """``fn(policy, mb, algo, *, correction, first, generator) -> (loss, metrics)``; ``kl``: whether its metrics
    carry ``kl_prox`` (KL of the proximal policy to the current one, from log-probs); ``requires``: the policy
    method it calls beyond ``RLPolicy``'s (the trainer refuses a policy without it), if any."""

    fn: Callable
    kl: bool
    requires: str | None = None


OBJECTIVES: dict[str, Objective] = {"pg": Objective(policy_gradient, kl=True),
                                    "flow_rwr": Objective(flow_rwr, kl=False, requires="flow_matching_loss")}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r} (known: {sorted(OBJECTIVES)})") from None
