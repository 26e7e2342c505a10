"""lk.decode_videos(): every frame decoded once into `decoded_frames`, bit for bit lk.video, versioned, incremental."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import lake
from lake.cli import main

TOP, WRIST = "observation.images.top", "observation.images.wrist"


@pytest.fixture
def lk(ingested, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(ingested.uri, dst)
    return lake.open(dst, create=False)


def _frames_of(lk, eid, cam) -> np.ndarray:
    t = lk.table("decoded_frames").to_table(filter=f"episode_id = '{eid}' AND camera = '{cam}'").sort_by("frame_index")
    h, w = t["height"][0].as_py(), t["width"][0].as_py()
    assert set(t["height"].to_pylist()) == {h} and set(t["width"].to_pylist()) == {w}
    return np.stack([np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in t["pixels"].to_pylist()])


def test_decoded_frames_are_the_videos_bit_for_bit_in_one_new_version(lk):
    before = lk.version
    rep = lk.decode_videos(progress=False)
    eps = lk.episodes(columns=["episode_id", "length", "cameras"]).to_pylist()
    assert rep.version == before + 1 == lk.version and lk.log()[0].message.startswith("decode 12 videos")
    assert (rep.videos, rep.frames) == (12, 2 * sum(e["length"] for e in eps))
    assert rep.bytes == sum(e["length"] * (96 * 96 + 64 * 64) * 3 for e in eps)
    for e in eps:
        for cam in (TOP, WRIST):
            got = _frames_of(lk, e["episode_id"], cam)
            np.testing.assert_array_equal(got, lk.video(e["episode_id"], cam), err_msg=f"{e['episode_id']} {cam}")
    assert "decoded_frames" not in lk.checkout(before)._entry.tables  # time travel: not there before
    assert lk.decode_videos(progress=False).version is None  # nothing new


def test_cameras_are_decoded_incrementally_and_new_episodes_only(lk):
    rep = lk.decode_videos(TOP, progress=False)
    assert rep.videos == 6 and {c for c in lk.table("decoded_frames").to_table(columns=["camera"])["camera"].to_pylist()} == {TOP}
    rep = lk.decode_videos(progress=False)
    assert rep.videos == 6 and not rep.rebuilt  # just the wrist camera
    rng = np.random.default_rng(0)
    new = lake.NewEpisode(frames={"observation.state": rng.normal(size=(9, 2)).astype(np.float32),
                                  "action": rng.normal(size=(9, 2)).astype(np.float32)},
                          images={TOP: rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)})
    lk.append_episodes([new], source="rl", fps=10)
    eid = lk.episodes(filter="source = 'rl'")["episode_id"][0].as_py()
    rep = lk.decode_videos(progress=False)
    assert (rep.videos, rep.frames) == (1, 9)
    np.testing.assert_array_equal(_frames_of(lk, eid, TOP), lk.video(eid, TOP))
    rows = lk.table("decoded_frames").count_rows()
    rep = lk.decode_videos(progress=False, rebuild=True)
    assert rep.rebuilt and rep.videos == 13 and lk.table("decoded_frames").count_rows() == rows
    lk.compact(min_fragments=2)  # same rows after compaction
    np.testing.assert_array_equal(_frames_of(lk, eid, TOP), lk.video(eid, TOP))


def test_unknown_camera_is_a_key_error_and_nothing_is_committed(lk):
    before = lk.version
    with pytest.raises(KeyError, match="observation.images.side"):
        lk.decode_videos(["observation.images.side"], progress=False)
    assert lake.open(lk.uri, create=False).version == before


def test_cli_decode(lk, capsys):
    assert main(["decode", "--camera", WRIST, "--lake", lk.uri, "-q"]) == 0
    assert "6 videos" in capsys.readouterr().out
    assert main(["decode", "--lake", lk.uri, "-q"]) == 0
    assert "6 videos" in capsys.readouterr().out  # the top camera now
    assert main(["decode", "--lake", lk.uri, "-q"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_long_videos_are_decoded_in_chunks_equal_to_the_whole(ingested, monkeypatch):
    from lake import _decoded

    eid = ingested.episodes(columns=["episode_id"])["episode_id"][0].as_py()
    reader = ingested.video_reader(eid, TOP)
    whole = ingested.video(eid, TOP)
    monkeypatch.setattr(_decoded, "CHUNK_BYTES", 5 * 96 * 96 * 3)  # 5 frames a chunk
    chunks = list(_decoded._chunks(reader))
    assert [first for first, _ in chunks] == list(range(0, len(whole), 5)) and len(chunks) > 2
    assert all(v.flags.c_contiguous for _, v in chunks)
    np.testing.assert_array_equal(np.concatenate([v for _, v in chunks]), whole)


def test_a_video_that_does_not_decode_is_reported_and_the_others_land(lk, monkeypatch, capsys):
    import dataclasses

    from lake import _append

    real = _append.encode_segment

    def truncated(frames, fps, item, crf=23):  # the lake stores a video cut short (its index still says 9 frames)
        seg, decoded = real(frames, fps, item, crf)
        return dataclasses.replace(seg, data=seg.data[: len(seg.data) // 3]), decoded

    rng = np.random.default_rng(1)
    monkeypatch.setattr(_append, "encode_segment", truncated)
    lk.append_episodes([lake.NewEpisode(frames={"observation.state": rng.normal(size=(9, 2)).astype(np.float32)},
                                        images={TOP: rng.integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)})],
                       source="broken", fps=10)
    monkeypatch.undo()
    bad = lk.episodes(filter="source = 'broken'")["episode_id"][0].as_py()
    before = lk.version
    rep = lk.decode_videos(TOP, progress=False)
    assert rep.version == before + 1 and rep.videos == 6  # PushT's top camera landed
    assert [(e, c) for e, c, _ in rep.failed] == [(bad, TOP)] and f"episode {bad} camera {TOP}: corrupt video data" in rep.failed[0][2], rep.failed
    assert "1 did not decode" in lk.log()[0].message
    from lake._decoded import decoded_pairs

    assert (bad, TOP) not in decoded_pairs(lk) and len(decoded_pairs(lk)) == 6
    assert main(["decode", "--camera", TOP, "--lake", lk.uri, "-q"]) == 1  # tried again, and reported again
    err = capsys.readouterr().err
    assert f"episode {bad} camera {TOP}: did not decode" in err
    # the map-style dataset falls back to the video for it, and says which one fails
    from loaders import LeRobotStyleDataset

    with pytest.raises(lake.EpisodeError, match=f"episode {bad} camera {TOP}"):
        LeRobotStyleDataset(lk, episodes=[bad])[-1]  # the last frame: its packets were cut off
