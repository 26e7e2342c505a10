"""Bad input: a clear reason naming file and episode; good episodes land; nothing already in the lake changes."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
from lake.cli import main as cli

TOP, WRIST = "observation.images.top", "observation.images.wrist"


@pytest.fixture(scope="module")
def clean_v21(tmp_path_factory):
    return lake.write_pusht_dataset(tmp_path_factory.mktemp("q") / "ten", episodes=10, version="v2.1",
                                    min_len=12, max_len=24, seed=11)


@pytest.fixture
def base_lake(tmp_path, pusht_v3, ray_session):
    """A lake that already holds good data, to check nothing in it changes."""
    lk = lake.open(tmp_path / "lake")
    lk.ingest(pusht_v3, progress=False)
    return lk


def _snapshot(lk):
    lk.refresh()
    eps = lk.episodes().sort_by("episode_id")
    return eps, {e: lk.frames(e) for e in eps["episode_id"].to_pylist()[:2]}


def _data(root, i):
    return os.path.join(root, f"data/chunk-000/episode_{i:06d}.parquet")


def _video(root, cam, i):
    return os.path.join(root, f"videos/chunk-000/{cam}/episode_{i:06d}.mp4")


def _rewrite(path, fn):
    t = pq.read_table(path)
    pq.write_table(fn(t), path)


def _set_state(t, frame, value, column="observation.state"):
    vals = np.array(t[column].to_pylist(), dtype=np.float32)
    vals[frame, 0] = value
    return t.set_column(t.column_names.index(column), column, pa.array(list(vals), t[column].type))


def _truncate_video(path, keep):
    """Remux only the first `keep` packets: a valid mp4 that is shorter than its episode."""
    tmp = path + ".tmp.mp4"
    with av.open(path) as src, av.open(tmp, "w") as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for i, pkt in enumerate(src.demux(src.streams.video[0])):
            if pkt.size == 0 or i >= keep:
                continue
            pkt.stream = s
            dst.mux(pkt)
    os.replace(tmp, path)


def test_each_kind_of_bad_episode_is_quarantined_and_good_ones_land(clean_v21, copy_source, base_lake, ray_session):
    src = copy_source(clean_v21)
    _rewrite(_data(src, 0), lambda t: _set_state(t, 2, np.nan))
    _rewrite(_data(src, 6), lambda t: _set_state(t, 0, np.inf, "action"))
    with open(_data(src, 1), "r+b") as f:  # truncated parquet
        f.truncate(os.path.getsize(_data(src, 1)) // 2)
    os.remove(_video(src, TOP, 2))  # missing mp4
    _truncate_video(_video(src, TOP, 3), keep=5)  # video shorter than the episode
    with open(_video(src, WRIST, 4), "wb") as f:  # corrupt mp4
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    def three_dims(t):  # shape differs from info.json ([2])
        col = pa.array([list(v) + [0.0] for v in t["observation.state"].to_pylist()], pa.list_(pa.float32()))
        return t.set_column(t.column_names.index("observation.state"), "observation.state", col)

    _rewrite(_data(src, 5), three_dims)
    before = _snapshot(base_lake)

    rep = base_lake.ingest(src, progress=False)
    reasons = {item: reason for _, item, reason in rep.quarantined}
    assert rep.episodes_added == 3 and len(rep.quarantined) == 7, rep.quarantined

    def reason_for(fragment):
        hits = [(i, r) for i, r in reasons.items() if fragment in i]
        assert len(hits) == 1, (fragment, reasons)
        return hits[0][1]

    assert "NaN/inf at frame 2" in reason_for("episode_000000.parquet episode 0")
    assert "NaN/inf at frame 0" in reason_for("episode_000006.parquet episode 6") and "action" in reason_for("episode 6")
    assert "unreadable parquet" in reason_for("episode_000001.parquet")
    assert "not found" in reason_for(f"{TOP}/episode_000002.mp4")
    assert "shorter than its episode" in reason_for(f"{TOP}/episode_000003.mp4")
    assert "unreadable video" in reason_for(f"{WRIST}/episode_000004.mp4")
    assert "3 values per frame, info.json says 2" in reason_for("episode_000005.parquet")
    # good episodes landed, exactly
    landed = base_lake.episodes(filter="source = 'src'")
    assert sorted(landed["source_episode_index"].to_pylist()) == [7, 8, 9]
    for row in landed.to_pylist():
        src_rows = pq.read_table(_data(src, row["source_episode_index"]))
        assert base_lake.frames(row["episode_id"])["action"].to_pylist() == src_rows["action"].to_pylist()
    # what was in the lake before is untouched
    eps, frames = before
    assert base_lake.episodes(filter="source = 'pusht_v3'").sort_by("episode_id").equals(eps)
    assert all(base_lake.frames(e).equals(t) for e, t in frames.items())
    # the quarantine table keeps them, with reasons
    q = base_lake.quarantine().to_pylist()
    assert {(r["item"], r["reason"]) for r in q} == set(reasons.items())
    # ingesting the same bad source again: nothing new, the same report
    again = base_lake.ingest(src, progress=False)
    assert again.version is None and sorted(again.quarantined) == sorted(rep.quarantined)


@pytest.mark.parametrize("damage, expect", [
    (lambda info: info.update(codebase_version="v9.9"), "unknown codebase_version 'v9.9'"),
    (lambda info: info.update(data_path="../../etc/{episode_index}.parquet"), "escapes the dataset folder"),
    (lambda info: info.update(video_path="/abs/{video_key}/{episode_index}.mp4"), "escapes the dataset folder"),
    (lambda info: info.pop("fps"), "missing 'fps'"),
], ids=["unknown-version", "dotdot-path", "absolute-path", "no-fps"])
def test_unusable_source_is_quarantined_as_a_whole(damage, expect, clean_v21, copy_source, base_lake, capsys):
    src = copy_source(clean_v21)
    info = json.load(open(src / "meta/info.json"))
    damage(info)
    json.dump(info, open(src / "meta/info.json", "w"))
    before = _snapshot(base_lake)
    rep = base_lake.ingest(src, progress=False)
    assert rep.episodes_added == 0 and len(rep.quarantined) == 1
    source, item, reason = rep.quarantined[0]
    assert source == "src" and item == "meta/info.json" and expect in reason
    assert base_lake.episodes().sort_by("episode_id").equals(before[0].sort_by("episode_id"))
    # the CLI exits non-zero with one line naming file and reason
    code = cli(["ingest", str(src), "--lake", base_lake.uri, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [f"quarantined: src: meta/info.json: {reason}"]


def test_empty_dataset_is_reported_not_ingested(clean_v21, copy_source, base_lake):
    src = copy_source(clean_v21)
    open(src / "meta/episodes.jsonl", "w").close()
    info = json.load(open(src / "meta/info.json"))
    info.update(total_episodes=0, total_frames=0)
    json.dump(info, open(src / "meta/info.json", "w"))
    rep = base_lake.ingest(src, progress=False)
    assert rep.episodes_added == 0 and [q[2] for q in rep.quarantined] == ["dataset has no episodes"]


def test_v3_corrupt_data_file_quarantines_only_its_episodes(pusht_v3, copy_source, tmp_path, ray_session):
    src = copy_source(pusht_v3)
    bad = src / "data/chunk-000/file-001.parquet"
    in_file = set(pq.read_table(bad)["episode_index"].to_pylist())
    bad.write_bytes(b"PAR1 this is not parquet PAR1")
    lk = lake.open(tmp_path / "lake")
    rep = lk.ingest(src, progress=False)
    items = sorted(item for _, item, _ in rep.quarantined)
    assert items == sorted(f"data/chunk-000/file-001.parquet episode {i}" for i in in_file)
    assert rep.episodes_added == 6 - len(in_file)
    assert set(lk.episodes()["source_episode_index"].to_pylist()).isdisjoint(in_file)
