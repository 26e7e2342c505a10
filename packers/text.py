"""Instruction tokenizers (registry): bytes by default (no download), or a local HF ``tokenizer.json``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

PAD, BOS, EOS = 0, 1, 2


@dataclass(frozen=True)
class Tokenizer:
    name: str
    vocab_size: int
    encode: Callable[[str], np.ndarray]  # -> int32 ids, never padded


def _byte_encode(text: str) -> np.ndarray:
    ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + 3
    return np.concatenate([[BOS], ids, [EOS]]).astype(np.int32)


def byte_tokenizer() -> Tokenizer:
    """UTF-8 bytes shifted past PAD/BOS/EOS: vocab 259, every string encodable, nothing to download."""
    return Tokenizer("byte", 259, _byte_encode)


def hf_tokenizer(path: str) -> Tokenizer:
    """A Hugging Face ``tokenizers`` tokenizer from a local tokenizer.json (pip install tokenizers)."""
    try:
        from tokenizers import Tokenizer as HF
    except ImportError as e:  # optional dependency
        raise ImportError("recipe.tokenizer is a tokenizer.json: pip install tokenizers") from e
    tok = HF.from_file(str(path))
    return Tokenizer(f"hf:{path}", tok.get_vocab_size(), lambda s: np.asarray(tok.encode(s).ids, dtype=np.int32))


@lru_cache(maxsize=8)
def get_tokenizer(spec: str) -> Tokenizer:
    """``"byte"`` or a path to tokenizer.json."""
    if spec == "byte":
        return byte_tokenizer()
    if spec.endswith(".json"):
        return hf_tokenizer(spec)
    raise KeyError(f"unknown tokenizer {spec!r}: 'byte' or a path to a tokenizer.json")
