"""A small π0.5-like backbone: a prefix expert (image + text tokens) and a suffix expert
(action tokens) that share attention, as openpi's `Pi0` with `make_attn_mask` defines it.

Attention pattern (openpi `ar_mask` = 0 for every prefix token, 1 on the first suffix token,
0 after): prefix tokens attend all real prefix tokens bidirectionally and never the suffix;
suffix tokens attend the whole real prefix and every suffix token.

Two formulations of the same function:
- `forward_dense`: padded batch + 4-D boolean mask from `make_attn_mask` + SDPA (the eager
  baseline; pad tokens run through every layer);
- `forward_packed`: no dense mask and no pad: prefix attention is `varlen_attention` over
  the packed real prefix tokens, suffix attention is suffix queries over each sample's
  [prefix KV ∥ suffix KV] (varlen with separate key packing).
Inference (`prefill` + `forward_suffix`) computes prefix K/V once into a preallocated
buffer and writes only the suffix slots in place each denoising step (`training.pi05_policy`).
Layers are Gemma-like: RMSNorm, RoPE at positions counted over real tokens, GeGLU MLP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.masks import make_attn_mask
from training.packing import check_cu_seqlens, cu_seqlens_from_lengths, position_ids_from_cu_seqlens
from training.varlen import varlen_attention

__all__ = [
    "Pi05Config",
    "Pi05Backbone",
    "Pi05KVCache",
    "RMSNorm",
    "SuffixPacking",
    "apply_rope",
    "sincos_embedding",
    "suffix_packing",
]


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


@dataclass(frozen=True)
class Pi05Config:
    """Sizes of the π0.5-like model; widths in features, horizon in tokens."""

    width: int = 256
    depth: int = 4
    heads: int = 8
    kv_heads: int = 1  # Gemma 2B uses multi-query attention
    head_dim: int = 32
    mlp_ratio: int = 4
    action_dim: int = 32
    action_horizon: int = 50
    rope_base: float = 10_000.0

    def __post_init__(self):
        for name in ("width", "depth", "heads", "kv_heads", "head_dim", "mlp_ratio", "action_dim", "action_horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"Pi05Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")


class _Expert(nn.Module):
    """One expert's half of a layer: pre-norm attention projections and a GeGLU MLP."""

    def __init__(self, cfg: Pi05Config):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.width, cfg.head_dim
        self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
        self.wq = nn.Linear(d, cfg.heads * hd, bias=False)
        self.wk = nn.Linear(d, cfg.kv_heads * hd, bias=False)
        self.wv = nn.Linear(d, cfg.kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.heads * hd, d, bias=False)
        self.gate = nn.Linear(d, cfg.mlp_ratio * d, bias=False)
        self.up = nn.Linear(d, cfg.mlp_ratio * d, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * d, d, bias=False)

    def qkv(self, x: torch.Tensor, pos: torch.Tensor):
        """x `(..., width)`, pos `(...)` -> q `(..., heads, hd)`, k, v `(..., kv_heads, hd)`."""
        c, h = self.cfg, self.attn_norm(x)
        q = self.wq(h).unflatten(-1, (c.heads, c.head_dim))
        k = self.wk(h).unflatten(-1, (c.kv_heads, c.head_dim))
        v = self.wv(h).unflatten(-1, (c.kv_heads, c.head_dim))
        return apply_rope(q, pos, c.rope_base), apply_rope(k, pos, c.rope_base), v

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual attention output (attn `(..., heads, hd)`) then residual MLP."""
        x = x + self.wo(attn.flatten(-2))
        h = self.mlp_norm(x)
        return x + self.down(F.gelu(self.gate(h), approximate="tanh") * self.up(h))


def sdpa_padded(q, k, v, mask):
    """SDPA on padded `(B, N, heads, hd)` tensors with a bool `(B, 1, Nq, Nk)` mask (GQA allowed)."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)


