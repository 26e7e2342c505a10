"""Synthetic packed tables in a real lake, written the way ``lk.pack()`` writes them, without running the packer.

``synthetic_packs`` builds a ``packers.schema.packed_schema`` table of random variable-length samples
(2 cameras x 16 image tokens of dim 768, 5-40 text tokens, 1 state token of dim 2, 16 action tokens of dim 2),
next-fit packed per split under a token budget; ``write_packed_table`` commits it with its ``packings`` row as
one lake version through the lake's own write path (fragments, then one commit). Fast, and free to shape
(layouts, fragments, sizes) as each test needs. Used by the tests (via conftest) and by
``benchmarks/stream.py --synthetic``; ``test_packer_tables.py`` checks the packer's real output.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

# the keys the packer's layout has (``packers.samples.make_layout``) that matter here
LAYOUT = {"cameras": ["observation.images.top", "observation.images.wrist"], "patches_per_image": 16,
          "token_dim": 768, "image_encoder": "patches", "state_dim": 2, "action_dim": 2,
          "action_offsets": list(range(16)), "action_bins": None, "token_budget": 1024, "payload_rows": "fixed_size"}
LAYOUT_BINS = {**LAYOUT, "action_bins": 256}
LAYOUT_EMBEDS = {**LAYOUT, "image_encoder": "frozen", "embed_dim": 64}  # token_dim stays the patch size


def _image_width(layout: dict) -> int:
    return layout["embed_dim"] if layout.get("image_encoder") == "frozen" else layout["token_dim"]


def _sample_lengths(layout: dict, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(image+text prefix lengths, total lengths) of ``n`` samples."""
    n_img = len(layout["cameras"]) * layout["patches_per_image"]
    text = rng.integers(5, 41, n)
    return n_img + text, n_img + text + 1 + len(layout["action_offsets"])


def synthetic_packs(layout: dict = LAYOUT, episodes: int = 12, min_len: int = 10, max_len: int = 30,
                    splits: dict | None = None, seed: int = 0, copies: int = 1) -> pa.Table:
    """A packed table (one row per pack) of one sample per frame of ``episodes`` random episodes.

    ``copies`` repeats the whole set of packs (new pack ids) to make a bigger table of the same data.
    """
    from packers.schema import MODALITIES, packed_schema, table_of

    rng = np.random.default_rng(seed)
    splits = splits or {"train": 0.75, "val": 0.25}
    lengths = rng.integers(min_len, max_len + 1, episodes)
    ep_ids = [f"ep_{seed:02d}{i:05d}" for i in range(episodes)]
    names = list(splits)
    ep_split = [names[min(int(i * len(names) / episodes), len(names) - 1)] for i in range(episodes)]
    # one sample per frame; samples of a split are shuffled, then next-fit packed under the budget
    samples = [(e, f) for e in range(episodes) for f in range(int(lengths[e]))]
    prefix, total = _sample_lengths(layout, len(samples), rng)
    budget = int(layout["token_budget"])
    n_img = len(layout["cameras"]) * layout["patches_per_image"]
    horizon = len(layout["action_offsets"])
    packs: list[tuple[str, list[int]]] = []
    for split in names:
        idx = [i for i, (e, _) in enumerate(samples) if ep_split[e] == split]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        cur, used = [], 0
        for i in idx:
            if cur and used + total[i] > budget:
                packs.append((split, cur))
                cur, used = [], 0
            cur.append(i)
            used += int(total[i])
        if cur:
            packs.append((split, cur))

    cols: dict[str, list] = {k: [] for k in packed_schema(layout).names}
    tdim, sdim, adim = _image_width(layout), layout["state_dim"], layout["action_dim"]
    for pid, (split, members) in enumerate(packs):
        lens = total[members]
        cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        T = int(cu[-1])
        mod, pos, seg, loss = [], [], [], []
        n_text_all = 0
        for j, i in enumerate(members):
            n_text = int(prefix[i]) - n_img
            n_text_all += n_text
            m = np.concatenate([np.full(n_img, MODALITIES["image"]), np.full(n_text, MODALITIES["text"]),
                                np.full(1, MODALITIES["state"]), np.full(horizon, MODALITIES["action"])])
            mod.append(m.astype(np.int8))
            pos.append(np.arange(int(total[i]), dtype=np.int32))
            seg.append(np.full(int(total[i]), j, np.int32))
            loss.append((m == MODALITIES["action"]).astype(np.uint8))
        k = len(members)
        n_act = k * horizon
        row = {
            "pack_id": pid, "split": split, "n_samples": k, "n_tokens": T, "max_seqlen": int(lens.max()),
            "cu_seqlens": cu, "prefix_lens": prefix[members].astype(np.int32),
            "origin_episode": [ep_ids[samples[i][0]] for i in members],
            "origin_frame": np.array([samples[i][1] for i in members], np.int64),
            "modality": np.concatenate(mod), "position_ids": np.concatenate(pos),
            "segment_ids": np.concatenate(seg), "loss_mask": np.concatenate(loss),
            "text_ids": rng.integers(0, 256, n_text_all, dtype=np.int32),
            "state": rng.standard_normal(k * sdim, dtype=np.float32),
            "state_is_pad": np.zeros(k, np.uint8),
            "actions": rng.standard_normal(n_act * adim, dtype=np.float32),
            "action_is_pad": (rng.random(n_act) < 0.1).astype(np.uint8),
        }
        if layout.get("image_encoder") == "frozen":
            row["image_embeds"] = rng.standard_normal(k * n_img * tdim, dtype=np.float32).astype(np.float16)
        else:
            row["image_patches"] = rng.integers(0, 256, k * n_img * tdim, dtype=np.uint8)
        if layout.get("action_bins"):
            row["action_bins"] = rng.integers(0, layout["action_bins"], n_act * adim, dtype=np.int32)
        for name in cols:
            cols[name].append(row[name])
    schema = packed_schema(layout)
    table = table_of(cols, schema)
    if copies > 1:
        n = table.num_rows
        parts = [table.set_column(0, "pack_id", pa.array(np.arange(c * n, (c + 1) * n), pa.int64()))
                 for c in range(copies)]
        table = pa.concat_tables(parts).combine_chunks()
    return table


