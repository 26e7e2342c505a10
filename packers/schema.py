"""The packed table: one row per pack of variable-length samples. The contract between packers and loaders.

A *sample* (one per frame, as LeRobotDataset indexes) is a token sequence laid out as

    [image tokens (camera 0: obs step 0, 1, ...; camera 1: ...)] [text tokens] [state tokens] [action tokens]
     \\_____________________ prefix (bidirectional) ___________/ \\_________ suffix __________/

A *pack* concatenates whole samples (never split) up to a token budget. Per pack row:

- per sample (n): ``cu_seqlens`` int32 (n+1, starts 0, ends n_tokens), ``prefix_lens`` int32,
  ``origin_episode`` / ``origin_frame`` (where the sample came from);
- per token (T = n_tokens): ``modality`` int8 (``MODALITIES``), ``position_ids`` int32 (restart at 0 per
  sample), ``segment_ids`` int32 (sample index in the pack), ``loss_mask`` uint8;
- per modality, the tokens' payload in token order: ``image_patches`` uint8 (n_image_tokens × token_dim,
  flattened) or ``image_embeds`` float16 (n_image_tokens × dim); ``text_ids`` int32; ``state`` float32
  (n_state_tokens × state_dim) with ``state_is_pad`` uint8; ``actions`` float32 (n_action_tokens × action_dim)
  with ``action_is_pad`` uint8, and ``action_bins`` int32 when the recipe discretizes.

Masks are uint8, not bool: Arrow bit-packs booleans, which would force a copy on the way to torch.
Shapes (token_dim, state_dim, action_dim, ...) are in the schema metadata under ``packers.layout``.
"""

from __future__ import annotations

import json

import pyarrow as pa

MODALITIES = {"image": 0, "text": 1, "state": 2, "action": 3}

PER_PACK = [
    pa.field("pack_id", pa.int64(), nullable=False),
    pa.field("split", pa.string()),
    pa.field("n_samples", pa.int32()),
    pa.field("n_tokens", pa.int32()),
    pa.field("max_seqlen", pa.int32()),
    pa.field("cu_seqlens", pa.list_(pa.int32())),
    pa.field("prefix_lens", pa.list_(pa.int32())),
    pa.field("origin_episode", pa.list_(pa.string())),
    pa.field("origin_frame", pa.list_(pa.int64())),
]
PER_TOKEN = [
    pa.field("modality", pa.list_(pa.int8())),
    pa.field("position_ids", pa.list_(pa.int32())),
    pa.field("segment_ids", pa.list_(pa.int32())),
    pa.field("loss_mask", pa.list_(pa.uint8())),
]
PAYLOAD = [
    pa.field("text_ids", pa.list_(pa.int32())),
    pa.field("state", pa.list_(pa.float32())),
    pa.field("state_is_pad", pa.list_(pa.uint8())),
    pa.field("actions", pa.list_(pa.float32())),
    pa.field("action_is_pad", pa.list_(pa.uint8())),
]


def packed_schema(layout: dict) -> pa.Schema:
    """The packed table's schema for a recipe's ``layout`` (dims and image payload kind)."""
    image = (pa.field("image_embeds", pa.list_(pa.float16())) if layout.get("image_encoder") == "frozen"
             else pa.field("image_patches", pa.list_(pa.uint8())))
    extra = [pa.field("action_bins", pa.list_(pa.int32()))] if layout.get("action_bins") else []
    return pa.schema(PER_PACK + PER_TOKEN + [image] + PAYLOAD + extra,
                     metadata={"packers.layout": json.dumps(layout, sort_keys=True)})


def layout_of(schema: pa.Schema) -> dict:
    return json.loads((schema.metadata or {}).get(b"packers.layout", b"{}"))


# One row per packed table in the lake: which recipe, packed from which lake version, how full.
PACKINGS = pa.schema([
    pa.field("recipe_hash", pa.string(), nullable=False),
    pa.field("table", pa.string()),
    pa.field("recipe_json", pa.string()),
    pa.field("source_version", pa.int64()),
    pa.field("episodes", pa.int64()),
    pa.field("packs", pa.int64()),
    pa.field("samples", pa.int64()),
    pa.field("fill", pa.float64()),
    pa.field("created", pa.timestamp("us", tz="UTC")),
])
