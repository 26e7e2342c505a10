"""The packing job against an independent reference built straight from lake frames, video and stats."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

import lake
from lake.cli import main as cli
from packers import MODALITIES, Recipe, SampleTooLong, layout_of

RECIPE = Recipe(image_size=(32, 32), patch_size=16, observation_deltas=(-0.1, 0.0), action_horizon=8,
                normalization="quantile", action_bins=16, token_budget=512, episodes_per_group=2, name="small")


@pytest.fixture(scope="module")
def packed(tmp_path_factory, ingested):
    dst = tmp_path_factory.mktemp("packed") / "lake"
    shutil.copytree(ingested.uri, dst)
    lk = lake.open(dst)
    rep = lk.pack(RECIPE, progress=False)
    return lk, rep, lk.table(rep.table).to_table().to_pylist()


def _reference(lk, eid: str, t: int, recipe: Recipe) -> dict:
    """One sample built the slow, obvious way from lk.frames / lk.video / lk.stats."""
    frames = lk.frames(eid)
    n = frames.num_rows
    stats = lk.stats()
    obs = [t + o for o in recipe.observation_offsets(10)]
    act = [t + o for o in recipe.action_offsets(10)]

    def norm(feature, rows):
        s = stats[feature]
        x = np.array([frames[feature][min(max(i, 0), n - 1)].as_py() for i in rows], np.float64)
        return (x - (s["q01"] + s["q99"]) / 2) / ((s["q99"] - s["q01"]) / 2 + 1e-8)

    patches = []
    for cam in recipe.cameras or ("observation.images.top", "observation.images.wrist"):
        video = lk.video(eid, cam)
        for i in obs:
            img = np.asarray(Image.fromarray(video[min(max(i, 0), n - 1)]).resize((32, 32), Image.BILINEAR))
            for r in range(0, 32, 16):
                for c in range(0, 32, 16):
                    patches.append(img[r:r + 16, c:c + 16].reshape(-1))
    task = lk.episodes(filter=f"episode_id = '{eid}'")["task"][0].as_py()
    actions = norm("action", act)
    lim = 1.0
    return {
        "state": norm("observation.state", obs), "state_is_pad": [int(not 0 <= i < n) for i in obs],
        "actions": actions, "action_is_pad": [int(not 0 <= i < n) for i in act],
        "action_bins": np.minimum(((np.clip(actions, -lim, lim) + lim) / (2 * lim) * 16).astype(int), 15),
        "image": np.stack(patches), "text": [1] + [b + 3 for b in task.encode()] + [2],
    }


def _sample(row: dict, j: int, layout: dict) -> dict:
    a, b = row["cu_seqlens"][j], row["cu_seqlens"][j + 1]
    mod = np.array(row["modality"][a:b])
    before = np.array(row["modality"][:a])
    n_img_before = int((before == MODALITIES["image"]).sum())
    n_txt_before = int((before == MODALITIES["text"]).sum())
    n_img, n_txt = int((mod == 0).sum()), int((mod == 1).sum())
    k, h = len(layout["observation_offsets"]), len(layout["action_offsets"])
    td, ds, da = layout["token_dim"], layout["state_dim"], layout["action_dim"]
    row = {**row, **{c: np.ravel(row[c]) for c in ("image_patches", "state", "actions", "action_bins")}}  # 2-D -> flat
    img = np.array(row["image_patches"][n_img_before * td:(n_img_before + n_img) * td], np.uint8).reshape(n_img, td)
    return {
        "modality": mod, "position_ids": row["position_ids"][a:b], "loss_mask": row["loss_mask"][a:b],
        "image": img, "text": row["text_ids"][n_txt_before:n_txt_before + n_txt],
        "state": np.array(row["state"][j * k * ds:(j + 1) * k * ds]).reshape(k, ds),
        "state_is_pad": row["state_is_pad"][j * k:(j + 1) * k],
        "actions": np.array(row["actions"][j * h * da:(j + 1) * h * da]).reshape(h, da),
        "action_is_pad": row["action_is_pad"][j * h:(j + 1) * h],
        "action_bins": np.array(row["action_bins"][j * h * da:(j + 1) * h * da]).reshape(h, da),
        "prefix": row["prefix_lens"][j],
    }


def test_samples_read_back_equal_samples_built_from_lake_frames(packed):
    lk, rep, rows = packed
    layout = layout_of(lk.table(rep.table).schema)
    checked = 0
    for row in rows[:3]:
        for j, (eid, t) in enumerate(zip(row["origin_episode"], row["origin_frame"])):
            got, ref = _sample(row, j, layout), _reference(lk, eid, t, RECIPE)
            np.testing.assert_allclose(got["state"], ref["state"], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got["actions"], ref["actions"], rtol=1e-5, atol=1e-5)
            assert got["state_is_pad"] == ref["state_is_pad"] and got["action_is_pad"] == ref["action_is_pad"]
            np.testing.assert_array_equal(got["action_bins"], ref["action_bins"])
            np.testing.assert_array_equal(got["image"], ref["image"])
            assert got["text"] == ref["text"]
            n_img, n_txt = len(ref["image"]), len(ref["text"])
            assert got["prefix"] == n_img + n_txt
            assert got["modality"].tolist() == [0] * n_img + [1] * n_txt + [2] * 2 + [3] * 8
            assert got["position_ids"] == list(range(len(got["modality"])))
            assert got["loss_mask"] == [0] * (n_img + n_txt + 2) + [1 - p for p in ref["action_is_pad"]]
            checked += 1
    assert checked > 10


def test_every_frame_of_each_split_is_one_sample_in_exactly_one_pack(packed):
    lk, rep, rows = packed
    eps = lk.episodes(columns=["episode_id", "split", "length"]).to_pylist()
    for split in {e["split"] for e in eps}:
        want = sorted((e["episode_id"], t) for e in eps if e["split"] == split for t in range(e["length"]))
        got = sorted((e, t) for r in rows if r["split"] == split for e, t in zip(r["origin_episode"], r["origin_frame"]))
        assert got == want
    assert rep.samples == sum(e["length"] for e in eps) and rep.packs == len(rows)


def test_packs_are_within_budget_with_valid_cu_seqlens_and_positions(packed):
    _, rep, rows = packed
    tokens = 0
    for r in rows:
        cu = np.array(r["cu_seqlens"])
        assert cu[0] == 0 and cu[-1] == r["n_tokens"] <= RECIPE.token_budget and (np.diff(cu) > 0).all()
        assert len(cu) == r["n_samples"] + 1 and r["max_seqlen"] == np.diff(cu).max()
        assert len(r["modality"]) == len(r["position_ids"]) == len(r["segment_ids"]) == r["n_tokens"]
        pos = np.array(r["position_ids"])
        assert (pos[cu[:-1]] == 0).all() and (np.diff(pos)[np.setdiff1d(np.arange(len(pos) - 1), cu[1:-1] - 1)] == 1).all()
        assert np.array_equal(np.array(r["segment_ids"]), np.repeat(np.arange(r["n_samples"]), np.diff(cu)))
        tokens += r["n_tokens"]
    assert rep.fill == pytest.approx(tokens / (len(rows) * RECIPE.token_budget))
    assert len({r["pack_id"] for r in rows}) == len(rows)


def test_lineage_rerun_noop_and_incremental_pack(packed, tmp_path):
    lk, rep, _ = packed
    entry = lk.log()[0]
    assert entry.version == rep.version and entry.summary["recipe_hash"] == RECIPE.hash
    row = lk.table("packings").to_table().to_pylist()[-1]
    assert row["source_version"] == rep.version - 1 and row["table"] == rep.table
    assert lk.pack(RECIPE, progress=False).version is None  # same recipe, same version: nothing to do
    # new episodes: only they are packed, with the normalization frozen at the first packing
    dst = tmp_path / "lake"
    shutil.copytree(lk.uri, dst)
    lk2 = lake.open(dst)
    more = lake.write_pusht_dataset(tmp_path / "more", episodes=2, version="v2.1", min_len=10, max_len=12, seed=99)
    lk2.ingest(more, progress=False)
    rep2 = lk2.pack(RECIPE, progress=False)
    assert rep2.episodes == 2 and not rep2.repacked
    table = lk2.table(rep2.table)
    origins = [(e, t) for r in table.to_table(columns=["origin_episode", "origin_frame"]).to_pylist()
               for e, t in zip(r["origin_episode"], r["origin_frame"])]
    assert len(origins) == len(set(origins)) == sum(lk2.episodes()["length"].to_pylist())
    assert layout_of(table.schema)["norm"] == layout_of(lk.table(rep.table).schema)["norm"]


def test_too_long_samples_error_or_truncate(packed, tmp_path):
    lk, _, _ = packed
    dst = tmp_path / "lake"
    shutil.copytree(lk.uri, dst)
    lk2 = lake.open(dst)
    tight = Recipe(image_size=(32, 32), action_horizon=4, token_budget=40, episodes_per_group=8)
    with pytest.raises(Exception, match="more than token_budget=40"):
        lk2.pack(tight, progress=False)
    rep = lk2.pack(Recipe(image_size=(32, 32), action_horizon=4, token_budget=40, too_long="truncate",
                          episodes_per_group=8), progress=False)
    rows = lk2.table(rep.table).to_table(columns=["n_tokens"]).to_pylist()
    assert rep.samples == sum(lk2.episodes()["length"].to_pylist()) and max(r["n_tokens"] for r in rows) <= 40
    assert issubclass(SampleTooLong, ValueError)


def test_frozen_encoder_embeddings(packed, tmp_path):
    import torch

    from packers.encoders import patch_embed

    lk, _, _ = packed
    dst = tmp_path / "lake"
    shutil.copytree(lk.uri, dst)
    lk2 = lake.open(dst)
    r = Recipe(image_size=(32, 32), image_encoder="frozen", encoder="patch_embed",
               cameras=("observation.images.top",), action_horizon=4, episodes_per_group=8)
    rep = lk2.pack(r, progress=False)
    row = lk2.table(rep.table).to_table().slice(0, 1).to_pylist()[0]
    eid, t = row["origin_episode"][0], row["origin_frame"][0]
    img = np.asarray(Image.fromarray(lk2.video(eid, "observation.images.top")[t]).resize((32, 32), Image.BILINEAR))
    with torch.no_grad():
        want = patch_embed()(torch.from_numpy(img[None]).permute(0, 3, 1, 2).float() / 255)[0].half().numpy()
    got = np.array(row["image_embeds"][:len(want)], np.float16)  # one list per token
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-3)


def test_cli_pack_with_a_yaml_recipe(packed, tmp_path, capsys):
    lk, _, _ = packed
    dst = tmp_path / "lake"
    shutil.copytree(lk.uri, dst)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(Recipe(image_size=(16, 16), action_horizon=2, token_budget=256).to_yaml())
    assert cli(["pack", str(recipe), "--lake", str(dst), "-q"]) == 0
    assert "packs" in capsys.readouterr().out
    assert cli(["pack", str(recipe), "--lake", str(dst), "-q"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_incremental_pack_into_a_table_packed_before_fixed_size_rows_keeps_its_format(packed, tmp_path):
    """A packed table from before payload rows became fixed-size lists (flat lists, no ``payload_rows``) takes
    an incremental pack in its own format, and the stream reads every sample of both packings once."""
    import sys
    from pathlib import Path

    import pyarrow as pa
    from lance.fragment import write_fragments

    from lake import _tables, _versions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loaders"))
    from packed_tables import flat_payload_lists

    lk, rep, _ = packed
    dst = tmp_path / "lake"
    shutil.copytree(lk.uri, dst)
    lk2 = lake.open(dst)
    old = flat_payload_lists(lk2.table(rep.table).to_table())
    frags = write_fragments(old, lk2.store.table_uri(rep.table), schema=old.schema, mode="overwrite")
    _versions.commit(lk2.store, lambda head: {rep.table: _tables.overwrite_with(lk2.store, rep.table, old.schema,
                                                                                 None, frags)}, "as packed before")
    lk2.refresh()
    more = lake.write_pusht_dataset(tmp_path / "more", episodes=2, version="v3.0", min_len=10, max_len=12, seed=98)
    lk2.ingest(more, progress=False)
    rep2 = lk2.pack(RECIPE, progress=False)
    assert rep2.episodes == 2 and not rep2.repacked
    schema = lk2.table(rep2.table).schema
    assert schema.field("image_patches").type == pa.list_(pa.uint8()) and "payload_rows" not in layout_of(schema)
    got = sorted(o for b in lk2.stream("train", recipe=RECIPE, batch_packs=3) for o in b.origin)
    eps = lk2.episodes(columns=["episode_id", "split", "length"]).to_pylist()
    assert got == sorted((e["episode_id"], t) for e in eps if e["split"] == "train" for t in range(e["length"]))


def test_a_recipe_naming_an_unregistered_encoder_fails_before_any_work(packed, tmp_path, capsys):
    """A recipe file cannot choose code: ``encoder: os:system`` is a name nobody registered, refused with one line
    naming the recipe and the name; no version is written."""
    lk, _, _ = packed
    dst = tmp_path / "lake"
    shutil.copytree(lk.uri, dst)
    before = lake.open(dst).version
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(Recipe(image_size=(32, 32), image_encoder="frozen", encoder="os:system", name="hostile").to_yaml())
    assert cli(["pack", str(recipe), "--lake", str(dst), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recipe hostile" in err[0] and "'os:system' is not registered" in err[0], err
    assert lake.open(dst).version == before
