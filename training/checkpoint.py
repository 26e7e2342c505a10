"""Checkpoints that say what they were trained on, load without running code from the file, and the ``Policy``
protocol evaluation runs.

A checkpoint is one safetensors file. Its tensors are the module's ``state_dict`` and every tensor of the
resume state (optimizer moments, RNG state); its ``__metadata__`` holds one JSON header with the rest:

    {"factory": "vla", "config": {...}, "step": int, "state_dict": <tensor refs>,
     "lineage": {"lake_uri", "lake_version", "lake_tag", "recipe_hash", "packed_table", ...},
     "optimizer": ..., "rng": ..., "loader": ...}        # the last three only for exact resume

``factory`` is a name registered in ``training.factories`` (never a module path): ``load`` refuses a name this
process did not register, naming the file and the name, before any tensor is read or any module built.

Why safetensors + JSON rather than ``torch.load(weights_only=True)``: the format cannot express code at all
(a JSON header and raw little-endian tensor bytes), so safety does not rest on an unpickler's allowlist staying
tight across torch versions; the header reads without touching the tensors (``read_header``), and any
safetensors reader can inspect a checkpoint. Exact resume survives the trip: Python containers, tuples and
non-string dict keys (an optimizer's ``state`` is keyed by int) are tagged in the JSON and rebuilt as they were.

Checkpoints written before this format (``torch.save`` pickles naming ``module:function``) still load, with
``torch.load(weights_only=True)`` only and the built-in factory strings mapped to their registered names;
anything else in such a file is refused with a message saying to re-save it.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .factories import factory_name, get_factory

FORMAT = "episode-lake/checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a checkpoint this code can load safely (the message names the file)."""


@runtime_checkable
class Policy(Protocol):
    """What closed-loop evaluation and RL rollouts call. Observations are batched numpy arrays keyed by the
    lake's feature names (e.g. "observation.state" (B, 2), "observation.images.top" (B, H, W, 3) uint8)."""

    def reset(self, batch_size: int) -> None:
        """Start new episodes (e.g. clear queued action chunks)."""

    def act(self, obs: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray:
        """Actions (B, action_dim) in the environment's units (un-normalized)."""


@dataclass(frozen=True)
class Lineage:
    """Which data a checkpoint was trained on."""

    lake_uri: str = ""
    lake_version: int | None = None
    lake_tag: str | None = None
    recipe_hash: str | None = None
    packed_table: str | None = None
    extra: dict = field(default_factory=dict)


# --- the tree codec: JSON-able skeleton + named tensors ----------------------------------------------------

def _encode(obj, path: str, tensors: dict):
    import torch

    if isinstance(obj, (torch.Tensor, np.ndarray)):
        t = torch.from_numpy(np.ascontiguousarray(obj)) if isinstance(obj, np.ndarray) else obj.detach()
        key, n = path or "tensor", 1
        while key in tensors:
            key, n = f"{path}#{n}", n + 1
        tensors[key] = t.cpu().contiguous().clone()  # clone: safetensors refuses tensors that share storage
        return {"__ndarray__" if isinstance(obj, np.ndarray) else "__tensor__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}/{k}" if path else k, tensors) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, "", {}), _encode(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    raise CheckpointError(f"cannot store a {type(obj).__name__} at {path or 'the top'} in a checkpoint "
                          f"(tensors, arrays, numbers, strings, lists, tuples and dicts only)")


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, v), = obj.items()
        if tag == "__tensor__":
            return tensors[v]
        if tag == "__ndarray__":
            return tensors[v].numpy()
        if tag == "__tuple__":
            return tuple(_decode(x, tensors) for x in v)
        if tag == "__dict__":
            return {_key(_decode(k, tensors)): _decode(x, tensors) for k, x in v}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _key(k):
    return tuple(k) if isinstance(k, list) else k


# --- writing -----------------------------------------------------------------------------------------------

