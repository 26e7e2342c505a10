"""Stats equal numpy over the lake's own frames; per split; kept current on append."""

from __future__ import annotations

import numpy as np
import pytest

import lake


def _frames(lk, split=None, column="observation.state"):
    ids = lk.episodes(split=split)["episode_id"].to_pylist()
    return np.concatenate([np.asarray(lk.frames(e, [column])[column].to_pylist(), np.float64) for e in ids])


@pytest.mark.parametrize("column", ["observation.state", "action"])
def test_global_stats_equal_numpy_over_all_frames(ingested, column):
    x = _frames(ingested, column=column)
    s = ingested.stats()[column]
    assert int(s["count"][0]) == len(x)
    np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-9)
    np.testing.assert_array_equal(s["min"], x.min(0))
    np.testing.assert_array_equal(s["max"], x.max(0))
    # quantiles are count-weighted means of per-episode quantiles (as LeRobot aggregates): close, not exact
    assert (s["min"] <= s["q01"]).all() and (s["q01"] <= s["q99"]).all() and (s["q99"] <= s["max"]).all()
    spread = x.max(0) - x.min(0)
    assert (np.abs(s["q01"] - np.quantile(x, 0.01, axis=0)) < 0.25 * spread).all()


def test_split_stats_cover_only_that_split(ingested):
    splits = set(ingested.episodes()["split"].to_pylist())
    for split in splits:
        x = _frames(ingested, split)
        s = ingested.stats(split=split)["observation.state"]
        assert int(s["count"][0]) == len(x)
        np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-9)


def test_image_stats_are_lerobot_shaped(ingested):
    st = ingested.stats()
    for cam in ("observation.images.top", "observation.images.wrist"):
        s = st[cam]
        assert s["mean"].shape == (3, 1, 1)
        assert (0 <= s["min"]).all() and (s["max"] <= 1).all() and (s["min"] <= s["mean"]).all()


def test_stats_stay_current_after_append(tmp_path, ray_session):
    a = lake.write_pusht_dataset(tmp_path / "a", episodes=2, version="v3.0", min_len=10, max_len=14, seed=21)
    b = lake.write_pusht_dataset(tmp_path / "b", episodes=3, version="v2.1", min_len=10, max_len=14, seed=22)
    lk = lake.open(tmp_path / "lake")
    lk.ingest(a, progress=False)
    n_a = lk.stats()["action"]["count"][0]
    lk.ingest(b, progress=False)
    x = _frames(lk, column="action")
    s = lk.stats()["action"]
    assert s["count"][0] == len(x) > n_a
    np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-9)
    old = lk.checkout(1).stats()["action"]  # time travel: the stats of version 1
    assert old["count"][0] == n_a
