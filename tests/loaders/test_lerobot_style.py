"""LeRobotStyleDataset on real PushT data: LeRobot's delta_timestamps, clamping and *_is_pad at the edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loaders import LeRobotStyleDataset

TOP, WRIST = "observation.images.top", "observation.images.wrist"
FPS = 10
DELTAS = {TOP: [-0.1, 0.0], "observation.state": [-0.1, 0.0], "action": [i / FPS for i in range(16)]}


@pytest.fixture(scope="module")
def dataset(ingested):
    return LeRobotStyleDataset(ingested, delta_timestamps=DELTAS)


def _expected_indices(i: int, length: int, deltas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    q = i + np.round(np.array(deltas) * FPS).astype(int)
    return np.clip(q, 0, length - 1), (q < 0) | (q >= length)


def test_items_hold_frames_at_clamped_offsets_with_pads_at_the_episode_edges(ingested, dataset):
    lk = ingested
    eps = lk.episodes().to_pylist()
    assert len(dataset) == sum(e["length"] for e in eps)
    checked = 0
    for ep_no, eid in enumerate(dataset.episode_ids):
        frames = lk.frames(eid)
        length = frames.num_rows
        state = np.asarray(frames["observation.state"].to_pylist(), np.float32)
        action = np.asarray(frames["action"].to_pylist(), np.float32)
        top = lk.video(eid, TOP)
        start = int(dataset.starts[ep_no])
        for i in sorted({0, 1, length // 2, length - 16, length - 2, length - 1} & set(range(length))):
            item = dataset[start + i]
            for key, want in (("action", action), ("observation.state", state)):
                q, pad = _expected_indices(i, length, DELTAS[key])
                assert item[key].dtype == torch.float32 and item[key].shape == (len(q), 2)
                np.testing.assert_array_equal(item[key].numpy(), want[q], err_msg=f"{eid}[{i}] {key}")
                assert item[f"{key}_is_pad"].dtype == torch.bool
                assert item[f"{key}_is_pad"].tolist() == pad.tolist(), (eid, i, key)
            q, pad = _expected_indices(i, length, DELTAS[TOP])
            img = item[TOP]
            assert img.dtype == torch.float32 and img.shape == (2, 3, 96, 96) and 0.0 <= img.min() <= img.max() <= 1.0
            assert img.is_contiguous() and item[WRIST].is_contiguous()
            np.testing.assert_allclose(img.numpy(), top[q].transpose(0, 3, 1, 2) / 255.0, rtol=0, atol=1e-6)
            assert item[f"{TOP}_is_pad"].tolist() == pad.tolist()
            assert item[WRIST].shape == (3, 64, 64) and f"{WRIST}_is_pad" not in item  # no deltas: current frame
            row = frames.slice(i, 1).to_pylist()[0]
            for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
                assert item[key].shape == () and item[key].item() == pytest.approx(row[key]), key
            assert item["task"] == eps[[e["episode_id"] for e in eps].index(eid)]["task"] and item["episode_id"] == eid
            checked += 1
    assert checked >= 30
    # the first frame pads the past, the last frame pads the future
    first, last = dataset[0], dataset[int(dataset.starts[1]) - 1]
    assert first["observation.state_is_pad"].tolist() == [True, False] and not first["action_is_pad"].any()
    assert last["action_is_pad"].tolist() == [False] + [True] * 15


def test_dataset_index_is_the_lerobot_index_for_a_single_source_lake(dataset):
    for idx in (0, 5, len(dataset) // 2, len(dataset) - 1, -1):
        assert dataset[idx]["index"].item() == idx % len(dataset)


def test_random_access_decodes_each_episode_once_while_it_is_cached(ingested, monkeypatch):
    from lake._video import VideoReader

    calls, partial, opened = [], [], []
    real_all, real_frames, real_open = VideoReader.all, VideoReader.frames, type(ingested).video_readers

    def counting_all(self):
        calls.append((self.episode_id, self.camera))
        return real_all(self)

    def counting_frames(self, frames):
        partial.append((self.episode_id, self.camera))
        return real_frames(self, frames)

    def counting_open(self, episode_id, cameras=None):
        opened.append(episode_id)
        return real_open(self, episode_id, cameras)

    monkeypatch.setattr(VideoReader, "all", counting_all)
    monkeypatch.setattr(VideoReader, "frames", counting_frames)
    monkeypatch.setattr(type(ingested), "video_readers", counting_open)
    ds = LeRobotStyleDataset(ingested, delta_timestamps=DELTAS, cache_episodes=2)
    idx = list(range(int(ds.starts[2])))  # the first two episodes, in random order
    for i in np.random.default_rng(0).permutation(idx):
        ds[int(i)]
    # the first items decode just their frames; an episode asked for often is decoded whole, once
    assert sorted(calls) == sorted((e, c) for e in ds.episode_ids[:2] for c in (TOP, WRIST))
    assert {p for p in partial} <= {(e, c) for e in ds.episode_ids[:2] for c in (TOP, WRIST)} and partial
    assert sorted(opened) == sorted(ds.episode_ids[:2])  # both cameras with one lookup, once per cached episode


def test_items_from_partial_decoding_equal_items_from_whole_episodes(ingested):
    few = LeRobotStyleDataset(ingested, delta_timestamps=DELTAS, cache_episodes=1)
    whole = LeRobotStyleDataset(ingested, delta_timestamps=DELTAS, cache_episodes=100)
    for i in range(len(whole)):  # in order: every episode decoded whole once
        whole[i]
    rng = np.random.default_rng(1)
    for i in [0, len(few) - 1, *rng.integers(0, len(few), 30).tolist()]:
        few._cache.clear()  # each item decodes just its frames
        a, b = few[int(i)], whole[int(i)]
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k], b[k]), (i, k)
            else:
                assert a[k] == b[k], (i, k)


def test_splits_episodes_and_a_dataloader_batch(ingested):
    train = ingested.episodes(split="train")
    ds = LeRobotStyleDataset(ingested, split="train", delta_timestamps={"action": [0.0, 0.1]})
    assert len(ds) == sum(train["length"].to_pylist())
    one = ingested.episodes()["episode_id"][0].as_py()
    assert len(LeRobotStyleDataset(ingested, episodes=[one])) == ingested.frames(one).num_rows
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)))
    assert batch["action"].shape == (4, 2, 2) and batch["action_is_pad"].shape == (4, 2)
    assert batch[TOP].shape == (4, 3, 96, 96) and len(batch["task"]) == 4


def test_bad_delta_timestamps_and_keys_are_errors_like_lerobots(ingested):
    with pytest.raises(ValueError, match="multiples of 1/10"):
        LeRobotStyleDataset(ingested, delta_timestamps={"action": [0.0, 0.05]})
    with pytest.raises(KeyError, match="observation.nope"):
        LeRobotStyleDataset(ingested, delta_timestamps={"observation.nope": [0.0]})
    with pytest.raises(KeyError, match="ep_missing"):
        LeRobotStyleDataset(ingested, episodes=["ep_missing"])
    with pytest.raises(IndexError):
        LeRobotStyleDataset(ingested)[10_000]


# --- images from the lake's decoded frames (lk.decode_videos) --------------------------------------------------------

def _equal_items(a: dict, b: dict, where) -> None:
    assert a.keys() == b.keys(), where
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) and a[k].is_contiguous(), (where, k)
        else:
            assert a[k] == b[k], (where, k)


@pytest.fixture
def writable(ingested, tmp_path):
    import shutil

    import lake

    shutil.copytree(ingested.uri, tmp_path / "lake")
    return lake.open(tmp_path / "lake", create=False)


def _no_decoding(monkeypatch):
    from lake._video import VideoReader

    def fail(*a, **k):
        raise AssertionError("decoded video although the lake has decoded frames")

    monkeypatch.setattr(VideoReader, "frames", fail)
    monkeypatch.setattr(VideoReader, "all", fail)


def test_decoded_frames_give_the_same_items_and_batches_without_decoding(writable, monkeypatch):
    lk = writable
    lk.decode_videos(progress=False)
    video = LeRobotStyleDataset(lk, delta_timestamps=DELTAS, decoded=False, cache_episodes=100)
    rng = np.random.default_rng(3)
    batches = [[0, len(video) - 1, 0, 5], *[rng.integers(0, len(video), 16).tolist() for _ in range(4)]]
    want = [[video[i] for i in b] for b in batches]
    order = rng.permutation(len(video))[:8].tolist()
    want_batch = torch.utils.data.default_collate([video[i] for i in order])
    _no_decoding(monkeypatch)
    ds = LeRobotStyleDataset(lk, delta_timestamps=DELTAS, decoded=True)
    assert len(ds._rows) == 12
    for b, items in zip(batches, want):
        for n, (i, got) in enumerate(zip(b, ds.__getitems__(b))):  # a batch at once: one take per camera
            _equal_items(got, items[n], (i, "batch"))
        _equal_items(ds[b[-1]], items[-1], (b[-1], "item"))
    import pickle
    from multiprocessing.reduction import ForkingPickler

    # what a spawned DataLoader worker gets: the decoded-frames index, and the frame columns by shared-memory handle
    again = pickle.loads(ForkingPickler.dumps(ds))
    assert again._rows == ds._rows and not again._cache and not again._views
    (table,) = ds._shared
    t, u = ds._shared[table]["observation.state"], again._shared[table]["observation.state"]
    assert t.is_shared() and u.is_shared() and torch.equal(t, u)
    old = t[0, 0].item()
    t[0, 0] = old + 1  # the same memory, not a copy
    assert u[0, 0].item() == old + 1
    t[0, 0] = old
    _equal_items(again[order[0]], ds[order[0]], "unpickled")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, sampler=order)))
    assert batch.keys() == want_batch.keys()
    for k, v in want_batch.items():
        assert torch.equal(v, batch[k]) if isinstance(v, torch.Tensor) else v == batch[k], k


def test_cameras_not_decoded_come_from_video_and_decoded_true_requires_them(writable):
    lk = writable
    lk.decode_videos(TOP, progress=False)
    with pytest.raises(ValueError, match=r"no decoded frames for 6 .*observation.images.wrist.*decode_videos"):
        LeRobotStyleDataset(lk, decoded=True)
    ds, video = LeRobotStyleDataset(lk, delta_timestamps=DELTAS), LeRobotStyleDataset(lk, delta_timestamps=DELTAS, decoded=False)
    assert {c for _, c in ds._rows} == {TOP} and not video._rows
    b = np.random.default_rng(4).integers(0, len(ds), 12).tolist()
    for i, got, want in zip(b, ds.__getitems__(b), video.__getitems__(b)):
        _equal_items(got, want, i)


def test_a_camera_of_different_sizes_across_episodes_in_one_batch(writable, monkeypatch):
    import lake

    lk = writable
    rng = np.random.default_rng(0)
    lk.append_episodes([lake.NewEpisode(frames={"observation.state": rng.normal(size=(9, 2)).astype(np.float32),
                                                "action": rng.normal(size=(9, 2)).astype(np.float32)},
                                        images={TOP: rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)})],
                       source="rl", fps=10)
    lk.decode_videos(progress=False)
    deltas = {TOP: [-0.1, 0.0]}
    video = LeRobotStyleDataset(lk, delta_timestamps=deltas, decoded=False)
    b = [0, len(video) - 1, len(video) - 9, 40]  # PushT (96x96) and the appended episode (32x32)
    want = video.__getitems__(b)
    _no_decoding(monkeypatch)
    got = LeRobotStyleDataset(lk, delta_timestamps=deltas, decoded=True).__getitems__(b)
    assert [g[TOP].shape[-1] for g in got] == [96, 32, 32, 96]
    for i, g, w in zip(b, got, want):
        _equal_items(g, w, i)


def test_meta_and_image_transforms_answer_as_lerobots_do(ingested):
    train = LeRobotStyleDataset(ingested, split="train")
    eps = ingested.episodes(split="train")
    m = train.meta
    assert m.total_episodes == eps.num_rows == train.num_episodes
    assert m.total_frames == len(train) == train.num_frames == sum(eps["length"].to_pylist())
    assert m.fps == 10 and isinstance(m.fps, int) and m.robot_type == eps["robot_type"][0].as_py()
    assert m.camera_keys == m.video_keys == [TOP, WRIST] and m.image_keys == []
    (source,) = set(eps["source"].to_pylist())
    assert train.features == m.features == ingested.features()[source] and m.shapes["observation.state"] == (2,)
    want = ingested.stats(split="train", method="lerobot")  # the chosen episodes' stats, as LeRobot computes them
    assert m.stats.keys() == want.keys() and int(m.stats["action"]["count"][0]) == m.total_frames
    for f in want:
        for k in want[f]:
            np.testing.assert_array_equal(m.stats[f][k], want[f][k], err_msg=f"{f}/{k}")

    def flip(x):
        return torch.flip(x, dims=[-1])

    ds = LeRobotStyleDataset(ingested, delta_timestamps=DELTAS, image_transforms=flip)
    plain = LeRobotStyleDataset(ingested, delta_timestamps=DELTAS)
    for i in (0, 7, len(ds) - 1):
        a, b = ds[i], plain[i]
        assert torch.equal(a[TOP], flip(b[TOP])) and a[TOP].shape == (2, 3, 96, 96)  # stacked frames, as LeRobot
        assert torch.equal(a[WRIST], flip(b[WRIST])) and torch.equal(a["action"], b["action"])


def test_lerobot_episode_indices_and_meta_episodes_for_episode_aware_samplers(ingested):
    rows = ingested.episodes(columns=["episode_id", "source_episode_index"]).to_pylist()
    by_index = {r["source_episode_index"]: r["episode_id"] for r in rows}
    ds = LeRobotStyleDataset(ingested, episodes=[0, 2])  # LeRobot's episodes=: source episode indices
    assert ds.episode_ids == [by_index[0], by_index[2]]
    assert ds.episode_ids == LeRobotStyleDataset(ingested, episodes=[by_index[2], by_index[0]]).episode_ids
    with pytest.raises(KeyError, match=r"episode indices not in .*\[99\]"):
        LeRobotStyleDataset(ingested, episodes=[0, 99])
    with pytest.raises(TypeError, match="all lake ids"):
        LeRobotStyleDataset(ingested, episodes=[0, by_index[1]])
    # what LeRobot's EpisodeAwareSampler reads: meta.episodes["dataset_from/to_index"], dataset.episodes (None: all)
    full = LeRobotStyleDataset(ingested)
    m = full.meta.episodes
    assert full.episodes is None and full.streaming is False and m["episode_index"] == list(range(full.num_episodes))
    for k, (lo, hi) in enumerate(zip(m["dataset_from_index"], m["dataset_to_index"])):
        assert hi - lo == m["length"][k] == ingested.frames(full.episode_ids[k]).num_rows
        first, last = full[lo], full[hi - 1]
        assert first["episode_id"] == last["episode_id"] == m["episode_id"][k] == full.episode_ids[k]
        assert first["frame_index"].item() == 0 and last["frame_index"].item() == hi - lo - 1
        assert m["tasks"][k] == [first["task"]]
    assert m["dataset_to_index"][-1] == len(full)


def test_spawned_dataloader_workers_give_the_same_batches(writable):
    lk = writable
    lk.decode_videos(TOP, progress=False)  # top from decoded frames, wrist decoded from video, in the workers
    ds = LeRobotStyleDataset(lk, delta_timestamps=DELTAS)
    order = np.random.default_rng(5).permutation(len(ds))[:24].tolist()

    def batches(workers):
        return list(torch.utils.data.DataLoader(ds, batch_size=8, sampler=order, num_workers=workers,
                                                multiprocessing_context="spawn" if workers else None))

    for a, b in zip(batches(0), batches(2), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k], k
