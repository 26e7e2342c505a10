"""The packed table: one row per pack of variable-length samples. The contract between packers and loaders.

A *sample* (one per frame, as LeRobotDataset indexes) is a token sequence laid out as

    [image tokens (camera 0: obs step 0, 1, ...; camera 1: ...)] [text tokens] [state tokens] [action tokens]
     \\_____________________ prefix (bidirectional) ___________/ \\_________ suffix __________/

A *pack* concatenates whole samples (never split) up to a token budget. Per pack row:

- per sample (n): ``cu_seqlens`` int32 (n+1, starts 0, ends n_tokens), ``prefix_lens`` int32,
  ``origin_episode`` / ``origin_frame`` (where the sample came from);
- per token (T = n_tokens): ``modality`` int8 (``MODALITIES``), ``position_ids`` int32 (restart at 0 per
  sample), ``segment_ids`` int32 (sample index in the pack), ``loss_mask`` uint8;
- per modality, the tokens' payload in token order: ``image_patches`` uint8 (n_image_tokens × token_dim)
  or ``image_embeds`` float16 (n_image_tokens × dim); ``text_ids`` int32; ``state`` float32
  (n_state_tokens × state_dim) with ``state_is_pad`` uint8; ``actions`` float32 (n_action_tokens × action_dim)
  with ``action_is_pad`` uint8, and ``action_bins`` int32 when the recipe discretizes.

Two-dimensional payloads are lists of fixed-size lists (one per token, ``WIDTH_KEYS`` names the layout key of
the width): Lance's 2.1+ file format decodes a list of fixed-width tokens several times faster than the same
bytes as one flat list (measured on PushT patches: 0.16 vs 0.83 CPU s per epoch of 4-row takes). The layout
says which (``payload_rows: "fixed_size"``); tables packed before it have flat lists and no such key, and an
incremental pack into one keeps them flat. Readers accept both.
Masks are uint8, not bool: Arrow bit-packs booleans, which would force a copy on the way to torch.
Shapes (token_dim, state_dim, action_dim, ...) are in the schema metadata under ``packers.layout``.
"""

from __future__ import annotations

import json

import numpy as np
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


# the layout key holding the per-token width of each two-dimensional payload
WIDTH_KEYS = {"image_patches": "token_dim", "image_embeds": "embed_dim", "state": "state_dim",
              "actions": "action_dim", "action_bins": "action_dim"}


def packed_schema(layout: dict) -> pa.Schema:
    """The packed table's schema for a recipe's ``layout`` (dims and image payload kind)."""
    image = (pa.field("image_embeds", pa.list_(pa.float16())) if layout.get("image_encoder") == "frozen"
             else pa.field("image_patches", pa.list_(pa.uint8())))
    extra = [pa.field("action_bins", pa.list_(pa.int32()))] if layout.get("action_bins") else []
    if layout.get("mixture_draw"):  # per sample: its slot in a per-epoch mixture draw's pool (packers.mixture)
        extra.append(pa.field("mixture_slot", pa.list_(pa.int64())))
    fields = []
    fixed = layout.get("payload_rows") == "fixed_size"
    for f in PER_PACK + PER_TOKEN + [image] + PAYLOAD + extra:
        width = int(layout.get(WIDTH_KEYS.get(f.name, ""), 0) or 0) if fixed else 0
        fields.append(pa.field(f.name, pa.list_(pa.list_(f.type.value_type, width))) if width > 0 else f)
    return pa.schema(fields, metadata={"packers.layout": json.dumps(layout, sort_keys=True)})


def table_of(cols: dict[str, list], schema: pa.Schema) -> pa.Table:
    """Pack rows as Arrow: ``cols`` maps each column of ``schema`` to one value per pack (numpy arrays for
    numeric list columns, built through ``list_array``; plain values otherwise)."""
    arrays = []
    for f in schema:
        v = cols[f.name]
        if pa.types.is_list(f.type) and not pa.types.is_string(f.type.value_type):
            arrays.append(list_array([np.asarray(x) for x in v], f.type))
        else:
            arrays.append(pa.array(v, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def list_array(chunks: list[np.ndarray], type_: pa.DataType) -> pa.ListArray:
    """One list row per numpy array, for a ``list<T>`` or ``list<fixed_size_list<T, w>>`` column (rows of
    ``chunks[i].size // w`` tokens); built from one flat values buffer and offsets."""
    item = type_.value_type
    fsl = pa.types.is_fixed_size_list(item)
    width, leaf = (item.list_size, item.value_type) if fsl else (1, item)
    sizes = [c.size for c in chunks]
    if any(n % width for n in sizes):
        raise ValueError(f"a row of {type_} holds a multiple of {width} values, got sizes {sorted(set(sizes))}")
    offsets = np.zeros(len(chunks) + 1, dtype=np.int32)
    np.cumsum([n // width for n in sizes], out=offsets[1:])
    values = pa.array(np.concatenate([c.ravel() for c in chunks]) if chunks else np.zeros(0), type=leaf)
    if fsl:
        values = pa.FixedSizeListArray.from_arrays(values, width)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


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
# a mixture's packings row also has this column (the table gains it on the first such row; others read null):
# the lineage of every source, its lake version, weight and sample counts (``packers.mixture``)
PACKINGS_MIXTURE = PACKINGS.append(pa.field("mixture_json", pa.string()))
