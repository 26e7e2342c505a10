"""The PushT sample writer produces genuine LeRobot v2.1 / v3.0 datasets."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lake._sample import TOP, WRIST, write_pusht_dataset

FPS = 10
EPISODES = 5
PER_FILE = 2  # v3: data/top files hold 2 episodes, wrist files 3
SMALL = dict(episodes=EPISODES, min_len=8, max_len=24, fps=FPS, seed=7, episodes_per_file=PER_FILE)
HW = {TOP: (96, 96), WRIST: (64, 64)}
SWAPPED = {TOP: "av1", WRIST: "h264"}
NUMERIC = {  # column -> (arrow value type, vector length or None for scalar)
    "observation.state": (pa.float32(), 2), "action": (pa.float32(), 2), "next.reward": (pa.float32(), None),
    "next.done": (pa.bool_(), None), "next.success": (pa.bool_(), None), "timestamp": (pa.float32(), None),
    "frame_index": (pa.int64(), None), "episode_index": (pa.int64(), None), "index": (pa.int64(), None),
    "task_index": (pa.int64(), None),
}


@pytest.fixture(scope="module", params=[("v3.0", None), ("v3.0", SWAPPED), ("v2.1", None), ("v2.1", SWAPPED)],
                ids=["v3-top264-wristav1", "v3-topav1-wrist264", "v21-top264-wristav1", "v21-topav1-wrist264"])
def ds(request, tmp_path_factory):
    version, codecs = request.param
    root = write_pusht_dataset(tmp_path_factory.mktemp("ds") / "pusht", version=version, codecs=codecs, **SMALL)
    return root, version, {TOP: "h264", WRIST: "av1", **(codecs or {})}


def _info(root: Path) -> dict:
    return json.loads((root / "meta/info.json").read_text())


def _episodes(root: Path, version: str) -> list[dict]:
    if version == "v2.1":
        return [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
    return pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()


def _tasks(root: Path, version: str) -> dict[int, str]:
    if version == "v2.1":
        rows = [json.loads(line) for line in (root / "meta/tasks.jsonl").read_text().splitlines()]
        return {r["task_index"]: r["task"] for r in rows}
    t = pq.read_table(root / "meta/tasks.parquet").to_pydict()  # pandas index -> __index_level_0__
    return dict(zip(t["task_index"], t["__index_level_0__"]))


def _data(root: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((root / "data").glob("*/*.parquet"))])


@lru_cache(maxsize=None)
def _decode(path: str) -> tuple[str, list[float], list[tuple[int, ...]]]:
    """(codec, frame times in s, frame shapes) of an mp4, decoded with PyAV."""
    with av.open(path) as c:
        codec = c.streams.video[0].codec_context.codec.canonical_name
        frames = [(float(f.time), f.to_ndarray(format="rgb24").shape) for f in c.decode(video=0)]
    return codec, [t for t, _ in frames], [s for _, s in frames]


def test_layout(ds):
    root, version, _ = ds
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    if version == "v2.1":
        expected = {"meta/info.json", "meta/episodes.jsonl", "meta/tasks.jsonl", "meta/episodes_stats.jsonl"}
        expected |= {f"data/chunk-000/episode_{e:06d}.parquet" for e in range(EPISODES)}
        expected |= {f"videos/chunk-000/{k}/episode_{e:06d}.mp4" for k in HW for e in range(EPISODES)}
    else:
        expected = {"meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                    "meta/episodes/chunk-000/file-000.parquet"}
        n_data = -(-EPISODES // PER_FILE)
        n_wrist = -(-EPISODES // (PER_FILE + 1))
        expected |= {f"data/chunk-000/file-{f:03d}.parquet" for f in range(n_data)}
        expected |= {f"videos/{TOP}/chunk-000/file-{f:03d}.mp4" for f in range(n_data)}
        expected |= {f"videos/{WRIST}/chunk-000/file-{f:03d}.mp4" for f in range(n_wrist)}
    assert files == expected


def test_info_matches_contents(ds):
    root, version, codecs = ds
    info, eps, data = _info(root), _episodes(root, version), _data(root)
    assert info["codebase_version"] == version and info["fps"] == FPS and info["robot_type"] == "pusht"
    assert info["total_episodes"] == len(eps) == EPISODES
    assert info["total_frames"] == sum(e["length"] for e in eps) == data.num_rows
    assert info["total_tasks"] == len(_tasks(root, version))
    assert info["splits"] == {"train": f"0:{EPISODES}"} and info["chunks_size"] == 1000
    if version == "v2.1":
        assert info["total_videos"] == 2 * EPISODES and info["total_chunks"] == 1
        assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        assert info["video_path"] == "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    else:
        assert "total_videos" not in info and "total_chunks" not in info
        assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        assert info["data_files_size_in_mb"] > 0 and info["video_files_size_in_mb"] > 0
    feats = info["features"]
    assert set(feats) == set(NUMERIC) | set(HW)
    for key, (h, w) in HW.items():
        ft = feats[key]
        assert ft["dtype"] == "video" and ft["shape"] == [h, w, 3]
        assert ft["info"]["video.codec"] == codecs[key] and ft["info"]["video.pix_fmt"] == "yuv420p"
        assert (ft["info"]["video.height"], ft["info"]["video.width"]) == (h, w) and ft["info"]["video.fps"] == FPS
    for key, (_, n) in NUMERIC.items():
        assert feats[key]["shape"] == [n or 1]


def test_data_parquet(ds):
    root, version, _ = ds
    eps, tasks = _episodes(root, version), _tasks(root, version)
    files = sorted((root / "data").glob("*/*.parquet"))
    for path in files:
        schema = pq.read_schema(path)
        assert schema.names == list(NUMERIC)  # LeRobot order: user features, then the default ones
        assert b"huggingface" in schema.metadata
        for key, (typ, n) in NUMERIC.items():
            t = schema.field(key).type
            if n is None:
                assert t == typ, key
            else:  # LeRobot's Sequence(length=n) is fixed_size_list; hub files converted by pandas hold list
                assert (pa.types.is_fixed_size_list(t) and t.list_size == n) or pa.types.is_list(t), key
                assert t.value_type == typ, key
    data = _data(root).to_pydict()
    n = len(data["index"])
    assert data["index"] == list(range(n))  # global and contiguous
    ep_col = np.array(data["episode_index"])
    assert (np.diff(ep_col) >= 0).all()
    start = 0
    for e in eps:
        i, length = e["episode_index"], e["length"]
        assert 8 <= length <= 24
        sl = slice(start, start + length)
        assert (ep_col[sl] == i).all()
        assert data["frame_index"][sl] == list(range(length))
        ts = np.array(data["timestamp"][sl], dtype=np.float32)
        assert np.array_equal(ts, (np.arange(length) / FPS).astype(np.float32))
        assert data["next.done"][sl] == [False] * (length - 1) + [True]
        assert {tasks[t] for t in data["task_index"][sl]} == set(e["tasks"])
        state = np.array(data["observation.state"][sl])
        assert state.shape == (length, 2) and ((state >= 0) & (state <= 512)).all()
        if version == "v3.0":
            assert (e["dataset_from_index"], e["dataset_to_index"]) == (start, start + length)
            rel = f"data/chunk-{e['data/chunk_index']:03d}/file-{e['data/file_index']:03d}.parquet"
            rows = pq.read_table(root / rel)
            assert i in rows.column("episode_index").to_pylist()
            assert np.allclose(e["stats/observation.state/min"], state.min(0))
            assert e["stats/observation.images.top/mean"][0][0][0] > 0.5  # mostly white arena, in [0,1]
        start += length
    assert start == n
    assert len({e["tasks"][0] for e in eps}) >= 2  # several tasks appear


def test_videos_decode_to_episode_lengths(ds):
    root, version, codecs = ds
    for e in _episodes(root, version):
        i, length = e["episode_index"], e["length"]
        for key, (h, w) in HW.items():
            if version == "v2.1":
                path, t0, t1 = root / f"videos/chunk-000/{key}/episode_{i:06d}.mp4", 0.0, length / FPS
            else:
                chunk, file = e[f"videos/{key}/chunk_index"], e[f"videos/{key}/file_index"]
                path = root / f"videos/{key}/chunk-{chunk:03d}/file-{file:03d}.mp4"
                t0, t1 = e[f"videos/{key}/from_timestamp"], e[f"videos/{key}/to_timestamp"]
                assert t1 - t0 == pytest.approx(length / FPS)
            codec, times, shapes = _decode(str(path))
            assert codec == codecs[key]
            assert all(abs(t * FPS - round(t * FPS)) < 1e-6 for t in times)  # pts on the 1/fps grid
            mine = [s for t, s in zip(times, shapes) if t0 - 1e-4 <= t < t1 - 1e-4]
            assert len(mine) == length and set(mine) == {(h, w, 3)}
    if version == "v3.0":  # data and the two cameras roll over to new files at different episodes
        eps = _episodes(root, version)
        assert [e["data/file_index"] for e in eps] == [e[f"videos/{TOP}/file_index"] for e in eps]
        assert [e[f"videos/{WRIST}/file_index"] for e in eps] != [e[f"videos/{TOP}/file_index"] for e in eps]


def test_stats(ds):
    root, version, _ = ds
    if version == "v2.1":
        rows = [json.loads(line) for line in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
        assert [r["episode_index"] for r in rows] == list(range(EPISODES))
        stats = rows[0]["stats"]
        assert stats["index"]["count"] == [_episodes(root, version)[0]["length"]]
    else:
        stats = json.loads((root / "meta/stats.json").read_text())
        assert stats["index"]["count"] == [_info(root)["total_frames"]]
        assert stats["index"]["min"] == [0] and stats["index"]["max"] == [_info(root)["total_frames"] - 1]
    assert set(stats) == set(NUMERIC) | set(HW)
    for key in HW:
        for s in ("min", "max", "mean", "std"):
            arr = np.array(stats[key][s])
            assert arr.shape == (3, 1, 1) and ((arr >= 0) & (arr <= 1)).all()
    assert len(stats["observation.state"]["mean"]) == 2


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_same_seed_same_bytes(tmp_path, version):
    kw = dict(SMALL, episodes=3, max_len=12)
    a = write_pusht_dataset(tmp_path / "a", version=version, **kw)
    b = write_pusht_dataset(tmp_path / "b", version=version, **kw)
    c = write_pusht_dataset(tmp_path / "c", version=version, **dict(kw, seed=8))
    parquets = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert parquets and parquets == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for rel in parquets:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert _data(a).equals(_data(b)) and not _data(a).equals(_data(c))


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_pusht_dataset(tmp_path / "x", version="v2.0")
    with pytest.raises(ValueError):
        write_pusht_dataset(tmp_path / "y", codecs={"observation.images.side": "h264"})
    with pytest.raises(ValueError):
        write_pusht_dataset(tmp_path / "z", codecs={TOP: "vp9"})
