"""Loss reductions for packed batches that match what the unpacked samples would give.

Packing changes how many samples share a row, so `loss.mean()` per row (or per pack) silently
reweights tokens. These helpers normalise by real tokens or by sequences explicitly.
"""

from __future__ import annotations

import torch

from training.varlen import check_cu_seqlens

__all__ = ["packed_token_mean", "packed_sequence_means"]


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
