"""A mixture drawn afresh every epoch: keep, in each batch, only the samples of the epoch's draw.

A table packed with ``mixture: {draw: epoch}`` holds a pool (``packers.mixture``): each sample of a source
``copies`` times, each copy tagged with its slot (``PackedBatch.mixture_slot``). The slots epoch ``e`` keeps are
``packers.mixture.epoch_slots`` of (the stream's seed, ``e``, split, the layout's counts): a pure function, so
every rank and worker computes the same draw without talking to the others, and a resumed loader (same seed,
epoch, consumed) delivers exactly what the interrupted one would have. The loader deals packs as always; this
module only drops the samples outside the draw from each batch (``select``). Over an epoch, all ranks together
deliver exactly ``target`` samples per source.

``drawn(batches, layout, split, seed, epoch, pin)`` is the loader's one hook; tables without a per-epoch draw
pass through untouched.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import torch

from packers.mixture import SLOT_BITS, epoch_slots
from packers.schema import MODALITIES

from .batch import PackedBatch

_PAYLOADS = {"image_patches": "image", "image_embeds": "image", "text_ids": "text", "state": "state",
             "state_is_pad": "state", "actions": "action", "action_is_pad": "action", "action_bins": "action"}


@functools.lru_cache(maxsize=8)
def _kept(spec_json: str, split: str, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(every source's kept slots back to back, each source's offset into them) for one epoch."""
    keeps, offsets = [], [0]
    for i, src in enumerate(json.loads(spec_json)["sources"]):
        n, copies = int(src["samples"].get(split, 0)), int((src.get("copies") or {}).get(split, 0))
        keep = epoch_slots(n, copies, int(src["target"].get(split, 0)), bool(src["replacement"]), seed, epoch,
                           split, i)
        keeps.append(keep)
        offsets.append(offsets[-1] + len(keep))
    return (np.concatenate(keeps) if keeps else np.zeros(0, bool)), np.asarray(offsets, np.int64)


def keep_mask(layout: dict, split: str, seed: int, epoch: int, slots: np.ndarray) -> np.ndarray:
    """Which samples (their ``mixture_slot``) epoch ``epoch`` of stream seed ``seed`` keeps: bool."""
    flat, offsets = _kept(json.dumps(layout["mixture_draw"], sort_keys=True), split, int(seed), int(epoch))
    slots = np.asarray(slots, np.int64)
    source = slots >> SLOT_BITS
    return flat[offsets[source] + (slots & ((1 << SLOT_BITS) - 1))]


def select(batch: PackedBatch, keep: np.ndarray) -> PackedBatch:
    """The batch with only the samples ``keep`` (bool per sample) says: per-sample, per-token and payload
    tensors cut, ``cu_seqlens`` / ``segment_ids`` renumbered. Copies what it keeps."""
    keep_t = torch.as_tensor(np.asarray(keep, bool))
    if bool(keep_t.all()):
        return batch
    seg = batch.segment_ids.long()
    tok = keep_t[seg]
    lens = (batch.cu_seqlens[1:] - batch.cu_seqlens[:-1])[keep_t]
    cu = torch.zeros(len(lens) + 1, dtype=batch.cu_seqlens.dtype)
    cu[1:] = torch.cumsum(lens, 0)
    renum = (torch.cumsum(keep_t.to(torch.int64), 0) - 1).to(batch.segment_ids.dtype)
    out = {"cu_seqlens": cu, "max_seqlen": int(lens.max()) if len(lens) else 0,
           "segment_ids": renum[seg[tok]], "position_ids": batch.position_ids[tok], "modality": batch.modality[tok],
           "loss_mask": batch.loss_mask[tok], "prefix_lens": batch.prefix_lens[keep_t],
           "origin": [o for o, k in zip(batch.origin, keep.tolist()) if k], "mixture_slot": batch.mixture_slot[keep_t]}
    for name, modality in _PAYLOADS.items():
        t = getattr(batch, name)
        if t is not None:
            out[name] = t[keep_t[seg[batch.modality == MODALITIES[modality]]]]
    return dataclasses.replace(batch, **out)


def drawn(batches, layout: dict, split: str, seed: int, epoch: int, pin: bool = False):
    """``batches`` with each cut to epoch ``epoch``'s draw (``pin``: the cut batch page-locked again); the
    iterable itself when the table has no per-epoch draw."""
    if not layout.get("mixture_draw"):
        return batches
    return (_draw(b, layout, split, seed, epoch, pin) for b in batches)


def _draw(batch: PackedBatch, layout: dict, split: str, seed: int, epoch: int, pin: bool) -> PackedBatch:
    if batch.mixture_slot is None:
        raise ValueError("the packed table's layout has a per-epoch mixture draw but its packs lack mixture_slot")
    out = select(batch, keep_mask(layout, split, seed, epoch, batch.mixture_slot.numpy()))
    return out.pin_memory() if pin and out is not batch else out
