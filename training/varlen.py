"""Packed (variable-length) attention over sequences laid end to end, no padding.

A pack of `n` sequences is described by `cu_seqlens`, int32 `(n + 1,)`: sequence `i` holds
tokens `cu_seqlens[i]:cu_seqlens[i + 1]`. Tokens never attend across sequences.
"""

from __future__ import annotations

import operator

import torch

from training._attn_backends import get_attention_backend
from training.masks import check_window
from training.packing import check_cu_seqlens

__all__ = ["varlen_attention"]


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a (tokens, heads, head_dim) tensor, got {getattr(t, 'shape', t)}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on {q.device}")
    if k.shape != v.shape or q.shape[2] != k.shape[2]:
        raise ValueError(f"k and v must be (total_k, kv_heads, head_dim) like q's head_dim; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")  # fmt: skip
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")


def _check_prefix(prefix_lens: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    if not isinstance(prefix_lens, torch.Tensor) or prefix_lens.dtype.is_floating_point or prefix_lens.dim() != 1:
        raise TypeError("prefix_lens must be a 1-D integer tensor (one prefix length per sequence)")
    n = cu_seqlens.numel() - 1
    if prefix_lens.numel() != n:
        raise ValueError(f"prefix_lens has {prefix_lens.numel()} entries for {n} sequences")
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).to(prefix_lens.device, torch.long)
    if bool(((prefix_lens < 0) | (prefix_lens > lens)).any()):
        raise ValueError(
            f"prefix_lens must lie in [0, sequence length]; got {prefix_lens.tolist()} for {lens.tolist()}"
        )
    return prefix_lens.to(cu_seqlens.device)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    causal: bool = False,
    *,
    window: tuple[int, int] | None = None,
    prefix_lens: torch.Tensor | None = None,
    backend: str | None = None,
    softmax_scale: float | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_k: int | None = None,
) -> torch.Tensor:
    """Attention within each packed sequence; returns `(total_q, heads, head_dim)` like q.

    q `(total_q, heads, head_dim)`; k, v `(total_k, kv_heads, head_dim)` with `heads` a
    multiple of `kv_heads` (GQA). `cu_seqlens` int32 `(n + 1,)` from 0 to total_q; `max_seqlen`
    the longest sequence in tokens. Masks (see `training.masks`): `causal`; `window=(left,
    right)` in tokens, -1 unbounded; `prefix_lens` int `(n,)`: the first `prefix_lens[i]`
    tokens of sequence `i` attend each other bidirectionally and never the rest, the rest
    attend the whole prefix plus the suffix (causally when `causal`). `cu_seqlens_k` /
    `max_seqlen_k` give keys their own packing (cross attention, KV caches); queries are then
    aligned to the end of their key sequence. `backend`: "flash", "torch_varlen",
    "sdpa_loop", "dense", or None for the fastest that runs here. `softmax_scale` defaults
    to head_dim ** -0.5.

    Raises:
        TypeError, ValueError: malformed tensors, cu_seqlens, window or prefix_lens.
        RuntimeError: a named backend that cannot run on this device/dtype.
    """
    _check_qkv(q, k, v)
    max_q = operator.index(max_seqlen)
    check_cu_seqlens(cu_seqlens, q.shape[0], max_q)
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but q is on {q.device}")
    if cu_seqlens_k is None:
        if k.shape[0] != q.shape[0]:
            raise ValueError(f"k has {k.shape[0]} tokens but q has {q.shape[0]}; pass cu_seqlens_k for cross attention")
        cu_k, max_k = cu_seqlens, max_q
    else:
        if max_seqlen_k is None:
            raise ValueError("max_seqlen_k is required with cu_seqlens_k")
        cu_k, max_k = cu_seqlens_k, operator.index(max_seqlen_k)
        check_cu_seqlens(cu_k, k.shape[0], max_k, name="cu_seqlens_k")
        if cu_k.shape != cu_seqlens.shape or cu_k.device != q.device:
            raise ValueError("cu_seqlens_k must have as many sequences as cu_seqlens, on q's device")
        if prefix_lens is not None:
            raise ValueError("prefix_lens needs self-attention (no cu_seqlens_k)")
        no_keys = (cu_k[1:] == cu_k[:-1]) & (cu_seqlens[1:] > cu_seqlens[:-1])
        if bool(no_keys.any()):
            raise ValueError("every sequence with queries needs at least one key in cu_seqlens_k")
    window = check_window(window)
    if window == (-1, -1):
        window = None
    if prefix_lens is not None:
        prefix_lens = _check_prefix(prefix_lens, cu_seqlens)
    if softmax_scale is not None and not isinstance(softmax_scale, (int, float)):
        raise TypeError(f"softmax_scale must be a float or None, got {type(softmax_scale).__name__}")
    _, fn = get_attention_backend(backend, q.device, q.dtype, q.shape[2])
    return fn(q, k, v, cu_seqlens, cu_k, max_q, max_k, causal=bool(causal), window=window,
              prefix_lens=prefix_lens, scale=softmax_scale)  # fmt: skip
