"""Samples from one episode (one per frame, LeRobot windows) and packs assembled from many samples.

``Layout`` is everything fixed at packing time (dims, offsets, normalization constants, token counts),
recorded in the packed table's schema metadata so a trainer can un-normalize actions later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .recipe import Recipe
from .schema import MODALITIES, packed_schema, table_of

EPS = 1e-8
# A feature dimension that varies less than this in the data (a resting object's height, a quaternion's float
# jitter) carries noise, not information: dividing by its tiny spread would turn that noise into unit-size
# inputs to learn from, and a 1e-4 deviation at evaluation into a huge one. Such dimensions are scaled by this.
MIN_SCALE = 1e-3


def make_layout(recipe: Recipe, features: dict, stats: dict, fps: float, vocab_size: int) -> dict:
    """The packed table's layout: dims and the frozen normalization constants (shift, scale) per feature."""

    def dims(names):
        return [int(np.prod(features[n].get("shape") or [1])) for n in names]

    norm = {}
    for name in (*recipe.state_features, *recipe.action_features):
        if name not in stats:
            raise KeyError(f"no stats for feature {name!r} (the recipe names a feature the lake does not have)")
        s = stats[name]
        if recipe.normalization == "mean_std":
            shift, scale = s["mean"], s["std"] + EPS
        elif recipe.normalization == "quantile":
            shift, scale = (s["q01"] + s["q99"]) / 2, (s["q99"] - s["q01"]) / 2 + EPS
        else:
            shift, scale = np.zeros_like(s["mean"]), np.ones_like(s["mean"])
        if recipe.normalization != "none":
            scale = np.maximum(scale, MIN_SCALE)
        norm[name] = {"shift": np.ravel(shift).tolist(), "scale": np.ravel(scale).tolist()}
    token_dim, patches = recipe.patch_size**2 * 3, recipe.patches_per_image
    if recipe.image_encoder == "frozen":  # the encoder decides its token count and width: ask it once
        from .images import get_image_tokenizer

        probe = get_image_tokenizer("frozen", recipe.patch_size, recipe.encoder)(
            np.zeros((1, *recipe.image_size, 3), np.uint8))
        patches, token_dim = int(probe.shape[1]), int(probe.shape[2])
    return {
        "recipe_hash": recipe.hash, "cameras": list(recipe.cameras), "image_size": list(recipe.image_size),
        "patch_size": recipe.patch_size, "image_encoder": recipe.image_encoder, "token_dim": token_dim,
        "patches_per_image": patches, "fps": fps, "encoder": recipe.encoder,
        "embed_dim": token_dim if recipe.image_encoder == "frozen" else None,
        "observation_offsets": recipe.observation_offsets(fps), "action_offsets": recipe.action_offsets(fps),
        "state_features": list(recipe.state_features), "state_dims": dims(recipe.state_features),
        "state_dim": sum(dims(recipe.state_features)),
        "action_features": list(recipe.action_features), "action_dims": dims(recipe.action_features),
        "action_dim": sum(dims(recipe.action_features)),
        "tokenizer": recipe.tokenizer, "vocab_size": vocab_size, "action_bins": recipe.action_bins,
        "normalization": recipe.normalization, "norm": norm, "pad": recipe.pad, "token_budget": recipe.token_budget,
        "payload_rows": "fixed_size",  # 2-D payloads as lists of fixed-size lists (schema.packed_schema)
    }


@dataclass
class Samples:
    """All samples of a set of episodes, as arrays (n samples)."""

    episode: np.ndarray  # object (n,) episode ids
    frame: np.ndarray  # int64 (n,)
    image: np.ndarray  # (n, image_tokens, dim) uint8 or float16
    text: list[np.ndarray]  # int32 ids per sample (shared arrays within an episode)
    state: np.ndarray  # float32 (n, k, state_dim)
    state_pad: np.ndarray  # uint8 (n, k)
    actions: np.ndarray  # float32 (n, h, action_dim)
    action_pad: np.ndarray  # uint8 (n, h)
    action_bins: np.ndarray | None  # int32 (n, h, action_dim)

    @property
    def text_lens(self) -> np.ndarray:
        return np.fromiter((len(t) for t in self.text), dtype=np.int64, count=len(self.text))

    @property
    def lengths(self) -> np.ndarray:
        return self.image.shape[1] + self.text_lens + self.state.shape[1] + self.actions.shape[1]

    def take(self, idx: np.ndarray) -> "Samples":
        """The samples at ``idx`` (repeats allowed: a mixture's upsampled sources)."""
        idx = np.asarray(idx, np.int64)
        return Samples(self.episode[idx], self.frame[idx], self.image[idx], [self.text[i] for i in idx],
                       self.state[idx], self.state_pad[idx], self.actions[idx], self.action_pad[idx],
                       None if self.action_bins is None else self.action_bins[idx])

    @staticmethod
    def concat(parts: list["Samples"]) -> "Samples":
        cat = np.concatenate
        return Samples(cat([p.episode for p in parts]), cat([p.frame for p in parts]), cat([p.image for p in parts]),
                       [t for p in parts for t in p.text], cat([p.state for p in parts]),
                       cat([p.state_pad for p in parts]), cat([p.actions for p in parts]),
                       cat([p.action_pad for p in parts]),
                       None if parts[0].action_bins is None else cat([p.action_bins for p in parts]))


