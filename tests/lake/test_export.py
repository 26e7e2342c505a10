"""Export: lake -> LeRobot folder -> lake is value-exact; videos are stream copies of the lake's packets."""

from __future__ import annotations

import json

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
from lake._lerobot import POSITIONAL

CAMS = ("observation.images.top", "observation.images.wrist")


@pytest.fixture(scope="module")
def lake_v21(tmp_path_factory, pusht_v21, ray_session):
    lk = lake.open(tmp_path_factory.mktemp("lakes") / "v21")
    assert not lk.ingest(pusht_v21, progress=False).quarantined
    return lk


@pytest.fixture(scope="module", params=[("v3", "lerobot-v3.0"), ("v21", "lerobot-v2.1")], ids=["v3.0", "v2.1"])
def round_trip(request, tmp_path_factory, ingested, lake_v21):
    """(original lake, export folder, lake ingested from the export)."""
    src = ingested if request.param[0] == "v3" else lake_v21
    dest = tmp_path_factory.mktemp("export") / "ds"
    rep = src.export(dest, format=request.param[1])
    assert (rep.episodes, rep.frames) == (src.episodes().num_rows, int(sum(src.episodes()["length"].to_pylist())))
    back = lake.open(tmp_path_factory.mktemp("lakes") / "back")
    ing = back.ingest(dest, progress=False)
    assert not ing.quarantined, ing.quarantined
    return src, dest, back


def test_round_trip_keeps_episode_ids_tasks_and_splits(round_trip):
    src, _, back = round_trip
    cols = ["episode_id", "task", "tasks", "length", "split", "robot_type", "fps", "cameras"]
    a = sorted(src.episodes(columns=cols).to_pylist(), key=lambda r: r["episode_id"])
    b = sorted(back.episodes(columns=cols).to_pylist(), key=lambda r: r["episode_id"])
    assert a == b


def test_round_trip_frames_are_value_exact(round_trip):
    src, _, back = round_trip
    for eid in src.episodes()["episode_id"].to_pylist():
        fa, fb = src.frames(eid), back.frames(eid)
        keep = [c for c in fa.column_names if c not in POSITIONAL]
        assert fa.select(keep).equals(fb.select(keep)), eid


def test_round_trip_videos_decode_bit_exact(round_trip):
    src, _, back = round_trip
    for eid in src.episodes()["episode_id"].to_pylist():
        for cam in CAMS:
            assert np.array_equal(src.video(eid, cam), back.video(eid, cam)), (eid, cam)


def test_round_trip_stats_equal(round_trip):
    src, _, back = round_trip
    sa, sb = src.stats(), back.stats()
    assert sa.keys() == sb.keys()
    for f in sa:
        for k in ("mean", "std", "min", "max", "q01", "q99"):
            np.testing.assert_allclose(sa[f][k], sb[f][k], rtol=1e-12, atol=1e-12, err_msg=f"{f} {k}")


def test_videos_are_the_lakes_packets_unchanged(round_trip):
    """Stream copy: every packet of the lake's segments appears in the exported mp4s, bytes and keyframes."""
    src, dest, _ = round_trip
    info = json.loads((dest / "meta" / "info.json").read_text())
    for cam in CAMS:
        exported = []
        for path in sorted(dest.glob("videos/**/*.mp4")):
            if cam not in str(path):
                continue
            with av.open(str(path)) as c:
                exported += [(bytes(p), p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]
        stored = []
        eps = sorted(src.episodes(columns=["episode_id", "source", "source_episode_index"]).to_pylist(),
                     key=lambda r: (r["source"], r["source_episode_index"], r["episode_id"]))
        for ep in eps:
            reader = src.video_reader(ep["episode_id"], cam)
            reader.blob.seek(0)
            data, seg = reader.blob.read(), reader.segment
            stored += [(data[seg.offsets[i]:seg.offsets[i + 1]], bool(seg.key[i])) for i in range(len(seg.pts))]
        assert exported == stored, cam
        assert info["features"][cam]["info"]["video.codec"] in ("h264", "av1")


def test_export_layout_is_lerobots(round_trip):
    src, dest, _ = round_trip
    info = json.loads((dest / "meta" / "info.json").read_text())
    n_eps, n_frames = src.episodes().num_rows, int(sum(src.episodes()["length"].to_pylist()))
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (n_eps, n_frames, 3)
    t = pa.concat_tables([pq.read_table(f) for f in sorted(dest.glob("data/**/*.parquet"))])
    assert t["index"].to_pylist() == list(range(n_frames))
    assert sorted(set(t["episode_index"].to_pylist())) == list(range(n_eps))
    assert set(json.loads((dest / "meta" / "stats.json").read_text())) >= {"observation.state", "action", *CAMS}
    if info["codebase_version"] == "v3.0":
        eps = pq.read_table(next(dest.glob("meta/episodes/*/*.parquet"))).to_pylist()
        assert [e["dataset_to_index"] - e["dataset_from_index"] for e in eps] == [e["length"] for e in eps]
        assert pq.read_table(dest / "meta" / "tasks.parquet").num_rows == 3
    else:
        assert len((dest / "meta" / "episodes.jsonl").read_text().splitlines()) == n_eps
        assert len((dest / "meta" / "episodes_stats.jsonl").read_text().splitlines()) == n_eps


def test_export_of_a_filtered_split_holds_exactly_those_episodes(ingested, tmp_path):
    want = ingested.episodes(split="train", filter="length > 15")
    rep = ingested.export(tmp_path / "sub", split="train", filter="length > 15", format="lerobot-v2.1")
    assert rep.episodes == want.num_rows and rep.frames == sum(want["length"].to_pylist())
    rows = [json.loads(line) for line in (tmp_path / "sub" / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert sorted(r["length"] for r in rows) == sorted(want["length"].to_pylist())


def test_export_refuses_bad_requests_with_a_reason(ingested, tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        ingested.export(tmp_path / "a", format="lerobot-v1")
    with pytest.raises(ValueError, match="nothing to export"):
        ingested.export(tmp_path / "b", filter="length > 100000")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        ingested.export(tmp_path / "c")


def test_export_of_an_older_version_by_tag(ingested, tmp_path):
    rep = ingested.export(tmp_path / "old", version=ingested.version)
    assert rep.version == ingested.version and rep.episodes == ingested.episodes().num_rows


def test_cli_export(ingested, tmp_path, capsys):
    from lake.cli import main

    assert main(["export", str(tmp_path / "cli"), "--lake", ingested.uri, "--format", "lerobot-v2.1"]) == 0
    assert "exported lake version" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "cli"), "--lake", ingested.uri]) == 1
    assert "not empty" in capsys.readouterr().err
