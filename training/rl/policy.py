"""What RL needs from a policy (``RLPolicy``), and a tiny Gaussian actor-critic that provides it.

``RLPolicy`` extends ``training.checkpoint.Policy`` (``reset`` / ``act``, which evaluation runs) with
sampling that reports behaviour log-probs, re-scoring of stored actions for the loss, and flat weights for
versioned publishing. The RL pipeline only ever calls these methods, so any module implementing them (an
SFT VLA with a Gaussian or flow head) can be fine-tuned by it.

Sampling is a pure function of (weights, observation row, seed row): each row's noise comes from its own
seed, so an action does not depend on which other rows the dynamic batcher put in the same forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from training.checkpoint import Policy
from training.factories import factory_name, get_factory, register_factory

FACTORY = "gaussian_actor_critic"


@dataclass(frozen=True)
class ActionSample:
    """One batch of sampled actions. ``actions``: env units (B, A); ``raw``: what ``logprob`` is the density
    of (B, A) (kept for re-scoring); ``logprob`` (B,); ``value`` (B,) the critic's estimate (0 without one)."""

    actions: np.ndarray
    raw: np.ndarray
    logprob: np.ndarray
    value: np.ndarray


@runtime_checkable
class RLPolicy(Policy, Protocol):
    """A ``Policy`` the RL trainer can improve. Observations are dicts of batched numpy arrays (lake names)."""

    input_features: list[str]

    def act_with_logprob(self, obs: dict[str, np.ndarray], seeds: np.ndarray) -> ActionSample:
        """Sample one action per row; row i's noise is a function of ``seeds[i]`` only."""

    def evaluate_actions(self, obs: dict[str, torch.Tensor], raw: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-prob (N,), entropy (N,), value (N,)) of stored ``raw`` actions, differentiable."""

    def value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The critic's V(s) (N,); zeros for a policy without a critic (then use a critic-free estimator)."""

    def get_weights(self) -> dict[str, np.ndarray]:
        """A copy of the weights (what the trainer publishes)."""

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load published weights."""


def acting_keys(policy) -> list[str] | None:
    """The weights a rollout worker needs, for a policy that can act without its critic; None otherwise.

    Optional part of ``RLPolicy``: a policy with an ``acting_keys()`` method also takes ``get_weights(keys)``,
    ``set_weights`` of just those keys, and ``act_with_logprob(..., value=False)``, which reads only them and
    returns NaN values. The trainer then publishes only those weights and the rollout workers skip the critic:
    the trainer recomputes values under its own weights, so the behaviour critic's were never used."""
    fn = getattr(policy, "acting_keys", None)
    return list(fn()) if fn is not None else None


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, n_out))