def flat_payload_lists(table: pa.Table) -> pa.Table:
    """``table`` as packers wrote it before 2-D payloads became lists of fixed-size lists: flat lists, and
    no ``payload_rows`` in the layout."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) and pa.types.is_fixed_size_list(f.type.value_type):
            col = table[f.name].combine_chunks()
            w = f.type.value_type.list_size
            flat = pa.ListArray.from_arrays(pa.array(np.asarray(col.offsets) * w, pa.int32()), col.values.flatten())
            table = table.set_column(i, pa.field(f.name, flat.type), flat)
    layout = {k: v for k, v in json.loads((table.schema.metadata or {}).get(b"packers.layout", b"{}")).items()
              if k != "payload_rows"}
    return table.replace_schema_metadata({"packers.layout": json.dumps(layout, sort_keys=True)})


def write_packed_table(lk, table: pa.Table, name: str = "packed_test", recipe_hash: str = "test0000",
                       message: str = "synthetic packed table", rows_per_file: int | None = None) -> int:
    """Commit ``table`` as lake table ``name`` plus its ``packings`` row, as one lake version; returns it."""
    from lake import _tables, _versions
    from packers.schema import PACKINGS, layout_of

    schema = table.schema
    frags = []
    step = rows_per_file or table.num_rows
    for start in range(0, table.num_rows, step):  # several fragments, as a distributed packer writes
        frags += _tables.write_rows(lk.store, name, table.slice(start, step), schema)
    n_tokens = np.asarray(table["n_tokens"])
    budget = layout_of(schema).get("token_budget", int(n_tokens.max()))
    row = pa.table({
        "recipe_hash": [recipe_hash], "table": [name], "recipe_json": [json.dumps({"layout": layout_of(schema)})],
        "source_version": [lk.version],
        "episodes": [len(set(table["origin_episode"].combine_chunks().flatten().to_pylist()))],
        "packs": [table.num_rows], "samples": [int(np.asarray(table["n_samples"]).sum())],
        "fill": [float(n_tokens.sum() / (budget * table.num_rows))],
        "created": [datetime.now(timezone.utc)],
    }, schema=PACKINGS)
    frags2 = _tables.write_rows(lk.store, "packings", row, PACKINGS)
    entry = _versions.commit(lk.store, lambda head: _tables.append_tables(
        lk.store, head.tables, {name: (schema, frags), "packings": (PACKINGS, frags2)}), message)
    lk.refresh()
    return entry.version
