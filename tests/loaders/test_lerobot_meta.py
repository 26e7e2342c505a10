"""LeRobotStyleDataset.meta answers what LeRobot 0.4's scripts read, consistently with ``lake export``."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from loaders import LeRobotStyleDataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ingested):
    dest = tmp_path_factory.mktemp("meta") / "ds"
    ingested.export(dest)
    return dest


def test_meta_episodes_behaves_like_lerobots_hf_dataset(ingested):
    ds = LeRobotStyleDataset(ingested)
    eps = ds.meta.episodes
    assert len(eps) == eps.num_rows == ds.num_episodes
    row = eps[1]
    assert row["episode_index"] == 1 and row["dataset_to_index"] - row["dataset_from_index"] == row["length"]
    assert [r["episode_index"] for r in eps] == eps["episode_index"] == list(range(ds.num_episodes))
    assert "dataset_from_index" in eps.column_names and eps.select([2, 0])["episode_index"] == [2, 0]
    assert list(eps.to_pandas()["length"]) == eps["length"]
    with pytest.raises(IndexError):
        eps[ds.num_episodes]


def test_meta_info_tasks_and_totals_match_the_export(ingested, exported):
    ds = LeRobotStyleDataset(ingested)
    info = json.loads((exported / "meta" / "info.json").read_text())
    for key in ("total_episodes", "total_frames", "total_tasks", "fps", "robot_type"):
        assert ds.meta.info[key] == info[key], key
    assert ds.meta.info["features"] == ds.meta.features
    tasks = pq.read_table(exported / "meta" / "tasks.parquet").to_pylist()
    assert list(ds.meta.tasks.index) == [t["__index_level_0__"] for t in tasks]
    assert list(ds.meta.tasks["task_index"]) == [t["task_index"] for t in tasks]
    assert ds.meta.total_tasks == len(tasks) == 3
    item = ds[len(ds) - 1]
    assert ds.meta.tasks.iloc[ds.meta.tasks.loc[item["task"], "task_index"]].name == item["task"]


def test_dataset_names_its_repo_and_root(ingested):
    ds = LeRobotStyleDataset(ingested)
    assert ds.repo_id == ds.meta.repo_id == "lake/pusht_v3" and ds.root == ds.meta.root == ingested.uri
