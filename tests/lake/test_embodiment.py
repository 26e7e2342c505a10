"""Embodiments: GR00T modality.json parsed and validated at ingest; a default layout for sources without one."""

from __future__ import annotations

import json

import pytest

import lake
from lake._embodiment import embodiment

FEATURES = {"observation.state": {"dtype": "float32", "shape": [6]}, "action": {"dtype": "float32", "shape": [7]},
            "observation.images.front": {"dtype": "video", "shape": [64, 64, 3]},
            "task_index": {"dtype": "int64", "shape": [1]}}


def test_modality_json_becomes_named_slices():
    emb = embodiment({"robot_type": "so100", "features": FEATURES}, {
        "state": {"arm": {"start": 0, "end": 5}, "gripper": {"start": 5, "end": 6}},
        "action": {"arm": {"start": 0, "end": 6}, "gripper": {"start": 6, "end": 7}},
        "video": {"front": {"original_key": "observation.images.front"}},
        "annotation": {"human.task_description": {"original_key": "task_index"}}})
    assert [(p.name, p.key, p.start, p.end) for p in emb.state] == [
        ("arm", "observation.state", 0, 5), ("gripper", "observation.state", 5, 6)]
    assert [(p.name, p.dim) for p in emb.action] == [("arm", 6), ("gripper", 1)]
    assert emb.video == (("front", "observation.images.front"),) and emb.state_dim == 6 and emb.action_dim == 7
    assert not emb.default_layout and emb.to_dict()["state"]["gripper"] == {"key": "observation.state", "start": 5,
                                                                           "end": 6}


def test_sources_without_modality_get_the_default_layout():
    emb = embodiment({"robot_type": "pusht", "features": FEATURES}, None)
    assert emb.default_layout and emb.robot_type == "pusht"
    assert [(p.name, p.start, p.end) for p in emb.state] == [("state", 0, 6)]
    assert [(p.name, p.start, p.end) for p in emb.action] == [("action", 0, 7)]
    assert emb.video == (("front", "observation.images.front"),)


@pytest.mark.parametrize("modality,reason", [
    ({"state": {"arm": {"start": 0, "end": 9}}}, "outside 'observation.state' of width 6"),
    ({"action": {"arm": {"start": 0}}}, "needs 'start' and 'end'"),
    ({"video": {"front": {"original_key": "observation.images.nope"}}}, "is not a video/image feature"),
    ({"stat": {}}, "unknown top-level entries"),
])
def test_bad_modality_is_refused_naming_the_entry(modality, reason):
    with pytest.raises(ValueError, match=reason):
        embodiment({"features": FEATURES}, modality)


def test_lake_records_each_sources_embodiment(two_robots):
    embs = two_robots.embodiments()
    assert embs["pusht_v3"].default_layout and (embs["pusht_v3"].state_dim, embs["pusht_v3"].action_dim) == (2, 2)
    g = embs["groot"]
    assert not g.default_layout and g.robot_type == "gr1_sim" and (g.state_dim, g.action_dim) == (4, 3)
    assert [p.name for p in g.state] == ["xy", "xy_half"] and [p.name for p in g.action] == ["xy", "gripper"]
    assert set(two_robots.episodes()["robot_type"].to_pylist()) == {"pusht", "gr1_sim"}


def test_a_bad_modality_json_quarantines_the_source(two_robots, tmp_path, copy_source, pusht_v3):
    src = copy_source(pusht_v3, "badmod")
    (src / "meta" / "modality.json").write_text(json.dumps({"state": {"arm": {"start": 0, "end": 3}}}))
    rep = lake.open(tmp_path / "lk").ingest(src, progress=False)
    assert rep.episodes_added == 0
    assert rep.quarantined == [("badmod", "meta/modality.json",
                                "state.arm: slice [0, 3) is outside 'observation.state' of width 2")]
