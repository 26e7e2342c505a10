"""Raw simulator observations -> the VLA's prefix, tokenized exactly as the packer tokenizes lake frames.

The same functions (resize, patchify, tokenizer, frozen normalization from the packed table's layout) run
here and in ``packers``, so a policy sees at evaluation what it saw in training. Observation history longer
than one step is filled with the current observation: what LeRobot's clamping gives at an episode's start.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

# token modality codes: packers.schema.MODALITIES (not imported: the model needs neither lake nor pyarrow)
IMAGE, TEXT, STATE, ACTION = 0, 1, 2, 3


def normalize(layout: dict, obs: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    parts = []
    for name in names:
        x = np.asarray(obs[name], np.float64).reshape(len(obs[name]), -1)
        n = layout["norm"][name]
        parts.append((x - np.asarray(n["shift"])) / np.asarray(n["scale"]))
    return np.concatenate(parts, axis=1).astype(np.float32)


def observation_prefix(model, obs: dict[str, np.ndarray], tasks: list[str]):
    """(prefix embeddings, cu_seqlens) for a batch of observations keyed by lake feature names."""
    from packers.images import get_image_tokenizer, resize
    from packers.text import get_tokenizer

    lay = model.layout
    k = len(lay["observation_offsets"])
    missing = [c for c in [*lay["cameras"], *lay["state_features"]] if c not in obs]
    if missing:
        raise KeyError(f"observation lacks {missing} (the policy was trained on {lay['cameras'] + lay['state_features']})")
    tok_img = get_image_tokenizer(lay["image_encoder"], lay["patch_size"], lay.get("encoder"))
    tok_txt = get_tokenizer(lay["tokenizer"])
    b = len(tasks)
    images = [tok_img(resize(np.asarray(obs[c], np.uint8), tuple(lay["image_size"]))) for c in lay["cameras"]]
    per_sample_img = [np.concatenate([np.repeat(im[i][None], k, 0).reshape(-1, im.shape[-1]) for im in images])
                      if images else np.zeros((0, lay["token_dim"]), np.uint8) for i in range(b)]
    texts = [tok_txt.encode(t) for t in tasks]
    state = normalize(lay, obs, lay["state_features"])
    modality, lens = [], []
    for i in range(b):
        counts = [len(per_sample_img[i]), len(texts[i]), k, model.horizon]
        modality.append(np.repeat([IMAGE, TEXT, STATE, ACTION], counts))
        lens.append(sum(counts))
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    img = np.concatenate(per_sample_img)
    batch = SimpleNamespace(
        modality=torch.from_numpy(np.concatenate(modality).astype(np.int8)),
        image_patches=torch.from_numpy(img) if img.dtype == np.uint8 else None,
        image_embeds=torch.from_numpy(img) if img.dtype != np.uint8 else None,
        text_ids=torch.from_numpy(np.concatenate(texts).astype(np.int64)),
        state=torch.from_numpy(np.repeat(state, k, 0)),
        cu_seqlens=torch.from_numpy(cu),
    )
    return model.prefix(batch)
