"""Two embodiments in one mixture: each normalized with its own stats, dims padded to the widest."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import lake
from packers import Recipe, layout_of

RECIPE = Recipe(image_size=(32, 32), patch_size=16, action_horizon=4, token_budget=512, episodes_per_group=3,
                name="robots")


@pytest.fixture(scope="module")
def packed(tmp_path_factory, two_robots):
    dst = tmp_path_factory.mktemp("robots") / "lake"
    shutil.copytree(two_robots.uri, dst)
    lk = lake.open(dst)
    rep = lk.pack(RECIPE, mixture={"pusht_v3": 1.0, "groot": 1.0}, progress=False)
    return lk, rep, layout_of(lk.table(rep.table).schema)


def test_layout_has_both_embodiments_with_their_own_dims_and_modality(packed):
    _, _, layout = packed
    embs = layout["embodiments"]
    assert set(embs) == {"pusht", "gr1_sim"}
    assert (layout["state_dim"], layout["action_dim"]) == (4, 3)
    assert (embs["pusht"]["state_dim"], embs["pusht"]["action_dim"]) == (2, 2)
    assert (embs["gr1_sim"]["state_dim"], embs["gr1_sim"]["action_dim"]) == (4, 3)
    assert embs["gr1_sim"]["sources"] == ["groot"] and embs["gr1_sim"]["modality"]["action"]["gripper"]["start"] == 2
    assert embs["pusht"]["modality"]["default_layout"]


def test_each_embodiment_is_normalized_with_its_own_stats(packed):
    lk, rep, layout = packed
    robot = dict(zip(*[lk.episodes(columns=["episode_id", "robot_type"])[c].to_pylist()
                       for c in ("episode_id", "robot_type")]))
    for robot_type, emb in layout["embodiments"].items():
        ids = [e for e, r in robot.items() if r == robot_type]
        mean = lk.stats(filter="episode_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")")["action"]["mean"]
        np.testing.assert_allclose(emb["norm"]["action"]["shift"], mean, rtol=1e-9)
    checked, h = set(), len(layout["action_offsets"])
    for row in lk.table(rep.table).to_table(columns=["origin_episode", "origin_frame", "actions"]).to_pylist():
        for i, (eid, frame) in enumerate(zip(row["origin_episode"], row["origin_frame"])):
            acts = row["actions"][i * h:(i + 1) * h]  # one row per action token, h per sample
            rt = robot[eid]
            emb = layout["embodiments"][rt]
            raw = np.asarray(lk.frames(eid, ["action"])["action"].to_pylist()[frame], np.float64)
            n = emb["norm"]["action"]
            want = (raw - np.asarray(n["shift"])) / np.asarray(n["scale"])
            got = np.asarray(acts[0], np.float64)
            np.testing.assert_allclose(got[:emb["action_dim"]], want, rtol=1e-5, atol=1e-5)
            assert (got[emb["action_dim"]:] == 0).all()  # padding past this robot's width
            checked.add(rt)
        if checked == {"pusht", "gr1_sim"}:
            break
    assert checked == {"pusht", "gr1_sim"}


# --- cameras matched by view: a GR00T modality.json's video keys ---------------------------------------------------

RENAMED = {"observation.images.top": "observation.images.cam_high",
           "observation.images.wrist": "observation.images.cam_wrist"}  # = conftest.GROOT_CAMERAS


@pytest.fixture(scope="module")
def renamed(groot_cameras, tmp_path_factory):
    dst = tmp_path_factory.mktemp("renamed") / "lake"
    shutil.copytree(groot_cameras.uri, dst)
    return lake.open(dst)


def test_groot_video_keys_map_to_the_lakes_cameras_and_the_mixture_packs(renamed, tmp_path):
    lk = lake.open(renamed.uri)
    assert dict(lk.embodiments()["groot"].video) == {"top": RENAMED["observation.images.top"],
                                                     "wrist": RENAMED["observation.images.wrist"]}
    recipe = Recipe(image_size=(32, 32), patch_size=16, action_horizon=4, token_budget=512,
                    cameras=("observation.images.top", "observation.images.wrist"), name="cams")
    rep = lk.pack(recipe, mixture={"pusht_v3": 1.0, "groot": 1.0}, progress=False)
    layout = layout_of(lk.table(rep.table).schema)
    assert layout["cameras"] == ["observation.images.top", "observation.images.wrist"]
    assert layout["camera_map"]["groot"] == RENAMED  # stated in the packed table
    assert layout["camera_map"]["pusht_v3"] == {c: c for c in RENAMED}
    # a GR00T sample's image tokens are its own cam_high / cam_wrist frames
    from packers.images import get_image_tokenizer, resize

    tok = get_image_tokenizer("patches", 16, None)
    groot = set(lk.episodes(filter="source = 'groot'")["episode_id"].to_pylist())
    assert layout["observation_offsets"] == [0]
    per_cam = layout["patches_per_image"]
    b, j = next((b, j) for b in lk.stream("train", recipe=rep.recipe_hash, shuffle=False)
                for j, (e, _) in enumerate(b.origin) if e in groot)
    eid, frame = b.origin[j]
    mine = b.image_patches[j * 2 * per_cam:(j + 1) * 2 * per_cam].numpy()  # every sample: 2 cameras' patches
    for k, cam in enumerate(layout["cameras"]):
        want = tok(resize(lk.video(eid, RENAMED[cam])[[frame]], (32, 32)))[0]
        np.testing.assert_array_equal(mine[k * per_cam:(k + 1) * per_cam], want)


def test_views_that_do_not_match_are_refused_naming_them(renamed):
    lk = lake.open(renamed.uri)
    with pytest.raises(ValueError, match=r"camera 'top' \(view 'top'\) has no match in source 'pusht_v3'|"
                                         r"camera 'observation.images.side'"):
        lk.pack(Recipe(image_size=(32, 32), patch_size=16, cameras=("observation.images.side",), name="x"),
                mixture={"pusht_v3": 1.0, "groot": 1.0}, progress=False)


def test_differently_named_cameras_train_together_with_a_per_epoch_draw(renamed, tmp_path):
    import torch

    from training.sft import SFTConfig, train

    dst = tmp_path / "lake"
    shutil.copytree(renamed.uri, dst)
    lk = lake.open(dst)
    rep = lk.pack(Recipe(image_size=(32, 32), action_horizon=4, token_budget=512, name="cams2"),
                  mixture={"sources": {"pusht_v3": 1.0, "groot": 2.0}, "draw": "epoch"}, progress=False)
    torch.manual_seed(0)
    out = train(SFTConfig(lake=lk.uri, recipe=rep.recipe_hash, out_dir=str(tmp_path / "run"),
                          model={"width": 32, "depth": 1, "heads": 2, "head_dim": 16}, warmup=1, log_every=1000,
                          steps=6, lr=1e-3, ckpt_every=1000), progress=False)
    by = out["losses_by_embodiment"]
    assert set(by) == {"pusht", "gr1_sim"} and all(np.isfinite(v).all() and len(v) for v in by.values())
