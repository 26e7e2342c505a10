"""Small transformer pieces shared by the π0.5-like model: RMSNorm, RoPE, sin-cos embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["RMSNorm", "apply_rope", "sincos_embedding"]


class RMSNorm(nn.Module):
    """Gemma-style RMSNorm: `x / rms(x) * (1 + weight)`, weight initialised to 0."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in at least fp32: bf16 squares lose too much precision
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1 + self.weight.to(y.dtype))).to(x.dtype)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary embedding (rotate-half) of `x` `(..., heads, head_dim)` at int `positions` `(...)`.

    Raises:
        ValueError: odd head_dim, or positions not matching x's leading dims.
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {d}")
    if positions.shape != x.shape[:-2]:
        raise ValueError(f"positions {tuple(positions.shape)} must match x's leading dims {tuple(x.shape[:-2])}")
    # angles in fp32 or better: large positions times small frequencies lose digits in half precision
    ang_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=ang_dtype) / d)
    ang = positions.to(ang_dtype)[..., None] * inv_freq  # (..., d/2)
    cos, sin = ang.cos()[..., None, :].to(x.dtype), ang.sin()[..., None, :].to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def sincos_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sine-cosine embedding `(B, dim)` of scalar times `t` `(B,)` (π0's flow-matching time
    embedding: periods from `min_period` to `max_period`, sensitive on [0, 1])."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    frac = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=t.dtype)
    period = min_period * (max_period / min_period) ** frac
    arg = t[:, None] * (2 * math.pi / period)
    return torch.cat([arg.sin(), arg.cos()], dim=-1)
