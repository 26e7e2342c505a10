"""Pack bookkeeping: cumulative sequence lengths, per-sequence positions, and loss reductions
that match what the unpacked samples would give.

A pack of `n` sequences laid end to end is described by `cu_seqlens`, int32 `(n + 1,)`:
sequence `i` holds tokens `cu_seqlens[i]:cu_seqlens[i + 1]`. Packing changes how many samples
share a row, so a plain `loss.mean()` per row silently reweights tokens: the reductions here
normalise by real tokens or by sequences explicitly.
"""

from __future__ import annotations

import torch

__all__ = [
    "check_cu_seqlens",
    "cu_seqlens_from_lengths",
    "position_ids_from_cu_seqlens",
    "packed_token_mean",
    "packed_sequence_means",
]


def _describe_bad_cu(cu: torch.Tensor, total: int, max_seqlen: int | None, name: str) -> str:
    """Slow path, only on error: say exactly what is wrong with `cu`."""
    c = cu.detach().cpu().long()
    if c[0] != 0:
        return f"{name} must start at 0, got {int(c[0])}"
    diffs = c[1:] - c[:-1]
    if (diffs < 0).any():
        i = int((diffs < 0).nonzero()[0])
        return f"{name} must be non-decreasing, but {name}[{i + 1}]={int(c[i + 1])} < {name}[{i}]={int(c[i])}"
    if c[-1] != total:
        return f"{name} must end at the token count {total}, got {int(c[-1])}"
    return f"max_seqlen={max_seqlen} is smaller than the longest sequence ({int(diffs.max())}) in {name}"


def check_cu_seqlens(
    cu_seqlens: torch.Tensor, total: int | None = None, max_seqlen: int | None = None, *, name: str = "cu_seqlens"
) -> None:
    """Validate cumulative sequence lengths (one host sync, whatever the device).

    Raises:
        TypeError: not an int32 tensor.
        ValueError: not 1-D with >= 2 entries, not starting at 0, decreasing, not ending at
            `total`, or a sequence longer than `max_seqlen`.
    """
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise TypeError(f"{name} must have dtype torch.int32 (as flash-attn requires), got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"{name} must be 1-D with n + 1 >= 2 entries, got shape {tuple(cu_seqlens.shape)}")
    diffs = cu_seqlens[1:] - cu_seqlens[:-1]
    bad = (cu_seqlens[0] != 0) | (diffs < 0).any()
    if total is not None:
        bad = bad | (cu_seqlens[-1] != total)
    if max_seqlen is not None:
        bad = bad | (diffs.max() > max_seqlen)
    if bool(bad):
        end = int(cu_seqlens[-1]) if total is None else total
        raise ValueError(_describe_bad_cu(cu_seqlens, end, max_seqlen, name))


def cu_seqlens_from_lengths(lengths, device: torch.device | str | None = None) -> torch.Tensor:
    """int32 `(n + 1,)` cumulative lengths from per-sequence lengths (list or tensor).

    Raises:
        ValueError: a negative length.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.long, device=device)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D, got shape {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
    return torch.nn.functional.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)


def position_ids_from_cu_seqlens(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """int64 `(total,)` positions restarting at 0 at every sequence start.

    Raises:
        TypeError, ValueError: as `check_cu_seqlens`.
    """
    check_cu_seqlens(cu_seqlens)
    cu = cu_seqlens.long()
    lens = cu[1:] - cu[:-1]
    total = int(cu[-1])
    starts = torch.repeat_interleave(cu[:-1], lens, output_size=total)
    return torch.arange(total, device=cu.device) - starts


def _check_values(values: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    if values.dim() < 1:
        raise ValueError("values must have a leading token dimension")
    if loss_mask is None:
        return torch.ones(values.shape[0], dtype=values.dtype, device=values.device)
    if loss_mask.shape != values.shape[:1]:
        raise ValueError(f"loss_mask must be (tokens,) = {tuple(values.shape[:1])}, got {tuple(loss_mask.shape)}")
    return loss_mask.to(values.dtype)


def packed_token_mean(
    values: torch.Tensor, loss_mask: torch.Tensor | None = None, num_tokens: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over real tokens of per-token `values` `(tokens, ...)`: equals concatenating the
    unpacked samples' tokens and taking `.mean()`.

    `loss_mask` bool `(tokens,)` selects the tokens that count (targets, not pad/prompt).
    `num_tokens` overrides the normaliser: pass the real-token count of the whole global
    batch when accumulating gradients over several packs, so each token weighs the same.
    Trailing dims are averaged per token first. Returns 0 when no token counts.

    Raises:
        ValueError: shape mismatch, or `num_tokens` <= 0.
    """
    w = _check_values(values, loss_mask)
    per_token = values.reshape(values.shape[0], -1).mean(dim=1)
    denom = w.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=values.dtype, device=values.device)
    if num_tokens is not None and float(denom) <= 0:
        raise ValueError(f"num_tokens must be > 0, got {num_tokens}")
    return (per_token * w).sum() / denom.clamp_min(1)


def packed_sequence_means(
    values: torch.Tensor, cu_seqlens: torch.Tensor, loss_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sequence means `(n,)` of per-token `values` over real tokens (0 for a sequence with
    none): `.mean()` of the result weighs every sample equally, as a padded batch's mean of
    per-sample means does.

    Raises:
        TypeError, ValueError: bad `cu_seqlens`, or shape mismatch.
    """
    check_cu_seqlens(cu_seqlens, values.shape[0])
    w = _check_values(values, loss_mask)
    per_token = values.reshape(values.shape[0], -1).mean(dim=1) * w
    cu = cu_seqlens.long()
    lens = cu[1:] - cu[:-1]
    seq = torch.repeat_interleave(torch.arange(lens.numel(), device=values.device), lens, output_size=values.shape[0])
    sums = torch.zeros(lens.numel(), dtype=values.dtype, device=values.device).index_add(0, seq, per_token)
    counts = torch.zeros_like(sums).index_add(0, seq, w)
    return sums / counts.clamp_min(1)
