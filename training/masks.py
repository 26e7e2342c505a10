"""Boolean attention masks (True = may attend) shared by the attention backends and π0.5.

One rule defines every mask here, so the dense reference, the per-sequence SDPA loop and the
flash kernels agree. For a sequence with `len_q` queries and `len_k` keys, query `i` sits at
absolute position `i + len_k - len_q` (bottom-right alignment, as flash-attn does) and key `j`
at position `j`. Query position `a` may attend key `j` when all of these hold:

- prefix:  `a >= prefix_len or j < prefix_len` (prefix tokens never see the suffix);
- causal:  `j <= a or j < prefix_len` (the prefix is always fully visible);
- window:  `a - left <= j <= a + right` for `window=(left, right)`, -1 meaning unbounded.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["sequence_mask", "varlen_dense_mask", "make_attn_mask", "check_window"]


def check_window(window: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate a sliding window `(left, right)` in tokens; -1 means unbounded.

    Raises:
        ValueError: not a pair of ints >= -1.
    """
    if window is None:
        return None
    if (
        not isinstance(window, (tuple, list))
        or len(window) != 2
        or not all(isinstance(w, int) and not isinstance(w, bool) for w in window)
    ):
        raise ValueError(f"window must be a pair of ints (left, right), got {window!r}")
    left, right = window
    if left < -1 or right < -1:
        raise ValueError(f"window sizes must be >= -1 (-1 = unbounded), got {window!r}")
    return (left, right)


def _allowed(
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    prefix: torch.Tensor | int,
    causal: bool,
    window: tuple[int, int] | None,
) -> torch.Tensor:
    """The mask rule of this module on broadcastable position tensors."""
    in_prefix_k = k_pos < prefix
    ok = (q_pos >= prefix) | in_prefix_k
    if causal:
        ok = ok & ((k_pos <= q_pos) | in_prefix_k)
    if window is not None:
        left, right = window
        if left >= 0:
            ok = ok & (k_pos >= q_pos - left)
        if right >= 0:
            ok = ok & (k_pos <= q_pos + right)
    return ok


@functools.lru_cache(maxsize=512)
def _sequence_mask_cached(
    len_q: int, len_k: int, causal: bool, window, prefix_len: int, device: str
) -> torch.Tensor:
    q_pos = torch.arange(len_k - len_q, len_k, device=device)[:, None]
    k_pos = torch.arange(len_k, device=device)[None, :]
    return _allowed(q_pos, k_pos, prefix_len, causal, window)


def sequence_mask(
    len_q: int,
    len_k: int | None = None,
    *,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    prefix_len: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """Mask for one sequence, bool `(len_q, len_k)`, or None when every pair is allowed.

    Cached per shape (masks are small and rebuilt every layer otherwise); treat as read-only.
    """
    len_k = len_q if len_k is None else len_k
    window = check_window(window)
    if window == (-1, -1):
        window = None
    # full attention when the prefix rule cannot bite: every query is in the suffix, or every
    # key is in the prefix
    if not causal and window is None and (prefix_len <= len_k - len_q or prefix_len >= len_k):
        return None
    return _sequence_mask_cached(len_q, len_k, causal, window, int(prefix_len), str(device))


def varlen_dense_mask(
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor | None = None,
    *,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    prefix_lens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Block-diagonal mask over a whole pack, bool `(total_q, total_k)`; the test reference.

    Memory is O(total_q * total_k): use only for tests and small packs.
    """
    cu_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    window = check_window(window)
    dev = cu_seqlens_q.device
    lens_q = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()
    lens_k = (cu_k[1:] - cu_k[:-1]).long()
    n = lens_q.numel()
    seq_q = torch.repeat_interleave(torch.arange(n, device=dev), lens_q)
    seq_k = torch.repeat_interleave(torch.arange(n, device=dev), lens_k)
    # absolute positions inside each sequence, queries bottom-right aligned to keys
    q_pos = torch.arange(seq_q.numel(), device=dev) - cu_seqlens_q.long()[seq_q]
    q_pos = q_pos + (lens_k - lens_q)[seq_q]
    k_pos = torch.arange(seq_k.numel(), device=dev) - cu_k.long()[seq_k]
    if prefix_lens is None:
        prefix_q = torch.zeros_like(q_pos)
    else:
        prefix_q = prefix_lens.to(dev).long()[seq_q]
    same_seq = seq_q[:, None] == seq_k[None, :]
    return same_seq & _allowed(q_pos[:, None], k_pos[None, :], prefix_q[:, None], causal, window)


def make_attn_mask(input_mask: torch.Tensor, ar_mask: torch.Tensor) -> torch.Tensor:
    """openpi / big_vision block-causal mask, bool `(B, N, N)`.

    `input_mask` bool `(B, N)`: True for real tokens, False for pad. `ar_mask` bool `(N,)` or
    `(B, N)`: True where a token starts a new block that earlier tokens cannot see. A token
    attends every real token whose cumulative `ar_mask` is <= its own.
    """
    if input_mask.dim() != 2:
        raise ValueError(f"input_mask must be (B, N), got shape {tuple(input_mask.shape)}")
    ar = torch.broadcast_to(ar_mask, input_mask.shape).long()
    cum = torch.cumsum(ar, dim=1)
    attn = cum[:, None, :] <= cum[:, :, None]
    valid = input_mask[:, None, :] & input_mask[:, :, None]
    return attn & valid
