"""LeRobot-style stats: per episode, per embodiment and global values equal a plain numpy transcription of LeRobot
0.4.4's ``compute_stats`` formulas (its frame sample, downsampling, [0, 1] per-channel scaling, 5,000-bin histogram
quantiles, ``aggregate_stats``), exactly; older rows without them still give stats. (Checked against LeRobot
itself by benchmarks/lerobot_stats_check.py; this suite runs without LeRobot.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

import lake
from lake import _lerobot_stats, _stats

KEYS = ("q01", "q10", "q50", "q90", "q99")


# --- a plain transcription of LeRobot 0.4.4's formulas (one array, numpy only) -------------------------------

def _ref_quantile(values: np.ndarray, count: int, q: float) -> float:
    lo, hi = values.min(), values.max()
    edges = np.linspace(lo - 1e-10, hi + 1e-10, 5001)
    cum = np.cumsum(np.zeros(5000) + np.histogram(values, bins=edges)[0])
    target = q * count
    i = np.searchsorted(cum, target)
    if i == 0:
        return edges[0]
    if i >= len(cum):
        return edges[-1]
    return edges[i] + (target - cum[i - 1]) / (cum[i] - cum[i - 1]) * (edges[i + 1] - edges[i])


def _ref_vector(x: np.ndarray) -> dict:
    x = x.reshape(len(x), -1)
    mean = np.mean(x, axis=0)
    out = {"count": np.array([len(x)]), "mean": mean, "min": x.min(0), "max": x.max(0)}
    if len(x) < 2:
        return {**out, "std": np.std(x, axis=0), **{k: mean.copy() for k in KEYS}}
    out["std"] = np.sqrt(np.maximum(0, np.mean(x**2, axis=0) - mean**2))
    for k, q in zip(KEYS, (0.01, 0.1, 0.5, 0.9, 0.99)):
        out[k] = np.array([_ref_quantile(x[:, i], len(x), q) for i in range(x.shape[1])])
    return out


def _ref_image(frames: np.ndarray) -> dict:
    n = len(frames)
    num = n if n < 100 else max(100, min(int(n**0.75), 10_000))
    idx = np.round(np.linspace(0, n - 1, num)).astype(int)
    chw = [frames[i].transpose(2, 0, 1) for i in idx]
    h, w = chw[0].shape[1:]
    if max(h, w) >= 300:
        f = int(w / 150) if w > h else int(h / 150)
        chw = [c[:, ::f, ::f] for c in chw]
    px = np.stack(chw).transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)  # float: no uint8 wrap
    s = _ref_vector(px)
    return {k: (v if k == "count" else v / 255.0).reshape(-1, 1, 1) if k != "count" else np.array([len(idx)])
            for k, v in s.items()}


def _ref_aggregate(eps: list[dict]) -> dict:
    means = np.stack([s["mean"] for s in eps])
    var = np.stack([s["std"] ** 2 for s in eps])
    counts = np.stack([s["count"] for s in eps])
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, -1)
    mean = (means * counts).sum(0) / total
    out = {"mean": mean, "std": np.sqrt(((var + (means - mean) ** 2) * counts).sum(0) / total),
           "min": np.min(np.stack([s["min"] for s in eps]), 0), "max": np.max(np.stack([s["max"] for s in eps]), 0),
           "count": total}
    for k in KEYS:
        out[k] = (np.stack([s[k] for s in eps]) * counts).sum(0) / total
    return out


def _equal(got: dict, want: dict, what: str) -> None:
    assert set(want) <= set(got), (what, sorted(set(want) - set(got)))
    for k, v in want.items():
        np.testing.assert_array_equal(np.asarray(got[k], np.float64), np.asarray(v, np.float64), err_msg=f"{what} {k}")
        assert np.shape(got[k]) == np.shape(v), (what, k, np.shape(got[k]), np.shape(v))


# --- the functions -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 2, 7, 130])
def test_vector_stats_equal_lerobots_formulas_exactly_in_the_features_dtype(T):
    rng = np.random.default_rng(T)
    for x in (rng.normal(size=(T, 3)).astype(np.float32), np.arange(T, dtype=np.int64)[:, None] * 7,
              (rng.random((T, 1)) > 0.5), np.full((T, 2), 0.25, np.float32)):
        got = _lerobot_stats.vector_stats(x)
        _equal(got, _ref_vector(x), f"{x.dtype} T={T}")
        assert got["mean"].dtype == np.mean(x, axis=0).dtype  # float32 features stay float32, as LeRobot


@pytest.mark.parametrize("T,h,w", [(7, 24, 20), (130, 40, 30), (3, 310, 320), (1, 8, 8)])
def test_image_stats_sample_downsample_and_scale_as_lerobot(T, h, w):
    rng = np.random.default_rng(T * h)
    frames = rng.integers(0, 256, (T, h, w, 3), dtype=np.uint8)
    frames[..., 2] //= 4  # channels differ
    got = _lerobot_stats.image_stats(list(frames))
    _equal(got, _ref_image(frames), f"T={T} {h}x{w}")
    assert got["mean"].shape == (3, 1, 1) and got["count"].tolist() == [len(_lerobot_stats.sample_indices(T))]
    assert (got["std"] > 0).all()  # LeRobot 0.4.4's uint8 square wraps to std 0; ours is the true std


def test_aggregate_equals_lerobots_formula_and_keeps_float32_arithmetic():
    rng = np.random.default_rng(5)
    eps = [_lerobot_stats.vector_stats(rng.normal(size=(n, 4)).astype(np.float32) * (n + 1)) for n in (3, 40, 9, 1)]
    _equal(_lerobot_stats.aggregate(eps), _ref_aggregate(eps), "aggregate")
    # stored as float64 and cast back: the same bits (std is squared in float32, as LeRobot does)
    back = [_stats.from_lerobot_rows(_stats.to_lerobot_rows({"a": e}))["a"] for e in eps]
    _equal(_lerobot_stats.aggregate(back), _ref_aggregate(eps), "aggregate after a round trip through rows")


# --- the lake ------------------------------------------------------------------------------------------------------

def _episode(rng, T, width, camera="observation.images.top", size=(24, 32)):
    return lake.NewEpisode(
        frames={"observation.state": rng.normal(size=(T, width)).astype(np.float32),
                "action": rng.normal(size=(T, width)).astype(np.float32)},
        images={camera: rng.integers(0, 255, (T, *size, 3), dtype=np.uint8)}, task="reach")


@pytest.fixture(scope="module")
def robots(tmp_path_factory):
    """Two robots by append (no Ray): "arm2" (2-d, 5 episodes, one of 130 frames) and "arm3" (3-d, 3 episodes)."""
    lk = lake.open(tmp_path_factory.mktemp("lrstats") / "lake")
    rng = np.random.default_rng(0)
    lk.append_episodes([_episode(rng, T, 2) for T in (12, 5, 130, 1, 20)], source="a", fps=10, robot_type="arm2")
    lk.append_episodes([_episode(rng, T, 3) for T in (8, 16, 2)], source="b", fps=10, robot_type="arm3")
    return lake.open(lk.uri)


def _reference(lk, filter=None) -> dict:
    """Per episode: LeRobot's formulas over the lake's frames (float32 as stored) and decoded video."""
    out = {}
    for e in lk.episodes(filter=filter).to_pylist():
        f = lk.frames(e["episode_id"])
        st = {}
        for name in f.column_names:
            if name == "episode_id":
                continue
            col = f[name].combine_chunks()
            x = (col.flatten().to_numpy().reshape(len(col), -1) if hasattr(col, "flatten")
                 else col.to_numpy(zero_copy_only=False).reshape(len(col), 1))
            st[name] = _ref_vector(x)
        for cam in e["cameras"]:
            st[cam] = _ref_image(lk.video(e["episode_id"], cam))
        out[e["episode_id"]] = st
    return out


def test_per_episode_stats_equal_the_formulas_over_the_lakes_own_frames(robots):
    ref = _reference(robots)
    got = robots.stats(by="episode", method="lerobot")
    assert set(got) == set(ref)
    for eid, st in ref.items():
        assert set(got[eid]) == set(st)
        for f, s in st.items():
            _equal(got[eid][f], s, f"{eid} {f}")


def test_global_and_per_embodiment_stats_are_lerobots_aggregate(robots):
    ref = _reference(robots)
    robot = dict(zip(*[robots.episodes()[c].to_pylist() for c in ("episode_id", "robot_type")]))
    for r, st in robots.stats(by="embodiment", method="lerobot").items():
        eps = [ref[e] for e in ref if robot[e] == r]
        for f in ("observation.state", "action", "observation.images.top"):
            _equal(st[f], _ref_aggregate([e[f] for e in eps]), f"{r} {f}")
    one = robots.stats(filter="robot_type = 'arm3'", method="lerobot")
    _equal(one["action"], _ref_aggregate([ref[e]["action"] for e in ref if robot[e] == "arm3"]), "filter")
    # global: their 2-d and 3-d actions have no single set of stats: said, not guessed
    for method in ("lake", "lerobot"):
        with pytest.raises(ValueError, match=r"feature '[a-z.]+' has shapes \[\(2,\), \(3,\)\].*by='embodiment'"):
            robots.stats(method=method)


def test_default_stats_have_lerobots_keys_and_exact_moments(robots):
    st = robots.stats(filter="robot_type = 'arm2'")
    x = np.concatenate([np.asarray(robots.frames(e)["action"].to_pylist(), np.float64)
                        for e in robots.episodes(filter="robot_type = 'arm2'")["episode_id"].to_pylist()])
    s = st["action"]
    assert set(s) == {"count", "mean", "std", "min", "max", *KEYS}
    np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-9)
    assert (s["q01"] <= s["q10"]).all() and (s["q10"] <= s["q50"]).all() and (s["q50"] <= s["q90"]).all()
    assert st["observation.images.top"]["q50"].shape == (3, 1, 1)
    with pytest.raises(ValueError, match="unknown stats method"):
        robots.stats(method="mine")


def test_lerobot_style_meta_and_export_carry_lerobots_stats(robots, tmp_path):
    from loaders import LeRobotStyleDataset

    want = robots.stats(filter="robot_type = 'arm3'", method="lerobot")
    ds = LeRobotStyleDataset(robots, episodes=robots.episodes(filter="robot_type = 'arm3'")["episode_id"].to_pylist())
    for f in ("action", "observation.images.top"):
        _equal(ds.meta.stats[f], want[f], f"meta {f}")
    robots.export(tmp_path / "out", filter="robot_type = 'arm3'")
    exported = json.loads((tmp_path / "out" / "meta" / "stats.json").read_text())
    import pyarrow.parquet as pq  # appended episodes have no index columns: the export adds LeRobot's
    data = pq.read_table(next((tmp_path / "out" / "data").glob("**/*.parquet")))
    assert data["episode_index"].to_pylist() == [i for i, n in enumerate((8, 16, 2)) for _ in range(n)]
    assert data["index"].to_pylist() == list(range(26)) and set(data["task_index"].to_pylist()) == {0}
    for f in ("action", "observation.images.top"):
        _equal({k: np.asarray(v) for k, v in exported[f].items()}, want[f], f"stats.json {f}")


def test_lakes_from_before_lerobot_stats_still_give_stats(tmp_path, monkeypatch):
    """Episodes written before ``stats_lerobot`` (a table without the column, then null rows once it arrives)
    stand in with their ``stats`` row and their sketch's q10/q50/q90; newer rows in the same lake keep theirs."""
    lk = lake.open(tmp_path / "lake")
    rng = np.random.default_rng(3)
    from lake import _append, _schema

    with monkeypatch.context() as m:  # an older writer: an episodes table without the column
        old_schema = _schema.EPISODES.remove(_schema.EPISODES.get_field_index("stats_lerobot"))
        m.setattr(_append, "EPISODES", old_schema)
        lk.append_episodes([_episode(rng, 10, 2), _episode(rng, 6, 2)], source="old", fps=10)
    assert "stats_lerobot" not in lk.table("episodes").schema.names
    old = lk.stats(method="lerobot")
    lake_st = lk.stats()
    assert set(old["action"]) == {"count", "mean", "std", "min", "max", *KEYS}
    assert old["action"]["count"][0] == 16 and old["observation.images.top"]["count"][0] == 16  # every frame
    np.testing.assert_allclose(old["action"]["mean"], lake_st["action"]["mean"], rtol=1e-12)
    per_ep = lk.stats(by="episode")  # each episode's own sketch quantiles, weighted as LeRobot weights them
    n = np.array([per_ep[e]["action"]["count"][0] for e in per_ep], np.float64)
    for k in ("q10", "q50", "q90"):
        want = sum(c * per_ep[e]["action"][k] for c, e in zip(n, per_ep)) / n.sum()
        np.testing.assert_allclose(old["action"][k], want, rtol=1e-12)
    assert set(lk.stats(method="lerobot", by="episode")) == set(per_ep)
    lk.append_episodes([_episode(rng, 7, 2)], source="new", fps=10)  # the column arrives; old rows read null
    assert lk.episodes(columns=["stats_lerobot"])["stats_lerobot"].null_count == 2
    mixed = lk.stats(method="lerobot")
    assert mixed["action"]["count"][0] == 23
    per = lk.stats(method="lerobot", by="source")
    _equal(per["new"]["action"], _ref_aggregate([_ref_vector(np.asarray(
        lk.frames(e)["action"].to_pylist(), np.float32)) for e in lk.episodes(filter="source = 'new'")["episode_id"]
        .to_pylist()]), "new rows")


def test_cli_prints_lerobot_stats_per_embodiment_and_names_a_fleets_shape_clash(robots, capsys):
    from lake.cli import main

    assert main(["stats", "--method", "lerobot", "--by", "embodiment", "--lake", robots.uri]) == 0
    out = capsys.readouterr().out
    assert "embodiment=arm2" in out and "embodiment=arm3" in out and "q50" in out and "method=lerobot" in out
    assert main(["stats", "--lake", robots.uri]) != 0
    assert "by='embodiment'" in capsys.readouterr().err
