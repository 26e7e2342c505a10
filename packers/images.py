"""Images -> tokens (registry): raw resized uint8 patches, or embeddings of a frozen torch encoder."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .encoders import EncoderFactory, get_encoder

ImageTokenizer = Callable[[np.ndarray], np.ndarray]  # uint8 (T, H, W, 3) -> (T, tokens, dim)


def resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of uint8 (T, H, W, 3) frames to (T, h, w, 3); unchanged when already that size."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def patchify(frames: np.ndarray, p: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, (H/p)*(W/p), p*p*3), patches in row-major order, each (p, p, 3) flattened."""
    t, h, w, c = frames.shape
    x = frames.reshape(t, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(x.reshape(t, (h // p) * (w // p), p * p * c))


@lru_cache(maxsize=4)
def _load_encoder(factory: EncoderFactory):
    return factory().eval()


def frozen_tokens(encoder: str | EncoderFactory, batch: int = 64) -> ImageTokenizer:
    """Embeddings from a frozen module: (B, 3, H, W) float in [0, 1] -> (B, N, D); stored as float16.
    ``encoder``: a registered name (``packers.encoders``), or the factory the driver already looked up."""
    factory = encoder if callable(encoder) else get_encoder(encoder)

    def run(frames: np.ndarray) -> np.ndarray:
        import torch

        enc = _load_encoder(factory)
        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), batch):
                x = torch.from_numpy(frames[i:i + batch]).permute(0, 3, 1, 2).float().div_(255)
                out.append(enc(x).to(torch.float16).numpy())
        return np.concatenate(out)

    return run


def get_image_tokenizer(kind: str, patch_size: int, encoder: str | EncoderFactory | None = None) -> ImageTokenizer:
    if kind == "patches":
        return lambda frames: patchify(frames, patch_size)
    if kind == "frozen":
        return frozen_tokens(encoder)
    raise KeyError(f"unknown image_encoder {kind!r}: 'patches' or 'frozen'")
