"""Flow-matching action head on the π0.5-like backbone: training loss and denoising loops.

Convention (openpi's): t = 1 is noise, t = 0 the action; x_t = t * noise + (1 - t) * actions,
the network predicts the velocity u = noise - actions, sampling integrates Euler steps
dt = -1 / num_steps from t = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.masks import make_attn_mask
from training.pi05 import Pi05Backbone, Pi05Config, dense_attention, sincos_embedding

__all__ = ["Pi05Policy", "flow_matching_targets", "sample_actions", "sample_actions_dense"]


def flow_matching_targets(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    """(x_t, u_t) for actions/noise `(B, H, A)` and times `t` `(B,)` in [0, 1]."""
    tt = t[:, None, None]
    return tt * noise + (1 - tt) * actions, noise - actions


class Pi05Policy(nn.Module):
    """Backbone + action in/out projections + time MLP (added to the action tokens; π0.5
    conditions through adaRMS instead, which changes no attention pattern)."""

    def __init__(self, cfg: Pi05Config = Pi05Config()):
        super().__init__()
        self.cfg = cfg
        self.backbone = Pi05Backbone(cfg)
        self.action_in = nn.Linear(cfg.action_dim, cfg.width)
        self.time_in, self.time_out = nn.Linear(cfg.width, cfg.width), nn.Linear(cfg.width, cfg.width)
        self.action_out = nn.Linear(cfg.width, cfg.action_dim)

    def embed_suffix(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Action tokens `(B, H, width)` from noisy actions `(B, H, A)` at times `t` `(B,)`."""
        te = sincos_embedding(t.to(x_t.dtype), self.cfg.width)
        te = F.silu(self.time_out(F.silu(self.time_in(te))))
        return self.action_in(x_t) + te[:, None]

    def velocity_packed(self, prefix, cu_prefix, x_t, t, *, backend=None) -> torch.Tensor:
        """Velocity `(B, H, A)`; prefix packed `(total_prefix, width)` with int32 `cu_prefix`."""
        _, out = self.backbone.forward_packed(prefix, cu_prefix, self.embed_suffix(x_t, t), backend=backend)
        return self.action_out(out)

    def velocity_dense(self, prefix, prefix_mask, x_t, t, *, attention: str = "sdpa") -> torch.Tensor:
        """Velocity `(B, H, A)`; prefix padded `(B, Np, width)` with bool `prefix_mask`."""
        _, out = self.backbone.forward_dense(prefix, prefix_mask, self.embed_suffix(x_t, t), attention=attention)
        return self.action_out(out)


def _times(step: int, num_steps: int, b: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.full((b,), 1.0 - step / num_steps, dtype=ref.dtype, device=ref.device)


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")


@torch.no_grad()
def sample_actions(policy: Pi05Policy, prefix, cu_prefix, noise, num_steps: int = 10, *, use_cache=True, backend=None):
    """Denoise `noise` `(B, H, A)` into actions, prefix packed. `use_cache`: compute the prefix
    K/V once and run only the suffix per step; False recomputes the full forward each step."""
    _check_steps(num_steps)
    bb, x, b = policy.backbone, noise, noise.shape[0]
    cache = bb.prefill(prefix, cu_prefix, noise.shape[1], backend=backend) if use_cache else None
    for step in range(num_steps):
        suffix = policy.embed_suffix(x, _times(step, num_steps, b, x))
        if cache is not None:
            out = bb.forward_suffix(suffix, cache, backend=backend)
        else:
            _, out = bb.forward_packed(prefix, cu_prefix, suffix, backend=backend)
        x = x - policy.action_out(out) / num_steps
    return x


def _dense_prefill(bb: Pi05Backbone, prefix, prefix_mask, attend):
    """Padded prefix K/V per layer (the eager cache a padded implementation keeps)."""
    ar = torch.zeros(prefix.shape[1], dtype=torch.bool, device=prefix.device)
    mask = make_attn_mask(prefix_mask, ar)[:, None]
    pos = torch.cumsum(prefix_mask.long(), dim=1) - 1
    kv, xp = [], prefix
    for i, layer in enumerate(bb.layers):
        q, k, v = layer.prefix.qkv(xp, pos)
        kv.append((k, v))
        if i + 1 < len(bb.layers):  # same saving as `Pi05Backbone.prefill`, to keep the comparison fair
            xp = layer.prefix.finish(xp, attend(q, k, v, mask))
    return kv


def _dense_suffix(bb: Pi05Backbone, suffix, prefix_mask, kv, attend):
    """Suffix against the padded cache: concatenates [cache ∥ suffix K/V] (a copy per step)
    and attends with a dense `(B, 1, Ns, Np + Ns)` mask, as eager implementations do."""
    b, n_s, _ = suffix.shape
    mask = torch.cat([prefix_mask, prefix_mask.new_ones(b, n_s)], dim=1)[:, None, None, :]
    pos = prefix_mask.long().sum(1, keepdim=True) + torch.arange(n_s, device=suffix.device)
    xs = suffix
    for layer, (kp, vp) in zip(bb.layers, kv):
        q, k, v = layer.suffix.qkv(xs, pos)
        k, v = torch.cat([kp, k], dim=1), torch.cat([vp, v], dim=1)
        xs = layer.suffix.finish(xs, attend(q, k, v, mask))
    return bb.suffix_norm(xs)


@torch.no_grad()
def sample_actions_dense(policy: Pi05Policy, prefix, prefix_mask, noise, num_steps: int = 10, *, use_cache=True,
                         attention: str = "sdpa"):
    """Padded baseline of `sample_actions` on a padded prefix `(B, Np, width)` + bool mask.
    `use_cache=False` recomputes the full dense-mask forward every step; `attention` as in `forward_dense`."""
    _check_steps(num_steps)
    bb, x, b = policy.backbone, noise, noise.shape[0]
    attend = dense_attention(attention)
    kv = _dense_prefill(bb, prefix, prefix_mask, attend) if use_cache else None
    for step in range(num_steps):
        suffix = policy.embed_suffix(x, _times(step, num_steps, b, x))
        if kv is not None:
            out = _dense_suffix(bb, suffix, prefix_mask, kv, attend)
        else:
            _, out = bb.forward_dense(prefix, prefix_mask, suffix, attention=attention)
        x = x - policy.action_out(out) / num_steps
    return x