def save(path: str | os.PathLike, module, *, factory: str, config: dict, step: int = 0,
         lineage: Lineage | dict | None = None, **resume: Any) -> str:
    """Write a checkpoint atomically (temp file + rename: a crash never leaves half a checkpoint).

    ``factory``: a registered name (``training.register_factory``); ``config``: JSON-able kwargs for it;
    ``resume``: anything else to keep (optimizer / RNG / loader state...): tensors, arrays and plain Python
    values. Raises ValueError for a factory given as a module path, or a value the format cannot hold."""
    import dataclasses

    from safetensors.torch import save_file

    if not isinstance(factory, str) or not factory or ":" in factory:
        raise ValueError(f"factory must be a registered name (training.register_factory), got {factory!r}")
    lineage = dataclasses.asdict(lineage) if isinstance(lineage, Lineage) else dict(lineage or {})
    tensors: dict = {}
    header = _encode({"factory": factory, "config": config, "step": int(step), "lineage": lineage,
                      "state_dict": dict(module.state_dict()), **resume}, "", tensors)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                          "header": json.dumps(header)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# --- reading -----------------------------------------------------------------------------------------------

def _is_safetensors(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path)


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header (factory, config, step, lineage, tensor refs) without reading any tensor. Raises
    FileNotFoundError, or CheckpointError for a file in another format."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not _is_safetensors(path):
        raise CheckpointError(f"{path}: not a safetensors checkpoint")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: a safetensors file, but not an episode-lake checkpoint "
                                  f"(no {FORMAT!r} header)")
        header = json.loads(meta["header"])
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged header: one clear reason, whatever the parser raised
        raise CheckpointError(f"{path}: unreadable checkpoint header ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} is newer than this code "
                              f"reads ({FORMAT_VERSION}); upgrade episode-lake")
    if not isinstance(header, dict) or not isinstance(header.get("factory"), str):
        raise CheckpointError(f"{path}: checkpoint header names no model factory")
    return header


def _load_legacy(path: str, map_location: str) -> dict:
    """A ``torch.save`` checkpoint of the previous format: weights-only unpickling (torch refuses every global
    outside plain containers and tensors, so nothing from the file runs)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...: all mean "not safe/valid"
        raise CheckpointError(f"{path}: not a checkpoint that loads without running code ({_why(e)}); if you "
                              f"trust its author, load it with their code and re-save it with "
                              f"training.checkpoint.save") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("factory"), str) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no factory / state_dict)")
    name = factory_name(ckpt["factory"])
    if ":" in name:
        raise CheckpointError(f"{path}: an old-format checkpoint naming code by path ({ckpt['factory']!r}); "
                              f"register a factory for it (training.register_factory) and re-save it with "
                              f"training.checkpoint.save(..., factory=NAME)")
    return {**ckpt, "factory": name}


def _why(e: Exception) -> str:
    """torch's weights-only refusal in a few words (its message is a paragraph of advice)."""
    text = str(e)
    _, marker, rest = text.partition("WeightsUnpickler error:")
    line = next((x.strip() for x in (rest if marker else text).splitlines() if x.strip()), type(e).__name__)
    return line.split(". Please")[0][:200]


def load(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """The checkpoint as a dict (``factory``, ``config``, ``state_dict``, ``step``, ``lineage``, resume keys).
    Raises FileNotFoundError; CheckpointError for a file that is not a safe checkpoint; UnknownFactory (a
    ValueError naming the file and the name) when its factory is not registered — before reading tensors."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not _is_safetensors(path):
        ckpt = _load_legacy(path, map_location)
        get_factory(ckpt["factory"], path)
        return ckpt
    header = read_header(path)
    get_factory(header["factory"], path)
    return _decode(header, load_file(path, device=map_location))


def build(factory: str, config: dict, where: str = ""):
    """``factory(**config)`` for a registered factory name (UnknownFactory otherwise)."""
    return get_factory(factory, where)(**config)


def load_module(path: str | os.PathLike):
    """(module with weights loaded, checkpoint dict)."""
    ckpt = load(path)
    module = build(ckpt["factory"], ckpt["config"], os.fspath(path))
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), ckpt


def load_policy(path: str | os.PathLike) -> tuple[Policy, dict]:
    """A ``Policy`` from a checkpoint; raises TypeError if the saved module cannot act."""
    module, ckpt = load_module(path)
    if not isinstance(module, Policy):
        raise TypeError(f"{path}: {ckpt['factory']} builds a {type(module).__name__}, which has no reset()/act()")
    return module, ckpt
