"""Frozen image encoders by name (for recipes with ``image_encoder: frozen``), and a reference one.

A recipe names its encoder (``encoder: patch_embed``); ``get_encoder(name)`` returns the factory this process
registered under that name: ``factory()`` -> a torch module, (B, 3, H, W) float in [0, 1] -> (B, N, D). Names
come from code, never from a recipe file or a packed table: register your own in your script before packing
(or evaluating a policy trained on its embeddings)::

    import packers
    packers.register_encoder("siglip_base", make_siglip)   # make_siglip() -> torch.nn.Module

A name nobody registered is refused (``UnknownEncoder``), naming the recipe and the name, before any work.
"""

from __future__ import annotations

from typing import Callable

EncoderFactory = Callable[[], object]  # () -> torch.nn.Module, (B, 3, H, W) float -> (B, N, D)

ENCODERS: dict[str, EncoderFactory] = {}

# ``module:factory`` strings that recipes written before the registry carried, and the names they mean now
LEGACY_ENCODERS = {"packers.encoders:patch_embed": "patch_embed"}


class UnknownEncoder(ValueError):
    """An encoder name that no code in this process registered."""


def register_encoder(name: str, factory: EncoderFactory, *, replace: bool = False) -> EncoderFactory:
    """Make ``factory`` usable as ``Recipe(encoder=name)``. Raises ValueError for a name taken by another
    factory (unless ``replace``) or one that is not a plain name."""
    if not isinstance(name, str) or not name or ":" in name or not callable(factory):
        raise ValueError(f"register_encoder needs a plain name and a callable, got {name!r}, {factory!r}")
    if not replace and ENCODERS.get(name, factory) is not factory:
        raise ValueError(f"image encoder {name!r} is already registered; pass replace=True to change it")
    ENCODERS[name] = factory
    return factory


def get_encoder(name: str, where: str = "") -> EncoderFactory:
    """The factory registered as ``name`` (legacy ``packers.encoders:patch_embed`` included); ``where`` (e.g.
    ``recipe NAME``) prefixes the error."""
    factory = ENCODERS.get(LEGACY_ENCODERS.get(name, name)) if isinstance(name, str) else None
    if factory is None:
        prefix = f"{where}: " if where else ""
        raise UnknownEncoder(f"{prefix}image encoder {name!r} is not registered (registered: "
                             f"{', '.join(sorted(ENCODERS)) or 'none'}); register it in your own code with "
                             f"packers.register_encoder({name!r}, factory)")
    return factory


def patch_embed(dim: int = 64, patch: int = 16, seed: int = 0):
    """The reference encoder, registered as ``patch_embed``: a fixed random patch projection."""
    import torch

    class PatchEmbed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.proj = torch.nn.Conv2d(3, dim, patch, stride=patch)
            with torch.no_grad():
                self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g) * 0.02)
                self.proj.bias.zero_()

        def forward(self, x):  # (B, 3, H, W) -> (B, N, D)
            return self.proj(x).flatten(2).transpose(1, 2)

    return PatchEmbed()


register_encoder("patch_embed", patch_embed)
