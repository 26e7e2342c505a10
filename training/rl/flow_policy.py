"""The reference VLA as an ``RLPolicy``: flow-policy gradients with exact log-probs (ReinFlow / Flow-GRPO style).

``VLA.sample`` integrates its flow with Euler steps, ``x_{k+1} = x_k - v(x_k, t_k) / N`` from Gaussian noise
``x_0``: a deterministic map whose action density has no closed form. For RL each step adds Gaussian noise,

    x_{k+1} = mu_k + sigma * eps_k,    mu_k = x_k - v_theta(x_k, t_k, obs) / N,    t_k = 1 - k / N,

so the chain x_0 .. x_N is a Markov chain of Gaussians and

    log pi(chain | obs) = sum_k log N(x_{k+1}; mu_k, sigma^2 I)      (over every step, chunk entry and action dim).

The density of x_0 ~ N(0, I) is left out: it does not depend on the weights, so every importance ratio is the
same with or without it. ``raw`` (what the log-prob is the density of) is the whole chain, (N + 1, horizon,
action_dim) per row, normalized units; ``evaluate_actions`` re-scores a stored chain under the current weights
(the means depend on them, the x's are data), differentiably. The entropy is the Gaussian steps' (a constant:
``sigma`` is fixed, set by ``rl_sigma``); the value is 0 (no critic: use GRPO).

Acting mode: ``exec_steps`` (the checkpoint's, as SFT evaluation executes chunks). With ``exec_steps = 1`` RL
re-plans every env step (only the chunk's first action is executed). With ``exec_steps = k > 1`` one RL step is a
chunk: the policy returns the first k actions of the chunk flattened (B, k * A) and the env executes them in
turn (``training.rl.envs.ChunkedActions``, env option ``action_chunk = k``), so RL samples k times fewer chains
per env step and ``lake eval`` of the same checkpoint (``VLA.act``, k actions per chunk) measures the policy in
the mode RL trains. ``from_sft`` sets ``exec_steps``. Either way the chain's log-prob covers the whole chunk:
the executed entries depend on every chunk entry through attention.

Sampling is a pure function of (weights, observation row, seed row): row i's x_0 and eps come from
``numpy.random.default_rng(seeds[i])``. ``act`` (evaluation) is ``VLA.act``: the noise-free chain. ``x0_zero``:
every chain (RL and ``act``) starts at x_0 = 0, so the only randomness is the step noise the log-prob holds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from training.factories import register_factory
from training.observations import normalize, observation_prefix
from training.pi05 import sincos_embedding
from training.vla import VLA

from .policy import ActionSample

FACTORY = "vla_flow"


class FlowPolicy(VLA):
    """A ``VLA`` (same weights, same ``state_dict`` keys) that RL can fine-tune. ``rl_sigma``: the per-step
    noise std (normalized action units); ``task``: the instruction the policy is given (RL observations carry
    no text)."""

    def __init__(self, *, rl_sigma: float = 0.1, task: str = "", x0_zero: bool = False, **vla_config):
        super().__init__(**vla_config)
        if not rl_sigma > 0:
            raise ValueError(f"rl_sigma must be > 0 (the chain's log-prob needs noise), got {rl_sigma!r}")
        self.rl_sigma, self.task, self.x0_zero = float(rl_sigma), str(task), bool(x0_zero)

    def sample(self, prefix, cu_prefix, generator=None, cond=None, noise=None, sigma: float = 0.0,
               chain: bool = False):
        """``VLA.sample``; with ``x0_zero`` the chain starts at x_0 = 0 (the prior's mean) when no noise is given
        (``act``, evaluation), as RL samples it: x_0's randomness is outside the log-prob (it does not depend on
        the weights), so with it the only randomness is the step noise the policy gradient is built on."""
        if noise is None and self.x0_zero:
            b = cu_prefix.numel() - 1
            noise = torch.zeros(b, self.denoise_steps + 1, self.horizon, self.layout["action_dim"])
        return super().sample(prefix, cu_prefix, generator, cond, noise=noise, sigma=sigma, chain=chain)

    # --- shared: prefix and state condition from batched numpy observations --------------------------------

    def _inputs(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        obs = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in obs.items()}
        n = len(obs[self.layout["state_features"][0]])
        prefix, cu = observation_prefix(self, obs, [self.task] * n)
        cond = None
        if self.state_in_suffix:
            cond = self.condition(torch.from_numpy(normalize(self.layout, obs, self.layout["state_features"])), n)
        return prefix, cu, cond

    def _noise(self, seeds: np.ndarray) -> torch.Tensor:
        """(B, N + 1, horizon, action_dim): row i's x_0 and step noises, from ``seeds[i]`` alone."""
        shape = (self.denoise_steps + 1, self.horizon, self.layout["action_dim"])
        noise = torch.from_numpy(np.stack([np.random.default_rng(int(s)).standard_normal(shape)
                                           for s in np.asarray(seeds)]).astype(np.float32))
        if self.x0_zero:
            noise[:, 0] = 0.0
        return noise

    # --- sampling (rollouts) -------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_chain(self, prefix, cu_prefix, noise: torch.Tensor, sigma: float,
                     cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(chain (B, N + 1, horizon, A), log-prob (B,)) from ``noise`` (B, N + 1, horizon, A): ``VLA.sample``'s
        loop (x_0 = noise[:, 0], step k adds ``sigma * noise[:, k + 1]``). Step k's residual x_{k+1} - mu_k is
        ``sigma * noise[:, k + 1]``, so the log-prob is that noise's Gaussian density (0 when ``sigma`` = 0)."""
        chain = self.sample(prefix, cu_prefix, cond=cond, noise=noise, sigma=sigma, chain=True)
        if not sigma:
            return chain, torch.zeros(len(chain))
        return chain, _gaussian_logp(sigma * noise[:, 1:], torch.zeros(()), sigma)

    @torch.no_grad()
    def act_with_logprob(self, obs: dict[str, np.ndarray], seeds: np.ndarray) -> ActionSample:
        """The executed actions are the final chunk's first ``exec_steps`` entries, flattened (B, exec_steps * A):
        with ``exec_steps`` > 1 the env must execute that many actions per step (``training.rl.envs``'
        ``action_chunk``); the chain's log-prob covers the whole chunk, executed or not."""
        prefix, cu, cond = self._inputs(obs)
        chain, logp = self.sample_chain(prefix, cu, self._noise(seeds), self.rl_sigma, cond)
        b, k = len(chain), self.exec_steps
        actions = self.unnormalize(chain[:, -1, :k].numpy()).reshape(b, -1).astype(np.float32)
        return ActionSample(actions, chain.numpy(), logp.numpy().astype(np.float32), np.zeros(b, np.float32))

    # --- re-scoring (the loss) -----------------------------------------------------------------------------

    def chain_logprob(self, prefix, cu_prefix, chain: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """log pi of stored chains (B, N + 1, horizon, A) under the current weights, differentiable (B,). All N
        steps of all rows go through the network as one batch (``_velocities``)."""
        b, n = cu_prefix.numel() - 1, self.denoise_steps
        if chain.shape[1:] != (n + 1, self.horizon, self.layout["action_dim"]):
            raise ValueError(f"chain {tuple(chain.shape)} is not (B, {n + 1}, {self.horizon}, "
                             f"{self.layout['action_dim']}): stored by a policy with other denoise steps or horizon?")
        chain = chain.float()
        x = chain[:, :n]
        t = (1.0 - torch.arange(n, dtype=torch.float32) / n).repeat(b)
        v = self._velocities(prefix, cu_prefix, x.reshape(b * n, *x.shape[2:]), t, n, cond).view_as(x)
        return _gaussian_logp(chain[:, 1:], x - v / n, self.rl_sigma)

    def _velocities(self, prefix, cu_prefix, x, t, repeat: int, cond) -> torch.Tensor:
        """v(x, t) for ``repeat`` consecutive (x, t) rows per prefix, through the padded dense backbone: one
        batched attention per layer (the packed path loops over sequences on CPU). Every prefix has one length
        here: one task text, the same cameras."""
        b, w = cu_prefix.numel() - 1, prefix.shape[-1]
        pre = prefix.view(b, prefix.shape[0] // b, w).repeat_interleave(repeat, 0)
        te = self.time_mlp(sincos_embedding(t.to(x.dtype), w))
        suffix = self.action_in[self.embodiment](x) + te[:, None]
        if cond is not None:
            suffix = suffix + cond.repeat_interleave(repeat, 0)[:, None]
        _, out = self.backbone.forward_dense(pre, torch.ones(pre.shape[:2], dtype=torch.bool), suffix)
        return self.action_out[self.embodiment](out)

    def flow_matching_loss(self, obs, raw, generator: torch.Generator | None = None,
                           noise: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        """The SFT flow-matching loss (``VLA.loss``'s: x_t = t noise + (1 - t) a, target noise - a, openpi's
        convention) of stored chains' final chunks, per row (B,), differentiable: ``raw[:, -1]`` is the chunk the
        env executed (its first ``exec_steps`` entries) in normalized units, the whole horizon is fitted as SFT
        fits a demo chunk. No likelihood of the chain is involved (``training.rl.losses.flow_rwr`` weights these
        rows by advantage). ``noise`` / ``t`` default to draws from ``generator`` in ``VLA.loss``'s order (noise,
        then t with its Beta(1.5, 1)-like emphasis on noisy times)."""
        prefix, cu, cond = self._inputs(obs)
        a = torch.as_tensor(raw)[:, -1].float()
        if noise is None:
            noise = torch.randn(a.shape, generator=generator, dtype=a.dtype)
        if t is None:
            t = torch.rand(len(a), generator=generator).pow(1 / 1.5) * 0.999 + 0.001
        tt = t[:, None, None]
        pred = self._velocities(prefix, cu, tt * noise + (1 - tt) * a, t, 1, cond)
        return (pred - (noise - a)).pow(2).mean((1, 2))

    def evaluate_actions(self, obs, raw):
        prefix, cu, cond = self._inputs(obs)
        logp = self.chain_logprob(prefix, cu, torch.as_tensor(raw), cond)
        return logp, torch.full_like(logp, self.chain_entropy()), torch.zeros_like(logp)

    def chain_entropy(self) -> float:
        """Entropy of the chain's Gaussian steps given x_0 (nats; constant: sigma is fixed)."""
        dims = self.denoise_steps * self.horizon * self.layout["action_dim"]
        return dims * (0.5 * math.log(2 * math.pi * math.e) + math.log(self.rl_sigma))

    def value(self, obs):
        return torch.zeros(len(next(iter(obs.values()))))

    # --- weights -------------------------------------------------------------------------------------------

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})


def _gaussian_logp(x: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """Sum over all but the batch dim of log N(x; mean, sigma^2)."""
    return torch.distributions.Normal(mean, sigma).log_prob(x).flatten(1).sum(1)


def make_flow_policy(**config) -> FlowPolicy:
    """Checkpoint factory, registered as ``vla_flow``."""
    return FlowPolicy(**config)


register_factory(FACTORY, make_flow_policy)


def from_sft(sft_checkpoint: str, out: str, *, env_id: str, rl_sigma: float = 0.1, exec_steps: int = 1,
             task: str | None = None, x0_zero: bool = False) -> str:
    """An RL start checkpoint (factory ``vla_flow``) holding an SFT ``vla`` checkpoint's weights unchanged, acting
    with ``exec_steps``; ``task``: default the env family's. Its lineage is the SFT checkpoint's, plus where it
    came from. Returns ``out``. Raises ValueError for a checkpoint that is not a VLA."""
    from training.checkpoint import load, save

    from .envs import get_family

    ckpt = load(sft_checkpoint)
    if ckpt["factory"] not in ("vla", FACTORY):
        raise ValueError(f"{sft_checkpoint}: factory {ckpt['factory']!r} is not the reference VLA")
    config = {k: v for k, v in ckpt["config"].items() if k not in ("rl_sigma", "task", "x0_zero")}
    config.update(exec_steps=exec_steps, rl_sigma=rl_sigma, task=task or get_family(env_id).default_task)
    if x0_zero:
        config["x0_zero"] = True
    policy = make_flow_policy(**config)
    policy.load_state_dict(ckpt["state_dict"])
    lin = dict(ckpt.get("lineage") or {})
    lin["extra"] = {**(lin.get("extra") or {}), "env_id": env_id, "init_from": str(sft_checkpoint),
                    "init_step": ckpt.get("step")}
    return save(out, policy, factory=FACTORY, config=config, step=0, lineage=lin)


__all__ = ["FACTORY", "FlowPolicy", "from_sft", "make_flow_policy"]