def eager_padded(q, k, v, mask):
    """The eager formulation openpi's PyTorch π0/π0.5 trains with (transformers' Gemma
    `eager_attention_forward`): K/V heads repeated for GQA, `q k^T * scale` plus an additive mask
    (-2.38e38 where the bool mask is False), softmax in (at least) fp32, times V. Same shapes as `sdpa_padded`."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * q.shape[-1] ** -0.5
    scores = scores + torch.where(mask, 0.0, -2.3819763e38).to(scores.dtype)
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    return torch.matmul(probs, v).transpose(1, 2)


DENSE_ATTENTION = {"sdpa": sdpa_padded, "eager": eager_padded}


def dense_attention(kind: str):
    """The padded dense-mask attention called ``kind`` ("sdpa" or "eager")."""
    try:
        return DENSE_ATTENTION[kind]
    except KeyError:
        raise ValueError(f"unknown dense attention {kind!r} (known: {sorted(DENSE_ATTENTION)})") from None


class _Layer(nn.Module):
    def __init__(self, cfg: Pi05Config):
        super().__init__()
        self.prefix, self.suffix = _Expert(cfg), _Expert(cfg)


@dataclass(frozen=True)
class SuffixPacking:
    """Index bookkeeping to pack each sample as [real prefix ∥ suffix] without pad.

    `order` gathers rows of `cat([prefix_tokens, suffix_tokens])` into that layout;
    `prefix_rows`/`suffix_rows` are where those tokens land in it; `cu_q`/`cu_k` the
    query/key packings; positions are RoPE positions (the suffix continues the real prefix).
    """

    prefix_positions: torch.Tensor
    suffix_positions: torch.Tensor
    order: torch.Tensor
    prefix_rows: torch.Tensor
    suffix_rows: torch.Tensor
    cu_q: torch.Tensor
    cu_k: torch.Tensor
    max_prefix: int
    max_k: int
    horizon: int


def suffix_packing(cu_prefix: torch.Tensor, horizon: int) -> SuffixPacking:
    """Build `SuffixPacking` for packed prefixes `cu_prefix` and `horizon` suffix tokens each.

    Raises:
        TypeError, ValueError: bad `cu_prefix` (see `check_cu_seqlens`) or `horizon` < 1.
    """
    check_cu_seqlens(cu_prefix)
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
    dev = cu_prefix.device
    plen = (cu_prefix[1:] - cu_prefix[:-1]).long()
    b, tp = plen.numel(), int(cu_prefix[-1])
    cu_k = cu_seqlens_from_lengths(plen + horizon, device=dev)
    # row of every prefix / suffix token inside the interleaved [prefix_b ∥ suffix_b] layout
    seq_p = torch.repeat_interleave(torch.arange(b, device=dev), plen, output_size=tp)
    pre_rows = torch.arange(tp, device=dev) + seq_p * horizon
    suf_rows = (cu_k[:-1].long() + plen)[:, None] + torch.arange(horizon, device=dev)
    order = torch.empty(tp + b * horizon, dtype=torch.long, device=dev)
    order[pre_rows] = torch.arange(tp, device=dev)
    order[suf_rows.flatten()] = tp + torch.arange(b * horizon, device=dev)
    return SuffixPacking(
        prefix_positions=position_ids_from_cu_seqlens(cu_prefix),
        suffix_positions=(plen[:, None] + torch.arange(horizon, device=dev)).flatten(),
        order=order,
        prefix_rows=pre_rows,
        suffix_rows=suf_rows.flatten(),
        cu_q=cu_seqlens_from_lengths([horizon] * b, device=dev),
        cu_k=cu_k,
        max_prefix=int(plen.max()) if b else 0,
        max_k=int(plen.max()) + horizon if b else horizon,
        horizon=horizon,
    )


@dataclass
class Pi05KVCache:
    """Per-layer K/V buffers `(total_prefix + B * horizon, kv_heads, head_dim)` laid out as
    [prefix_b ∥ suffix slot_b]; prefix rows are written once, suffix rows in place per step."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    packing: SuffixPacking


