"""Offline packing: decode, tokenize and bin-pack lake episodes into versioned packed tables.

    rep = lk.pack(Recipe(action_horizon=16, token_budget=2048))   # or lk.pack() for the lake's default
    rep.version, rep.packs, rep.samples, rep.fill

The packed table's contract is in ``packers.schema``; ``loaders`` streams it into torch. A recipe's frozen
image encoder is a name registered in ``packers.encoders`` (``register_encoder``), never a module path.
"""

from ._job import PackReport, pack, packings, resolve_recipe
from .binpack import SampleTooLong, bfd, bfd_refine, fill, fill_bound, get_packer
from .encoders import ENCODERS, UnknownEncoder, get_encoder, register_encoder
from .recipe import Recipe, default_recipe
from .schema import MODALITIES, PACKINGS, layout_of, packed_schema

__all__ = [
    "ENCODERS", "MODALITIES", "PACKINGS", "PackReport", "Recipe", "SampleTooLong", "UnknownEncoder", "bfd", "bfd_refine",
    "default_recipe", "fill", "fill_bound", "get_encoder", "get_packer", "register_encoder",
    "layout_of", "pack", "packed_schema", "packings", "resolve_recipe",
]
