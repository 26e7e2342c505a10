"""A small GR00T-N1.5-like VLA trained straight from ``PackedBatch``.

Prefix (per sample, packed, no pad): image tokens (a trainable patch embedding of the uint8 patches, or a
projection of frozen-encoder embeddings), instruction tokens, and state tokens (per-embodiment projectors).
Suffix: the action chunk, denoised by flow matching (openpi's convention: x_t = t·noise + (1−t)·actions,
the network predicts noise − actions) through the π0.5 prefix/suffix backbone (``training.pi05``): the
prefix attends bidirectionally within itself, action tokens see their sample's prefix and each other.
Per-embodiment action encoders/decoders map each robot's action space to the shared width.
``state_in_suffix``: the current state is also added to every action token's input (π0 feeds the state to the
action expert): the action expert then reads it without going through attention, which learns a
state-conditioned policy (e.g. Meta-World's goal-conditioned reaching) in far fewer steps on a small model.

``VLA`` also implements ``training.checkpoint.Policy``: raw observations in, un-normalized actions out,
executing an action chunk for ``exec_steps`` steps before re-planning (prefix K/V cached across the
denoising steps).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import nn

from .factories import register_factory
from .observations import ACTION, IMAGE, STATE, TEXT, normalize, observation_prefix
from .pi05 import Pi05Backbone, Pi05Config, sincos_embedding


class VLA(nn.Module):
    def __init__(self, layout: dict, width: int = 128, depth: int = 4, heads: int = 4, head_dim: int = 32,
                 kv_heads: int = 1, embodiment: str = "default", denoise_steps: int = 10, exec_steps: int = 8,
                 state_in_suffix: bool = False):
        super().__init__()
        self.layout, self.embodiment = layout, embodiment
        self.denoise_steps, self.exec_steps = denoise_steps, exec_steps
        self.horizon = len(layout["action_offsets"])
        cfg = Pi05Config(width=width, depth=depth, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                         action_dim=layout["action_dim"], action_horizon=self.horizon)
        self.backbone = Pi05Backbone(cfg)
        self.image_in = nn.Linear(layout["token_dim"], width)
        self.text_in = nn.Embedding(layout["vocab_size"], width)
        self.state_in = nn.ModuleDict({embodiment: nn.Linear(layout["state_dim"], width)})
        self.action_in = nn.ModuleDict({embodiment: nn.Linear(layout["action_dim"], width)})
        self.action_out = nn.ModuleDict({embodiment: nn.Linear(width, layout["action_dim"])})
        self.state_in_suffix = bool(state_in_suffix)
        if self.state_in_suffix:
            self.state_cond = nn.ModuleDict({embodiment: nn.Linear(layout["state_dim"], width)})
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self._queue: list[deque] = []

    # --- training -----------------------------------------------------------------------------------------

    def prefix(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed prefix embeddings (image, text, state tokens of every sample) and their int32 cu_seqlens."""
        mod = batch.modality.long()
        emb = self.image_in.weight.new_zeros(mod.shape[0], self.image_in.out_features)
        img = batch.image_patches.float().div(255) if batch.image_patches is not None else batch.image_embeds.float()
        emb[mod == IMAGE] = self.image_in(img)
        emb[mod == TEXT] = self.text_in(batch.text_ids.long())
        emb[mod == STATE] = self.state_in[self.embodiment](batch.state.float())
        keep = mod != ACTION
        lens = torch.diff(batch.cu_seqlens.long()) - self.horizon
        cu = torch.zeros(lens.numel() + 1, dtype=torch.int32, device=mod.device)
        cu[1:] = torch.cumsum(lens, 0)
        return emb[keep], cu

    def condition(self, state: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """Per-sample (n, width) state embedding added to the action tokens (``state_in_suffix``), else None.
        ``state``: the packed state tokens (n * history, state_dim), normalized; the newest step is used."""
        if not self.state_in_suffix or state is None:
            return None
        return self.state_cond[self.embodiment](state.float().view(n, -1, state.shape[-1])[:, -1])

    def velocity(self, prefix, cu_prefix, x_t, t, backend=None, cond: torch.Tensor | None = None) -> torch.Tensor:
        te = self.time_mlp(sincos_embedding(t.to(x_t.dtype), self.backbone.cfg.width))
        suffix = self.action_in[self.embodiment](x_t) + te[:, None]
        if cond is not None:
            suffix = suffix + cond[:, None]
        _, out = self.backbone.forward_packed(prefix, cu_prefix, suffix, backend=backend)
        return self.action_out[self.embodiment](out)

    def forward(self, batch, generator: torch.Generator | None = None, per_sample: bool = False):
        """The training loss (forward goes through ``__call__`` so DDP can sync gradients); ``per_sample``: also
        each sample's loss, detached (n,), for reporting per embodiment."""
        return self.loss(batch, generator, per_sample)

    def loss(self, batch, generator: torch.Generator | None = None, per_sample: bool = False):
        """Flow-matching MSE over real (non-pad) action tokens: the per-token mean over the pack."""
        n = batch.cu_seqlens.numel() - 1
        actions = batch.actions.float().view(n, self.horizon, -1)
        weight = (1 - batch.action_is_pad.float()).view(n, self.horizon, 1)
        prefix, cu = self.prefix(batch)
        noise = torch.randn(actions.shape, generator=generator, dtype=actions.dtype)
        # Beta(1.5, 1)-like emphasis on noisy times, as π0 samples them; uniform works too
        t = torch.rand(n, generator=generator).pow(1 / 1.5) * 0.999 + 0.001
        tt = t[:, None, None]
        pred = self.velocity(prefix, cu, tt * noise + (1 - tt) * actions, t, cond=self.condition(batch.state, n))
        err = (pred - (noise - actions)).pow(2) * weight
        loss = err.sum() / (weight.sum() * actions.shape[-1]).clamp_min(1)
        if not per_sample:
            return loss
        each = err.detach().sum((1, 2)) / (weight.sum((1, 2)) * actions.shape[-1]).clamp_min(1)
        return loss, each

    # --- acting (training.checkpoint.Policy) ------------------------------------------------------------

    @property
    def input_features(self) -> list[str]:
        """The observation keys ``act`` reads (lake feature names)."""
        return [*self.layout["cameras"], *self.layout["state_features"]]

    def reset(self, batch_size: int) -> None:
        self._queue = [deque() for _ in range(batch_size)]

    @torch.no_grad()
    def sample(self, prefix, cu_prefix, generator: torch.Generator | None = None,
               cond: torch.Tensor | None = None, noise: torch.Tensor | None = None, sigma: float = 0.0,
               chain: bool = False) -> torch.Tensor:
        """Normalized action chunks (B, horizon, action_dim) by Euler steps x_{k+1} = x_k - v(x_k, t_k) / N from
        Gaussian x_0; prefix K/V computed once for all steps. ``cond``: ``condition``'s state embedding (models
        with ``state_in_suffix``). ``noise`` (B, N + 1, horizon, action_dim): x_0 = noise[:, 0] (else drawn from
        ``generator``) and, with ``sigma`` > 0, step k adds ``sigma * noise[:, k + 1]`` (the stochastic chain RL
        samples, ``training.rl.flow_policy``); ``chain``: return every x_k (B, N + 1, horizon, action_dim)."""
        b = cu_prefix.numel() - 1
        if noise is None:
            x = torch.randn(b, self.horizon, self.layout["action_dim"], generator=generator)
        else:
            x = noise[:, 0]
        if sigma and noise is None:
            raise ValueError("sigma > 0 needs the step noise: pass noise (B, N + 1, horizon, action_dim)")
        xs = [x]
        cache = self.backbone.prefill(prefix, cu_prefix, self.horizon)
        for step in range(self.denoise_steps):
            t = torch.full((b,), 1.0 - step / self.denoise_steps)
            te = self.time_mlp(sincos_embedding(t, self.backbone.cfg.width))
            suffix = self.action_in[self.embodiment](x) + te[:, None]
            out = self.backbone.forward_suffix(suffix if cond is None else suffix + cond[:, None], cache)
            x = x - self.action_out[self.embodiment](out) / self.denoise_steps
            if sigma:
                x = x + sigma * noise[:, step + 1]
            xs.append(x)
        return torch.stack(xs, 1) if chain else x

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray:
        b = len(tasks)
        if len(self._queue) != b:
            self.reset(b)
        need = [i for i in range(b) if not self._queue[i]]
        if need:
            sub = {k: np.asarray(v)[need] for k, v in obs.items()}
            prefix, cu = observation_prefix(self, sub, [tasks[i] for i in need])
            cond = None
            if self.state_in_suffix:
                state = torch.from_numpy(normalize(self.layout, sub, self.layout["state_features"]))
                cond = self.condition(state, len(need))
            chunk = self.sample(prefix, cu, cond=cond).numpy()
            chunk = self.unnormalize(chunk)
            for j, i in enumerate(need):
                self._queue[i].extend(chunk[j, :self.exec_steps])
        return np.stack([self._queue[i].popleft() for i in range(b)])

    def unnormalize(self, actions: np.ndarray) -> np.ndarray:
        lay, out, at = self.layout, [], 0
        for name, dim in zip(lay["action_features"], lay["action_dims"]):
            n = lay["norm"][name]
            out.append(actions[..., at:at + dim] * np.asarray(n["scale"]) + np.asarray(n["shift"]))
            at += dim
        return np.concatenate(out, axis=-1)


def make_vla(**config) -> VLA:
    """Checkpoint factory, registered as ``vla``."""
    return VLA(**config)


register_factory("vla", make_vla)


__all__ = ["VLA", "make_vla"]
