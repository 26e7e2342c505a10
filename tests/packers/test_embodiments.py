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