def window(length: int, frames: np.ndarray, offsets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """LeRobot's query indices: frame + offset clamped into the episode, and which of them are padding."""
    q = frames[:, None] + np.asarray(offsets, dtype=np.int64)[None, :]
    return np.clip(q, 0, length - 1), ((q < 0) | (q >= length)).astype(np.uint8)


def _normalized(columns: dict[str, np.ndarray], names: list[str], norm: dict) -> np.ndarray:
    parts = []
    for n in names:
        x = np.asarray(columns[n], dtype=np.float64).reshape(len(columns[n]), -1)
        parts.append((x - np.asarray(norm[n]["shift"])) / np.asarray(norm[n]["scale"]))
    return np.concatenate(parts, axis=1).astype(np.float32)


def bins_of(actions: np.ndarray, n_bins: int, normalization: str) -> np.ndarray:
    """Uniform bins over [-1, 1] (quantile) or [-3, 3] (mean/std), values clipped: int32 in [0, n_bins)."""
    lim = 1.0 if normalization == "quantile" else 3.0
    x = (np.clip(actions, -lim, lim) + lim) / (2 * lim)
    return np.minimum((x * n_bins).astype(np.int32), n_bins - 1)


def episode_samples(episode_id: str, columns: dict[str, np.ndarray], images: dict[str, np.ndarray], task_ids: np.ndarray,
                    layout: dict, frame_stride: int = 1) -> Samples:
    """Samples of one episode. ``columns``: feature -> (T, ...) arrays; ``images``: camera -> (T, tokens, dim)."""
    length = len(next(iter(columns.values())))
    frames = np.arange(0, length, frame_stride, dtype=np.int64)
    obs_idx, obs_pad = window(length, frames, layout["observation_offsets"])
    act_idx, act_pad = window(length, frames, layout["action_offsets"])
    state = _normalized(columns, layout["state_features"], layout["norm"])[obs_idx]  # (n, k, Ds)
    actions = _normalized(columns, layout["action_features"], layout["norm"])[act_idx]  # (n, h, Da)
    if layout["pad"] == "zero":
        state[obs_pad.astype(bool)] = 0
        actions[act_pad.astype(bool)] = 0
    # image tokens: camera-major, then observation step (the prefix layout in schema.py)
    img = np.concatenate([images[c][obs_idx] .reshape(len(frames), -1, images[c].shape[-1]) for c in layout["cameras"]],
                         axis=1) if layout["cameras"] else np.zeros((len(frames), 0, layout["token_dim"]), np.uint8)
    bins = bins_of(actions, layout["action_bins"], layout["normalization"]) if layout["action_bins"] else None
    return Samples(np.full(len(frames), episode_id, dtype=object), frames, img, [task_ids] * len(frames),
                   state, obs_pad, actions, act_pad, bins)


def assemble(s: Samples, packs: list[np.ndarray], split: str, first_id: int, layout: dict,
             slots: np.ndarray | None = None) -> pa.Table:
    """Pack rows (schema.packed_schema) for ``packs`` (index arrays into ``s``), ids from ``first_id``;
    ``slots``: each sample's ``mixture_slot`` (a per-epoch mixture draw's pool, ``packers.mixture``)."""
    schema = packed_schema(layout)
    cols: dict[str, list] = {n: [] for n in schema.names}
    n_img, k, h = s.image.shape[1], s.state.shape[1], s.actions.shape[1]
    text_lens = s.text_lens
    mods = np.array([MODALITIES["image"], MODALITIES["text"], MODALITIES["state"], MODALITIES["action"]], np.int8)
    for j, idx in enumerate(packs):
        idx = np.sort(idx)
        m = len(idx)
        counts = np.stack([np.full(m, n_img), text_lens[idx], np.full(m, k), np.full(m, h)], axis=1)
        lens = counts.sum(1)
        total = int(lens.sum())
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        modality = np.repeat(np.tile(mods, m), counts.ravel())
        loss = np.zeros(total, np.uint8)
        loss[modality == MODALITIES["action"]] = 1 - s.action_pad[idx].ravel()
        cols["pack_id"].append(first_id + j)
        cols["split"].append(split)
        cols["n_samples"].append(m)
        cols["n_tokens"].append(total)
        cols["max_seqlen"].append(int(lens.max()))
        cols["cu_seqlens"].append(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
        cols["prefix_lens"].append((n_img + text_lens[idx]).astype(np.int32))
        cols["origin_episode"].append(s.episode[idx].tolist())
        cols["origin_frame"].append(s.frame[idx].tolist())
        cols["modality"].append(modality)
        cols["position_ids"].append((np.arange(total) - np.repeat(starts, lens)).astype(np.int32))
        cols["segment_ids"].append(np.repeat(np.arange(m, dtype=np.int32), lens))
        cols["loss_mask"].append(loss)
        cols["image_embeds" if "image_embeds" in cols else "image_patches"].append(s.image[idx])
        cols["text_ids"].append(np.concatenate([s.text[i] for i in idx]).astype(np.int32))
        cols["state"].append(s.state[idx])
        cols["state_is_pad"].append(s.state_pad[idx])
        cols["actions"].append(s.actions[idx])
        cols["action_is_pad"].append(s.action_pad[idx])
        if "action_bins" in cols:
            cols["action_bins"].append(s.action_bins[idx])
        if "mixture_slot" in cols:
            cols["mixture_slot"].append(slots[idx])
    return table_of(cols, schema)