class Pi05Backbone(nn.Module):
    """`depth` layers of (prefix expert, suffix expert) with joint attention; see module doc."""

    def __init__(self, cfg: Pi05Config = Pi05Config()):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.depth))
        self.prefix_norm, self.suffix_norm = RMSNorm(cfg.width), RMSNorm(cfg.width)

    def forward_dense(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, suffix: torch.Tensor, *,
                      attention: str = "sdpa"):
        """Padded dense-mask baseline. prefix `(B, Np, width)` padded with bool `prefix_mask` `(B, Np)`,
        suffix `(B, Ns, width)` -> (prefix_out, suffix_out) of the same shapes. `attention`: "sdpa"
        (torch SDPA with the 4-D mask) or "eager" (openpi's matmul / softmax formulation)."""
        attend = dense_attention(attention)
        b, n_p, _ = prefix.shape
        n_s = suffix.shape[1]
        input_mask = torch.cat([prefix_mask, prefix_mask.new_ones(b, n_s)], dim=1)
        ar = torch.zeros(n_p + n_s, dtype=torch.bool, device=prefix.device)
        ar[n_p] = True  # the suffix starts a block the prefix cannot see
        mask = make_attn_mask(input_mask, ar)[:, None]  # (B, 1, N, N)
        pos = torch.cumsum(input_mask.long(), dim=1) - 1
        xp, xs = prefix, suffix
        for layer in self.layers:
            qp, kp, vp = layer.prefix.qkv(xp, pos[:, :n_p])
            qs, ks, vs = layer.suffix.qkv(xs, pos[:, n_p:])
            o = attend(torch.cat([qp, qs], 1), torch.cat([kp, ks], 1), torch.cat([vp, vs], 1), mask)
            xp, xs = layer.prefix.finish(xp, o[:, :n_p]), layer.suffix.finish(xs, o[:, n_p:])
        return self.prefix_norm(xp), self.suffix_norm(xs)

    def forward_packed(self, prefix: torch.Tensor, cu_prefix: torch.Tensor, suffix: torch.Tensor, *, backend=None):
        """Optimized. prefix `(total_prefix, width)` packed real tokens with int32 `cu_prefix`
        `(B + 1,)`, suffix `(B, Ns, width)` -> (prefix_out `(total_prefix, width)`, suffix_out)."""
        b, n_s, d = suffix.shape
        if cu_prefix.numel() != b + 1 or prefix.shape[0] != int(cu_prefix[-1]):
            raise ValueError(
                f"cu_prefix {tuple(cu_prefix.shape)} must describe {b} prefixes of {prefix.shape[0]} tokens"
            )
        pk = suffix_packing(cu_prefix, n_s)
        xp, xs = prefix, suffix.reshape(b * n_s, d)
        for layer in self.layers:
            qp, kp, vp = layer.prefix.qkv(xp, pk.prefix_positions)
            qs, ks, vs = layer.suffix.qkv(xs, pk.suffix_positions)
            op = varlen_attention(qp, kp, vp, cu_prefix, pk.max_prefix, backend=backend)
            k = torch.cat([kp, ks]).index_select(0, pk.order)
            v = torch.cat([vp, vs]).index_select(0, pk.order)
            os = varlen_attention(qs, k, v, pk.cu_q, n_s, backend=backend, cu_seqlens_k=pk.cu_k, max_seqlen_k=pk.max_k)
            xp, xs = layer.prefix.finish(xp, op), layer.suffix.finish(xs, os)
        return self.prefix_norm(xp), self.suffix_norm(xs).reshape(b, n_s, d)

    @torch.no_grad()
    def prefill(self, prefix: torch.Tensor, cu_prefix: torch.Tensor, horizon: int, *, backend=None) -> Pi05KVCache:
        """Run the prefix once and return its K/V per layer in a cache with `horizon` suffix slots."""
        pk = suffix_packing(cu_prefix, horizon)
        c = self.cfg
        keys, values, xp = [], [], prefix
        for i, layer in enumerate(self.layers):
            qp, kp, vp = layer.prefix.qkv(xp, pk.prefix_positions)
            kbuf = kp.new_zeros(pk.order.numel(), c.kv_heads, c.head_dim)
            vbuf = vp.new_zeros(pk.order.numel(), c.kv_heads, c.head_dim)
            keys.append(kbuf.index_copy_(0, pk.prefix_rows, kp))
            values.append(vbuf.index_copy_(0, pk.prefix_rows, vp))
            if i + 1 < len(self.layers):  # the last layer's prefix outputs are never read: skip them
                xp = layer.prefix.finish(xp, varlen_attention(qp, kp, vp, cu_prefix, pk.max_prefix, backend=backend))
        return Pi05KVCache(keys, values, pk)

    @torch.no_grad()
    def forward_suffix(self, suffix: torch.Tensor, cache: Pi05KVCache, *, backend=None) -> torch.Tensor:
        """Suffix `(B, horizon, width)` against a prefilled cache -> suffix_out; writes only the
        cache's suffix slots (in place, no copy of the prefix K/V)."""
        pk = cache.packing
        b, n_s, d = suffix.shape
        if n_s != pk.horizon or b != pk.cu_q.numel() - 1:
            slots = f"{pk.cu_q.numel() - 1} x {pk.horizon}"
            raise ValueError(f"suffix {tuple(suffix.shape)} does not match the cache's {slots} suffix slots")
        xs = suffix.reshape(b * n_s, d)
        for layer, kbuf, vbuf in zip(self.layers, cache.keys, cache.values):
            qs, ks, vs = layer.suffix.qkv(xs, pk.suffix_positions)
            kbuf.index_copy_(0, pk.suffix_rows, ks)
            vbuf.index_copy_(0, pk.suffix_rows, vs)
            os = varlen_attention(
                qs, kbuf, vbuf, pk.cu_q, n_s, backend=backend, cu_seqlens_k=pk.cu_k, max_seqlen_k=pk.max_k
            )
            xs = layer.suffix.finish(xs, os)
        return self.suffix_norm(xs).reshape(b, n_s, d)