class GaussianActorCritic(nn.Module):
    """State (+ optional 24x24 image) -> diagonal Gaussian over actions in [-1, 1], plus a critic.

    ``state_features``: [[name, dim, low list, high list], ...] (bounds normalize to [-1, 1]; infinite bounds
    pass through). Actions: ``u ~ N(tanh(mu(s)), exp(log_std))``; the env gets ``clip(u, -1, 1)`` mapped to
    ``[action_low, action_high]``; log-probs are of ``u``.
    """

    def __init__(self, state_features: list, action_low: list, action_high: list, image_feature: str | None = None,
                 image_size: int = 24, hidden: int = 64, init_log_std: float = -0.5):
        super().__init__()
        self.state_names = [f[0] for f in state_features]
        self.image_feature, self.image_size = image_feature, image_size
        self.input_features = self.state_names + ([image_feature] if image_feature else [])
        low = np.concatenate([np.asarray(f[2], np.float64).reshape(-1) for f in state_features])
        high = np.concatenate([np.asarray(f[3], np.float64).reshape(-1) for f in state_features])
        finite = np.isfinite(low) & np.isfinite(high) & (high > low)
        center = np.where(finite, (np.where(finite, low, 0.0) + np.where(finite, high, 0.0)) / 2, 0.0)  # no inf - inf
        half = np.where(finite, (high - low) / 2, 1.0)
        self.register_buffer("obs_center", torch.tensor(center, dtype=torch.float32))
        self.register_buffer("obs_half", torch.tensor(half, dtype=torch.float32))
        a_low, a_high = np.asarray(action_low, np.float64), np.asarray(action_high, np.float64)
        self.register_buffer("act_low", torch.tensor(a_low, dtype=torch.float32))
        self.register_buffer("act_high", torch.tensor(a_high, dtype=torch.float32))
        n_in, n_act = len(low), len(a_low)
        if image_feature:
            self.encoder = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                         nn.ReLU(), nn.Flatten())
            with torch.no_grad():
                n_img = self.encoder(torch.zeros(1, 3, image_size, image_size)).shape[1]
            self.image_proj = nn.Linear(n_img, 32)
            n_in += 32
        self.actor, self.critic = _mlp(n_in, hidden, n_act), _mlp(n_in, hidden, 1)
        nn.init.orthogonal_(self.actor[-1].weight, 0.01)  # start near the centre of the action box
        nn.init.zeros_(self.actor[-1].bias)
        self.log_std = nn.Parameter(torch.full((n_act,), float(init_log_std)))

    # --- torch side --------------------------------------------------------------------------------------

    def _features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([obs[n].reshape(len(obs[n]), -1).float() for n in self.state_names], dim=1)
        x = (x - self.obs_center) / self.obs_half
        if self.image_feature:
            img = obs[self.image_feature].float().permute(0, 3, 1, 2) / 255.0
            img = nn.functional.adaptive_avg_pool2d(img, self.image_size)
            x = torch.cat([x, torch.tanh(self.image_proj(self.encoder(img)))], dim=1)
        return x

    def distribution(self, obs: dict[str, torch.Tensor]) -> tuple[torch.distributions.Normal, torch.Tensor]:
        h = self._features(obs)
        return self._actor_dist(h), self.critic(h).squeeze(-1)

    def _actor_dist(self, h: torch.Tensor) -> torch.distributions.Normal:
        mean = torch.tanh(self.actor(h))
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def evaluate_actions(self, obs, raw):
        dist, value = self.distribution(obs)
        return dist.log_prob(raw).sum(-1), dist.entropy().sum(-1), value

    def value(self, obs):
        return self.critic(self._features(obs)).squeeze(-1)

    def to_env(self, u: torch.Tensor) -> torch.Tensor:
        return self.act_low + (u.clamp(-1, 1) + 1) / 2 * (self.act_high - self.act_low)

    # --- numpy side (rollouts, evaluation) -----------------------------------------------------------------

    def tensors(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_features if n not in obs]
        if missing:
            raise KeyError(f"observation lacks {missing} (has: {sorted(obs)})")
        return {n: torch.as_tensor(np.asarray(obs[n])) for n in self.input_features}

    def reset(self, batch_size: int) -> None:
        """Stateless: nothing to clear."""

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray:
        """Deterministic (mean) actions in env units, (B, action_dim) float32."""
        dist, _ = self.distribution(self.tensors(obs))
        return self.to_env(dist.mean).numpy().astype(np.float32)

    @torch.inference_mode()
    def act_with_logprob(self, obs: dict[str, np.ndarray], seeds: np.ndarray, value: bool = True) -> ActionSample:
        """``value=False``: the critic is not run (half the forward's weights at any width) and ``value`` is NaN;
        the actions and log-probs are the same."""
        h = self._features(self.tensors(obs))
        dist = self._actor_dist(h)
        n_act = dist.mean.shape[1]
        noise = np.stack([np.random.default_rng(int(s)).standard_normal(n_act) for s in np.asarray(seeds)])
        raw = dist.mean + dist.stddev * torch.as_tensor(noise, dtype=torch.float32)
        v = self.critic(h).squeeze(-1).numpy().astype(np.float32) if value else np.full(len(raw), np.nan, np.float32)
        return ActionSample(self.to_env(raw).numpy().astype(np.float32), raw.numpy().astype(np.float32),
                            dist.log_prob(raw).sum(-1).numpy().astype(np.float32), v)

    def acting_keys(self) -> list[str]:
        """Every weight but the critic's: what ``act_with_logprob(..., value=False)`` reads (see ``acting_keys``
        in this module)."""
        return [k for k in self.state_dict() if not k.startswith("critic.")]

    def get_weights(self, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """A copy of the weights, or of ``keys`` only."""
        sd = self.state_dict()
        return {k: sd[k].detach().cpu().numpy().copy() for k in (sd if keys is None else keys)}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load all the weights, or exactly the acting ones (the critic then keeps its own); anything else is a
        KeyError, so a partial or misnamed publish cannot pass silently."""
        if set(weights) != set(self.state_dict()):
            keys = set(self.acting_keys())
            if set(weights) != keys:
                extra = sorted(set(weights) - set(self.state_dict()))
                raise KeyError(f"weights are neither all of the policy's nor its acting ones: missing "
                               f"{sorted(keys - set(weights))}, unexpected {extra}")
        self.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, strict=False)


@dataclass(frozen=True)
class PolicySpec:
    """How every actor builds the same policy: the factory registered as ``factory``, called with ``config``,
    then ``weights`` (None: the factory's own initialization, seeded by the trainer). ``fn`` is that factory,
    looked up where the spec is made (the driver, where the user's own registrations ran) and shipped to the
    actors by Ray with the spec."""

    factory: str
    config: dict
    weights: dict | None = None
    fn: Callable | None = field(default=None, compare=False, repr=False)

    def build(self) -> "RLPolicy":
        """The module; UnknownFactory (ValueError) for an unregistered name, TypeError if it lacks what RL calls."""
        module = (self.fn or get_factory(self.factory))(**self.config)
        if not isinstance(module, RLPolicy):
            missing = [m for m in ("input_features", "act_with_logprob", "evaluate_actions", "value", "get_weights",
                                   "set_weights", "reset", "act") if not hasattr(module, m)]
            raise TypeError(f"{self.factory} builds a {type(module).__name__}, not an RLPolicy (lacks {missing})")
        if self.weights is not None:
            module.set_weights(self.weights)
        return module


def policy_spec(cfg) -> PolicySpec:
    """The PolicySpec of an RLConfig (see ``PolicyConfig``)."""
    p = cfg.policy
    if p.init_checkpoint:
        from training.checkpoint import load

        ckpt = load(p.init_checkpoint)  # refuses an unregistered factory, naming the file
        weights = {k: v.detach().cpu().numpy() for k, v in ckpt["state_dict"].items()}
        return PolicySpec(ckpt["factory"], dict(ckpt["config"]), weights, get_factory(ckpt["factory"]))
    name = factory_name(p.factory)
    fn = get_factory(name, "policy.factory")
    if name != FACTORY:
        return PolicySpec(name, dict(p.kwargs), fn=fn)
    return PolicySpec(FACTORY, policy_config(cfg.env.id, image=p.image, hidden=p.hidden, image_size=p.image_size,
                                             init_log_std=p.init_log_std, env_kwargs=cfg.env.kwargs), fn=fn)


def build_policy(**config) -> GaussianActorCritic:
    """Checkpoint factory, registered as ``gaussian_actor_critic``."""
    return GaussianActorCritic(**config)


register_factory(FACTORY, build_policy)


def policy_config(env_id: str, *, image: bool = False, hidden: int = 64, image_size: int = 24,
                  init_log_std: float = -0.5, env_kwargs: dict | None = None) -> dict:
    """``build_policy`` kwargs for an env: feature names, bounds and the action box read from the env."""
    from .envs import feature_spaces, get_family, make_env

    fam = get_family(env_id)
    env = make_env(env_id, image=image, kwargs=env_kwargs)
    try:
        spaces = feature_spaces(env.observation_space, fam)
        low, high = env.action_space.low, env.action_space.high
    finally:
        env.close()
    image_feature = next((n for n, (shape, _, _) in spaces.items() if len(shape) == 3), None) if image else None
    if image and image_feature is None:
        raise ValueError(f"env {env_id!r} gives no camera image (observations: {sorted(spaces)})")
    state = [[n, int(np.prod(shape)), lo.reshape(-1).tolist(), hi.reshape(-1).tolist()]
             for n, (shape, lo, hi) in spaces.items() if len(shape) != 3]
    return {"state_features": state, "action_low": np.asarray(low, np.float64).tolist(),
            "action_high": np.asarray(high, np.float64).tolist(), "image_feature": image_feature,
            "image_size": image_size, "hidden": hidden, "init_log_std": init_log_std}
