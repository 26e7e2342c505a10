"""Variable-length attention backends: one small function each, chosen by `get_attention_backend`.

Every backend has the signature

    fn(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window, prefix_lens, scale) -> out

with q `(total_q, Hq, D)`, k/v `(total_k, Hkv, D)`, int32 cumulative lengths and the mask
rule of `training.masks`. Inputs are already validated by `training.varlen`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from training.masks import sequence_mask, varlen_dense_mask

__all__ = ["BACKENDS", "backend_available", "get_attention_backend"]

Backend = Callable[..., torch.Tensor]
_HALF = (torch.float16, torch.bfloat16)


@functools.cache
def _flash_attn_varlen_func():
    """flash-attn's kernel, or None when the package (or its CUDA build) is missing."""
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA build
        return None
    return flash_attn_varlen_func


@functools.cache
def _torch_varlen_attn():
    """`torch.nn.attention.varlen.varlen_attn`, or None on torch builds without it."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except Exception:
        return None
    return varlen_attn


def _split_prefix(kernel: Backend, q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window, prefix_lens, scale):
    """Run a kernel without prefix support as two calls: prefix queries over prefix keys,
    suffix queries over the whole sequence (bottom-right aligned, so causal/window line up)."""
    lens = (cu_q[1:] - cu_q[:-1]).long()
    pre = prefix_lens.to(device=q.device, dtype=torch.long)
    seq = torch.repeat_interleave(torch.arange(lens.numel(), device=q.device), lens, output_size=q.shape[0])
    offset = torch.arange(q.shape[0], device=q.device) - cu_q.long()[seq]
    is_pre = offset < pre[seq]
    idx_pre, idx_suf = is_pre.nonzero().squeeze(1), (~is_pre).nonzero().squeeze(1)
    zero = torch.zeros(1, dtype=torch.int32, device=q.device)
    out = torch.zeros_like(q)
    if idx_pre.numel():
        cu_pre = torch.cat([zero, torch.cumsum(pre, 0).to(torch.int32)])
        max_pre = int(pre.max())
        qp, kp, vp = q[idx_pre], k[idx_pre], v[idx_pre]
        o = kernel(qp, kp, vp, cu_pre, cu_pre, max_pre, max_pre, causal=False, window=window, scale=scale)
        out = out.index_copy(0, idx_pre, o)
    if idx_suf.numel():
        suf = lens - pre
        cu_suf = torch.cat([zero, torch.cumsum(suf, 0).to(torch.int32)])
        o = kernel(q[idx_suf], k, v, cu_suf, cu_k, int(suf.max()), max_k, causal=causal, window=window, scale=scale)
        out = out.index_copy(0, idx_suf, o)
    return out


def _flash_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window, scale):
    fn = _flash_attn_varlen_func()
    return fn(
        q, k, v, cu_q, cu_k, max_q, max_k,
        dropout_p=0.0,
        softmax_scale=scale,
        causal=causal,
        window_size=tuple(window) if window is not None else (-1, -1),
    )  # fmt: skip


def _torch_varlen_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window, scale):
    left, right = window if window is not None else (-1, -1)
    if causal:
        right = 0  # varlen_attn has no causal flag: causal is window (left, 0), bottom-right aligned
    return _torch_varlen_attn()(
        q, k, v, cu_q, cu_k, max_q, max_k,
        scale=scale,
        window_size=(left, right),
        enable_gqa=k.shape[1] != q.shape[1],
    )  # fmt: skip


def _with_prefix_split(kernel) -> Backend:
    def backend(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window, prefix_lens, scale):
        if prefix_lens is not None:
            return _split_prefix(
                kernel, q, k, v, cu_q, cu_k, max_q, max_k,
                causal=causal, window=window, prefix_lens=prefix_lens, scale=scale,
            )  # fmt: skip
        return kernel(q, k, v, cu_q, cu_k, max_q, max_k, causal=causal, window=window, scale=scale)

    return backend


def _sdpa_loop(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window, prefix_lens, scale):
    """One SDPA call per sequence: exact, no pad, the fastest CPU path measured
    (benchmarks/attention.py). Masks are only built where causal-only SDPA cannot express them."""
    bq = cu_q.tolist()
    bk = bq if cu_k is cu_q else cu_k.tolist()
    lens_q = [b - a for a, b in zip(bq[:-1], bq[1:])]
    lens_k = [b - a for a, b in zip(bk[:-1], bk[1:])]
    pre = prefix_lens.tolist() if prefix_lens is not None else [0] * len(lens_q)
    gqa = k.shape[1] != q.shape[1]
    qs, ks, vs = q.split(lens_q), k.split(lens_k), v.split(lens_k)
    outs = []
    for qi, ki, vi, lq, lk, p in zip(qs, ks, vs, lens_q, lens_k, pre):
        if lq == 0:
            outs.append(qi)
            continue
        plain_causal = causal and window is None and p == 0 and lq == lk
        mask = None
        if not plain_causal:
            mask = sequence_mask(lq, lk, causal=causal, window=window, prefix_len=p, device=q.device)
        o = F.scaled_dot_product_attention(
            qi.transpose(0, 1)[None], ki.transpose(0, 1)[None], vi.transpose(0, 1)[None],
            attn_mask=mask, is_causal=plain_causal, scale=scale, enable_gqa=gqa,
        )  # fmt: skip
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


def _dense(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window, prefix_lens, scale):
    """Reference: one SDPA over the whole pack with a block-diagonal mask, O(total^2) memory."""
    mask = varlen_dense_mask(cu_q, cu_k, causal=causal, window=window, prefix_lens=prefix_lens)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask, scale=scale
    )
    return o[0].transpose(0, 1)


BACKENDS: dict[str, Backend] = {
    "flash": _with_prefix_split(_flash_kernel),
    "torch_varlen": _with_prefix_split(_torch_varlen_kernel),
    "sdpa_loop": _sdpa_loop,
    "dense": _dense,
}


def backend_available(name: str, device: torch.device, dtype: torch.dtype, head_dim: int = 64) -> str | None:
    """None when backend `name` can run on `device`/`dtype`/`head_dim`, else why it cannot."""
    if name in ("sdpa_loop", "dense"):
        return None
    if device.type != "cuda":
        return f"{name!r} needs a CUDA device, got {device.type!r}"
    if dtype not in _HALF:
        return f"{name!r} needs float16 or bfloat16 inputs, got {dtype}"
    if head_dim > 256 or head_dim % 8:
        return f"{name!r} needs head_dim <= 256 and a multiple of 8, got {head_dim}"
    if name == "flash" and _flash_attn_varlen_func() is None:
        return "flash-attn is not installed (pip install flash-attn)"
    if name == "torch_varlen" and _torch_varlen_attn() is None:
        return "this torch build has no torch.nn.attention.varlen"
    return None


def get_attention_backend(
    name: str | None, device: torch.device, dtype: torch.dtype, head_dim: int = 64
) -> tuple[str, Backend]:
    """Resolve a backend name (None = fastest available) to `(name, fn)`.

    Raises:
        ValueError: unknown name.
        RuntimeError: a named backend that cannot run on this device/dtype.
    """
    if name is None:
        for candidate in ("flash", "torch_varlen"):
            if backend_available(candidate, device, dtype, head_dim) is None:
                return candidate, BACKENDS[candidate]
        return "sdpa_loop", BACKENDS["sdpa_loop"]
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {sorted(BACKENDS)} or None")
    reason = backend_available(name, device, dtype, head_dim)
    if reason is not None:
        raise RuntimeError(f"attention backend {name!r} unavailable: {reason}")
    return name, BACKENDS[name]
