"""Session fixtures: one in-process Ray, small genuine LeRobot datasets written once from PushT."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("LANCE_LOG", "error")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from lake._ray import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


def _write(tmp_path_factory, name, **kw):
    import lake

    return lake.write_pusht_dataset(tmp_path_factory.mktemp("src") / name, **kw)


@pytest.fixture(scope="session")
def pusht_v3(tmp_path_factory):
    """v3.0: 6 episodes, 3 per file, h264 top camera + AV1 wrist camera."""
    return _write(tmp_path_factory, "pusht_v3", episodes=6, version="v3.0", min_len=12, max_len=30,
                  episodes_per_file=3, seed=0)


@pytest.fixture(scope="session")
def pusht_v21(tmp_path_factory):
    """v2.1, same seed and lengths as pusht_v3: the same episodes in the older layout."""
    return _write(tmp_path_factory, "pusht_v21", episodes=6, version="v2.1", min_len=12, max_len=30, seed=0)


@pytest.fixture(scope="session")
def ingested(tmp_path_factory, pusht_v3, ray_session):
    """A lake holding pusht_v3 (read-only for tests: copy it before writing)."""
    import lake

    lk = lake.open(tmp_path_factory.mktemp("lakes") / "v3")
    rep = lk.ingest(pusht_v3, progress=False)
    assert rep.episodes_added == 6 and not rep.quarantined, rep
    return lk


@pytest.fixture
def copy_source(tmp_path):
    """Copy a source folder into this test's tmp dir (to corrupt it)."""

    def copy(src, name="src"):
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return copy


# --- mixtures (tests/packers/test_mixture.py, tests/loaders/test_stream_mixture.py) ---------------------------------

@pytest.fixture(scope="session")
def two_sources(tmp_path_factory, ingested):
    """A lake holding pusht_v3 (source "pusht_v3", 6 episodes) and another PushT run (source "other", 4
    episodes, seed 1, all in "train") (read-only for tests: copy it before writing)."""
    import lake

    dst = tmp_path_factory.mktemp("lakes") / "two"
    shutil.copytree(ingested.uri, dst)
    lk = lake.open(dst)
    other = _write(tmp_path_factory, "other", episodes=4, version="v3.0", min_len=12, max_len=30,
                   episodes_per_file=2, seed=1)
    rep = lk.ingest(other, source_name="other", split_ratios={"train": 1.0}, progress=False)
    assert rep.episodes_added == 4 and not rep.quarantined, rep
    return lk


def rename_cameras(root, mapping: dict) -> None:
    """Rename the cameras of LeRobot v3.0 folder ``root`` ({old key: new key}): info.json, video folders,
    meta/episodes columns, stats.json."""
    import json

    import pyarrow.parquet as pq

    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"] = {mapping.get(k, k): v for k, v in info["features"].items()}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    for old, new in mapping.items():
        (root / "videos" / old).rename(root / "videos" / new)
    for f in sorted(root.glob("meta/episodes/**/*.parquet")):
        t = pq.read_table(f)
        names = [next((n.replace(f"/{o}/", f"/{w}/") for o, w in mapping.items() if f"/{o}/" in n), n)
                 for n in t.column_names]
        pq.write_table(t.rename_columns(names), f)
    stats = root / "meta" / "stats.json"
    if stats.exists():
        stats.write_text(json.dumps({mapping.get(k, k): v for k, v in json.loads(stats.read_text()).items()}))


def make_groot_source(root, like, cameras: dict | None = None):
    """A GR00T-style copy of LeRobot v3.0 folder ``like`` under ``root``: robot "gr1_sim", 4-d state (x, y and
    their halves), 3-d action (x, y, gripper), and a meta/modality.json naming the slices. ``cameras``
    ({key: new key}) renames the cameras; modality.json's ``video`` then maps the old views (top, wrist) to them."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(like, root)
    for f in sorted(root.glob("data/**/*.parquet")):
        t = pq.read_table(f).replace_schema_metadata(None)
        s = t["observation.state"].combine_chunks().flatten().to_numpy().reshape(-1, 2)
        a = t["action"].combine_chunks().flatten().to_numpy().reshape(-1, 2)
        s4 = np.concatenate([s, s / 2], axis=1).astype(np.float32)
        a3 = np.concatenate([a, (np.arange(len(a)) % 2)[:, None]], axis=1).astype(np.float32)
        t = t.set_column(t.schema.get_field_index("observation.state"), "observation.state",
                         pa.FixedSizeListArray.from_arrays(pa.array(s4.ravel()), 4))
        t = t.set_column(t.schema.get_field_index("action"), "action",
                         pa.FixedSizeListArray.from_arrays(pa.array(a3.ravel()), 3))
        pq.write_table(t, f)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["robot_type"] = "gr1_sim"
    info["features"]["observation.state"].update(shape=[4], names=["x", "y", "hx", "hy"])
    info["features"]["action"].update(shape=[3], names=["x", "y", "gripper"])
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    cameras = cameras or {}
    if cameras:
        rename_cameras(root, cameras)
    (root / "meta" / "modality.json").write_text(json.dumps({
        "state": {"xy": {"start": 0, "end": 2}, "xy_half": {"start": 2, "end": 4}},
        "action": {"xy": {"start": 0, "end": 2}, "gripper": {"start": 2, "end": 3}},
        "video": {"top": {"original_key": cameras.get("observation.images.top", "observation.images.top")},
                  "wrist": {"original_key": cameras.get("observation.images.wrist", "observation.images.wrist")}},
        "annotation": {"human.task_description": {"original_key": "task_index"}}}))
    return root


@pytest.fixture(scope="session")
def two_robots(tmp_path_factory, ingested):
    """A lake holding pusht_v3 (robot "pusht", 2-d state/action, no modality.json) and "groot": a GR00T-style
    source (robot "gr1_sim", 4-d state, 3-d action, modality.json), 3 episodes, all in "train" (copy before
    writing)."""
    return _with_groot(tmp_path_factory, ingested, "robots", "groot_base", "groot", max_len=30, seed=2)


def _with_groot(tmp_path_factory, ingested, lake_name, base_name, src_name, *, max_len, seed, cameras=None):
    """A copy of the ingested pusht_v3 lake plus 3 episodes of a GR00T-style source named "groot"."""
    import lake

    dst = tmp_path_factory.mktemp("lakes") / lake_name
    shutil.copytree(ingested.uri, dst)
    lk = lake.open(dst)
    base = _write(tmp_path_factory, base_name, episodes=3, version="v3.0", min_len=12, max_len=max_len,
                  episodes_per_file=2, seed=seed)
    src = make_groot_source(tmp_path_factory.mktemp("src") / src_name, base, cameras=cameras)
    rep = lk.ingest(src, source_name="groot", split_ratios={"train": 1.0}, progress=False)
    assert rep.episodes_added == 3 and not rep.quarantined, rep
    return lk


GROOT_CAMERAS = {"observation.images.top": "observation.images.cam_high",
                 "observation.images.wrist": "observation.images.cam_wrist"}


@pytest.fixture(scope="session")
def groot_cameras(tmp_path_factory, ingested):
    """pusht_v3 (cameras observation.images.top / wrist) + "groot": a GR00T-style source (robot "gr1_sim") whose
    cameras are cam_high / cam_wrist, its modality.json naming them views "top" and "wrist" (copy before
    writing)."""
    return _with_groot(tmp_path_factory, ingested, "groot_cameras", "groot_cams", "groot_cams", max_len=20, seed=4,
                       cameras=GROOT_CAMERAS)
