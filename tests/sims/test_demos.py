"""Scripted-expert demos: a genuine LeRobot v3.0 dataset, ingested and packed with nothing lost."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sims_marks import needs_metaworld

import lake

pytestmark = needs_metaworld

CAM = "observation.images.corner2"


def test_expert_demos_round_trip_lerobot_v30_to_lake_to_pack(tmp_path, ray_session):
    from training.sims.demos import record_expert_demos, write_expert_demos

    out, uri = tmp_path / "demos", str(tmp_path / "lake")
    rep = record_expert_demos(uri, "metaworld/reach-v3", out=out, episodes=3, noise=0.05, seed=1, batch_size=3)
    assert (rep.rolled_out, rep.kept, rep.success_rate) == (3, 3, 1.0)

    info = json.loads((out / "meta" / "info.json").read_text())
    assert (info["codebase_version"], info["fps"], info["robot_type"]) == ("v3.0", 80, "sawyer")
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, rep.frames, 1)
    feats = info["features"]
    assert feats[CAM]["dtype"] == "video" and feats[CAM]["shape"] == [64, 64, 3]
    assert feats[CAM]["info"]["video.codec"] == "h264"
    assert feats["observation.state"]["shape"] == [39] and feats["action"]["shape"] == [4]
    metas = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [m["length"] for m in metas] == [m["dataset_to_index"] - m["dataset_from_index"] for m in metas]
    assert all(m["tasks"] == ["reach the goal position"] for m in metas)
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet")
    assert data.num_rows == rep.frames and data["next.success"].to_pylist().count(True) == 3  # each ends on success
    actions = np.asarray(data["action"].to_pylist(), np.float32)
    assert np.abs(actions).max() <= 1.0

    ing = rep.ingest
    assert (ing.episodes_added, ing.frames_added, ing.quarantined) == (3, rep.frames, [])
    lk = lake.open(uri)
    eps = sorted(lk.episodes().to_pylist(), key=lambda e: e["source_episode_index"])
    assert [e["length"] for e in eps] == [m["length"] for m in metas]
    assert {e["task"] for e in eps} == {"reach the goal position"}
    got = np.concatenate([np.asarray(lk.frames(e["episode_id"], columns=["action"])["action"].to_pylist(), np.float32)
                          for e in eps])
    np.testing.assert_array_equal(got, actions)  # exact, frame for frame
    assert lk.video(eps[0]["episode_id"], CAM).shape == (eps[0]["length"], 64, 64, 3)

    packed = lk.pack()
    assert packed.samples == rep.frames  # one sample per frame

    with pytest.raises(FileExistsError, match="not empty"):
        write_expert_demos(out, "metaworld/reach-v3", episodes=1)
