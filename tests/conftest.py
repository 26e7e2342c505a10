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


# --- mixtures (tests/packers/test_mixture.py, tests/loaders/test_mixture.py) ---------------------------------

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
