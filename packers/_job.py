"""The packing job: decode → sample → tokenize → pack → write, as a Ray Data pipeline; one lake commit.

Episodes of a split are shuffled (seeded) and cut into groups of ``recipe.episodes_per_group``; each Ray task
reads its group's frames and video segments, builds every sample, bin-packs them and writes the packs as
fragments of ``packed_<recipe hash>``. Memory is bounded by the group, not the dataset. The driver commits
the fragments and a row of ``packings`` (lineage: recipe, source lake version, counts) as one lake version.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from .binpack import SampleTooLong, get_packer
from .mixture import pool_slots
from .encoders import get_encoder
from .images import get_image_tokenizer, resize
from .recipe import Recipe, default_recipe
from .samples import Samples, assemble, episode_samples, make_layout
from .schema import PACKINGS, PACKINGS_MIXTURE, layout_of, packed_schema
from .text import get_tokenizer


@dataclass(frozen=True)
class PackReport:
    """What one ``pack`` did. ``fill`` = real tokens / (packs × budget) over the packs written."""

    version: int | None
    table: str
    recipe_hash: str
    packs: int
    samples: int
    fill: float
    episodes: int
    repacked: bool = False
    seconds: float = 0.0
    mixture: dict | None = None  # a mixture's lineage (``packers.mixture``): sources, versions, weights, counts


def resolve_recipe(lk, recipe) -> Recipe:
    if recipe is None:
        feats = list(lk.features().values())
        if not feats:
            raise ValueError("the lake has no episodes to pack")
        return default_recipe(feats[0])
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe)
    return Recipe.from_yaml(recipe)


def packings(lk) -> list[dict]:
    """Rows of the ``packings`` table at this lake version, oldest first."""
    if "packings" not in lk._entry.tables:
        return []
    return lk.table("packings").to_table().to_pylist()


# --- worker -------------------------------------------------------------------------------------------------

def _group_columns(lk, episodes: list[dict], features: list[str]) -> dict[str, dict[str, np.ndarray]]:
    from lake._schema import unnest

    out: dict[str, dict[str, np.ndarray]] = {}
    by_table: dict[str, list[str]] = {}
    for e in episodes:
        by_table.setdefault(e["frames_table"], []).append(e["episode_id"])
    for table, ids in by_table.items():
        quoted = ", ".join(f"'{i}'" for i in ids)
        t = unnest(lk.table(table).to_table(filter=f"episode_id IN ({quoted})",
                                            columns=["episode_id", "frame_index", *features]))
        t = t.sort_by([("episode_id", "ascending"), ("frame_index", "ascending")])
        eid = t["episode_id"].to_numpy(zero_copy_only=False)
        bounds = np.flatnonzero(np.r_[True, eid[1:] != eid[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:]):
            out[eid[a]] = {f: _np(t[f].slice(a, b - a)) for f in features}
    return out


def _np(col) -> np.ndarray:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    return col.to_numpy(zero_copy_only=False)


def _group_images(lk, episodes: list[dict], layout: dict, tokenize) -> dict[tuple[str, str], np.ndarray]:
    """(episode, camera) -> image tokens of every frame: decoded once per episode by the lake, resized, tokenized."""
    from ._embodiments import camera_of  # a mixture's sources may name a camera differently (camera_map)

    return {(e["episode_id"], c): tokenize(resize(lk.video(e["episode_id"], camera_of(layout, e, c)),
                                                  tuple(layout["image_size"])))
            for e in episodes for c in layout["cameras"] if camera_of(layout, e, c) in (e["cameras"] or [])}


def pack_group(row: dict, *, lake_ref, groups: list[tuple], layout: dict, recipe: Recipe, table: str,
               encoder=None) -> dict:
    """Ray task: pack one group of episodes. ``lake_ref``: the driver's read-only ``Lake`` handle (taken, not
    imported: packers sit below the ``lake`` facade, whose ``pack`` calls them)."""
    from lake import _tables

    lk = lake_ref
    split, episodes, first_id, seed = groups[row["unit"]]
    tok = get_tokenizer(recipe.tokenizer)
    image_tok = get_image_tokenizer(recipe.image_encoder, recipe.patch_size, encoder)
    if layout.get("embodiments"):
        from ._embodiments import group_columns, pad_samples, with_embodiment

        columns = group_columns(lk, episodes, layout, _group_columns)
    else:
        columns = _group_columns(lk, episodes, layout["state_features"] + layout["action_features"])
    images = _group_images(lk, episodes, layout, image_tok)
    parts, mult, slots = [], [], []
    for e in episodes:
        eid = e["episode_id"]
        if "mult" in e:
            mult.append(np.asarray(e["mult"], np.int64))
        if "slot" in e:  # a per-epoch draw's pool: each copy's slot (packers.mixture.epoch_slots)
            slots.append(pool_slots(*e["slot"], mult[-1]))
        missing = [c for c in layout["cameras"] if (eid, c) not in images]
        if missing:
            raise ValueError(f"episode {eid} has no camera {missing[0]!r}, which the recipe asks for")
        text = tok.encode(e["task"] or "")
        if recipe.max_text_tokens is not None:
            text = text[:recipe.max_text_tokens]
        if layout.get("embodiments"):
            lay = with_embodiment(layout, e["robot_type"])
            parts.append(pad_samples(episode_samples(eid, columns[eid], {c: images[(eid, c)] for c in layout["cameras"]},
                                                     text, lay, recipe.frame_stride), layout))
            continue
        parts.append(episode_samples(eid, columns[eid], {c: images[(eid, c)] for c in layout["cameras"]}, text,
                                     layout, recipe.frame_stride))
    s = Samples.concat(parts)
    if mult:  # a mixture: each sample as often as the epoch's draw says (packers.mixture)
        s = s.take(np.repeat(np.arange(len(s.frame)), np.concatenate(mult)))
    slot = np.concatenate(slots) if slots else None
    lengths = s.lengths
    over = np.flatnonzero(lengths > recipe.token_budget)
    if len(over):
        i = int(over[0])
        if recipe.too_long == "error":
            raise SampleTooLong(f"sample (episode {s.episode[i]}, frame {s.frame[i]}) has {lengths[i]} tokens, "
                                f"more than token_budget={recipe.token_budget} (raise it, or too_long: truncate)")
        for i in over:  # truncate: cut the instruction (keep BOS) until the sample fits
            cut = lengths[i] - recipe.token_budget
            if cut >= len(s.text[i]):
                raise SampleTooLong(f"sample (episode {s.episode[i]}, frame {s.frame[i]}) does not fit "
                                    f"token_budget={recipe.token_budget} even without text")
            s.text[i] = s.text[i][: len(s.text[i]) - cut]
        lengths = s.lengths
    packs = get_packer(recipe.packer)(lengths, recipe.token_budget, recipe.max_samples_per_pack, seed)
    rows = assemble(s, packs, split, first_id, layout, slot)
    frags = _tables.write_fragments(lk.store, table, rows, packed_schema(layout))
    return {"unit": row["unit"], "frags": frags, "packs": len(packs), "samples": len(lengths),
            "tokens": int(lengths.sum()), "episodes": len(episodes)}


# --- driver -------------------------------------------------------------------------------------------------

def pack(lk, recipe=None, *, mixture=None, repack: bool = False, progress: bool = True,
         ray_address: str | None = None) -> PackReport:
    """Pack every split of the lake for ``recipe`` (None: the default recipe). Re-running is a no-op; new
    episodes since the last packing are packed and appended (with the normalization frozen back then);
    ``repack=True`` rebuilds the table from scratch. ``mixture`` (or ``recipe.mixture``): sources with weights,
    see ``packers.mixture``; a mixture whose selection changed is re-packed whole."""
    from tqdm.auto import tqdm

    from lake import _tables, _versions
    from lake._ray import ensure_ray, map_units

    t0 = time.perf_counter()
    recipe = resolve_recipe(lk, recipe)
    # looked up here, where the user's registrations ran; the factory itself travels to the Ray tasks
    encoder = get_encoder(recipe.encoder, f"recipe {recipe.name}") if recipe.image_encoder == "frozen" else None
    if mixture is not None:
        import dataclasses

        from .mixture import Mixture

        recipe = dataclasses.replace(recipe, mixture=Mixture.parse(mixture))
    table = f"packed_{recipe.hash}"
    prior = [r for r in packings(lk) if r["recipe_hash"] == recipe.hash]
    eps = lk.episodes(columns=["episode_id", "split", "length", "task", "fps", "frames_table", "cameras"])
    lineage = None
    if recipe.mixture is not None:
        from ._mixture_plan import plan_mixture

        eps, lineage = plan_mixture(lk, recipe, eps)
        if prior and not repack:
            if json.loads(prior[-1].get("mixture_json") or "{}").get("selection") == lineage["selection"]:
                _side_index(lk, table)
                return PackReport(None, table, recipe.hash, 0, 0, 0.0, 0, False, time.perf_counter() - t0, lineage)
            repack = True  # another selection: another draw, the whole table
    current = set(eps["episode_id"].to_pylist()) if isinstance(eps, pa.Table) else {e["episode_id"] for e in eps}
    done: set[str] = set()
    if prior and not repack:
        packed = lk.table(table)
        done = {e for lst in packed.to_table(columns=["origin_episode"])["origin_episode"].to_pylist() for e in lst}
        if not done <= current:
            repack = True  # episodes left the lake since: the packs that hold them must go
            done = set()
    if prior and not repack:
        layout = layout_of(lk.table(table).schema)
    else:
        fps = {float(r["fps"]) for r in (eps.to_pylist() if isinstance(eps, pa.Table) else eps)}
        if len(fps) > 1:
            raise ValueError(f"episodes have different fps {sorted(fps)}: pack them with separate recipes/filters")
        if recipe.mixture is not None:  # normalized per embodiment, dims padded to the widest (packers._embodiments)
            from ._embodiments import embodiment_layout

            layout = embodiment_layout(lk, recipe, eps, fps.pop() if fps else 10.0,
                                       get_tokenizer(recipe.tokenizer).vocab_size)
        else:
            features = _features(lk)
            layout = make_layout(recipe.resolved(features), features, lk.stats(), fps.pop() if fps else 10.0,
                                 get_tokenizer(recipe.tokenizer).vocab_size)
        layout["recipe_hash"] = recipe.hash
        if lineage and lineage.get("draw") == "epoch":  # what the loader needs to redraw every epoch
            layout["mixture_draw"] = {"sources": [
                {k: src[k] for k in ("name", "replacement", "samples", "target", "copies")}
                for src in lineage["sources"]]}
    rows = eps.to_pylist() if isinstance(eps, pa.Table) else eps
    todo = [r for r in rows if r["episode_id"] not in done]
    if not todo:
        _side_index(lk, table)
        return PackReport(None, table, recipe.hash, 0, 0, 0.0, 0, False, time.perf_counter() - t0)
    from ._embodiments import camera_of

    for r in todo:
        missing = {camera_of(layout, r, c) for c in layout["cameras"]} - set(r["cameras"] or [])
        if missing:
            raise ValueError(f"episode {r['episode_id']} lacks camera(s) {sorted(missing)} named by the recipe")
    groups = _groups(todo, recipe, first_group=_next_group(prior, repack))
    ensure_ray(ray_address)
    frags, packs_n, samples_n, tokens, n_eps = [], 0, 0, 0, 0
    with tqdm(total=sum(len(g[1]) for g in groups), desc=f"pack {recipe.name}", unit="ep", disable=not progress) as bar:
        for row in map_units(pack_group, len(groups), lambda r: bar.update(r["episodes"]),
                             lake_ref=lk.checkout(lk.version), groups=groups, layout=layout, recipe=recipe, table=table,
                             encoder=encoder):
            frags += _tables.load_fragments(row["frags"])
            packs_n += row["packs"]
            samples_n += row["samples"]
            tokens += row["tokens"]
            n_eps += row["episodes"]
    fill = tokens / (packs_n * recipe.token_budget) if packs_n else 0.0
    all_eps = len(done) + n_eps
    prior_packs = 0 if repack or not prior else prior[-1]["packs"]
    prior_samples = 0 if repack or not prior else prior[-1]["samples"]
    schema = packed_schema(layout)

    ps = PACKINGS_MIXTURE if lineage else PACKINGS

    def build(head):
        pins = dict(head.tables)
        if repack:
            pins.pop(table, None)  # the new table version holds only the new fragments
        new = {table: _tables.overwrite_with(lk.store, table, schema, pins.get(table), frags)}
        row = pa.Table.from_pylist([{
            "recipe_hash": recipe.hash, "table": table, "recipe_json": json.dumps(recipe.to_dict()),
            "source_version": lk.version, "episodes": all_eps, "packs": prior_packs + packs_n,
            "samples": prior_samples + samples_n, "fill": fill, "created": datetime.now(timezone.utc),
            **({"mixture_json": json.dumps(lineage)} if lineage else {})}], ps)
        new.update(_tables.append_tables(lk.store, head.tables,
                                         {"packings": (ps, _tables.write_rows(lk.store, "packings", row, ps))}))
        return new

    entry = _versions.commit(lk.store, build, f"pack {recipe.name} ({recipe.hash}) from version {lk.version}"
                             + (" (full repack)" if repack and prior else ""),
                             {"recipe_hash": recipe.hash, "packs": packs_n, "samples": samples_n, "fill": round(fill, 5),
                              "source_version": lk.version,
                              **({"mixture": {m["name"]: m["weight"] for m in lineage["sources"]}} if lineage else {})})
    _side_index(lk.checkout(entry.version), table)
    return PackReport(entry.version, table, recipe.hash, packs_n, samples_n, fill, n_eps, bool(repack and prior),
                      time.perf_counter() - t0, lineage)


def _side_index(lk, table: str) -> None:
    """The packed table's pack index as a side file (``pack_index``). Derived data, written after the commit: a
    failure leaves the lake as committed (readers then read the index from the table), so it only warns."""
    from . import pack_index

    try:
        pack_index.ensure(lk, table)
    except Exception as e:  # noqa: BLE001 - any failure: the table is committed and readable without it
        import warnings

        warnings.warn(f"pack index side file of {table} not written ({e!r}); streams read it from the table",
                      RuntimeWarning, stacklevel=3)


def _features(lk) -> dict:
    merged: dict = {}
    for feats in lk.features().values():
        merged.update(feats)
    return merged


def _next_group(prior: list[dict], repack: bool) -> int:
    return 0 if repack or not prior else int(prior[-1]["packs"]) + len(prior)  # strictly above any used id block


def _groups(episodes: list[dict], recipe: Recipe, first_group: int) -> list[tuple]:
    """(split, episodes, first pack id, seed) per group: episodes of one split, shuffled, chunked."""
    rng = np.random.default_rng(recipe.seed)
    groups = []
    for split in sorted({e["split"] for e in episodes}):
        eps = sorted((e for e in episodes if e["split"] == split), key=lambda e: e["episode_id"])
        eps = [eps[i] for i in rng.permutation(len(eps))]
        for i in range(0, len(eps), recipe.episodes_per_group):
            g = first_group + len(groups)
            groups.append((split, eps[i:i + recipe.episodes_per_group], g << 20, recipe.seed * 1_000_003 + g))
    return groups
