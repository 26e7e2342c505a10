"""Dataset surgery: each edit one zero-copy lake version; old versions, packs and diffs stay exact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lake


def _copy(src_lake, tmp_path, name="lake"):
    path = tmp_path / name
    shutil.copytree(src_lake.uri, path)
    return lake.open(path, create=False)


def _files(root) -> dict[str, int]:
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


@pytest.fixture(scope="module")
def packed(ingested, tmp_path_factory):
    """A copy of the ingested 6-episode lake, packed with the default recipe."""
    lk = _copy(ingested, tmp_path_factory.mktemp("edit_packed"))
    lk.pack(progress=False)
    return lk


def _streamed(lk, split) -> list[tuple[str, int]]:
    got = []
    for rank in range(2):
        for b in lk.stream(split, batch_packs=2, rank=rank, world_size=2):
            got += b.origin
    return got


def test_delete_three_episodes_diff_stream_checkout_and_restore(packed, tmp_path):
    lk = _copy(packed, tmp_path)
    before = lk.version
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    gone = ids[:3]
    old_frames = {e: lk.frames(e) for e in gone}
    old_video = lk.video(gone[0], "observation.images.top")
    files_before = _files(lk.uri)

    rep = lk.delete_episodes(ids=gone, message="drop 3 bad demos")
    assert rep.version == before + 1 == lk.version and rep.episodes == gone
    assert lk.log()[0].message == "drop 3 bad demos" and lk.log()[0].summary["episode_ids"] == gone
    assert "@" in lk.log()[0].summary["by"]
    d = lk.diff(before, lk.version)
    assert d.episodes_removed == gone and d.episodes_added == []
    assert sorted(lk.episodes()["episode_id"].to_pylist()) == ids[3:]
    assert lk.stats()["action"]["count"][0] == sum(lk.episodes()["length"].to_pylist())
    with pytest.raises(KeyError):
        lk.frames(gone[0])
    # zero-copy: no existing file changed (only new manifests / deletion vectors were written)
    files_after = _files(lk.uri)
    assert all(files_after[p] == n for p, n in files_before.items())
    new_data = [p for p in set(files_after) - set(files_before) if p.endswith(".lance") and "/data/" in p]
    assert not [p for p in new_data if p.startswith("videos.lance")]

    # the old packs still name the deleted episodes; the new version has no pack until it is packed again
    with pytest.raises(Exception):
        next(iter(lk.stream("train")))
    lk.pack(progress=False)
    from packers._job import packings

    assert packings(lk)[-1]["source_version"] == rep.version  # lineage names the edited version
    for split in sorted(set(lk.episodes()["split"].to_pylist())):
        want = sorted((e["episode_id"], f) for e in lk.episodes(split=split).to_pylist() for f in range(e["length"]))
        assert sorted(_streamed(lk, split)) == want
    old = lk.checkout(before)
    old_streamed = [e for s in set(old.episodes()["split"].to_pylist()) for e, _ in _streamed(old, s)]
    assert set(gone) <= set(old_streamed)  # packs of the old version are untouched

    for e in gone:  # checkout of the old version: bit-exact
        assert old.frames(e).equals(old_frames[e])
    assert np.array_equal(old.video(gone[0], "observation.images.top"), old_video)

    r = lk.restore(before)
    assert sorted(lk.episodes()["episode_id"].to_pylist()) == ids and r.version == lk.version
    for e in gone:
        assert lk.frames(e).equals(old_frames[e])
    assert lk.diff(rep.version, lk.version).episodes_added == gone
    assert lk.log()[0].summary["restored"] == before


def test_relabel_task_new_pack_uses_new_text_old_pack_unchanged(packed, tmp_path):
    from packers.text import get_tokenizer

    lk = _copy(packed, tmp_path)
    before = lk.version
    eid = sorted(lk.episodes()["episode_id"].to_pylist())[0]
    old_task = lk.episodes(filter=f"episode_id = '{eid}'")["task"][0].as_py()
    rep = lk.update_episodes(f"episode_id = '{eid}'", {"task": "Push the T gently."})
    assert rep.changes == {eid: {"task": [old_task, "Push the T gently."]}}
    row = lk.episodes(filter=f"episode_id = '{eid}'").to_pylist()[0]
    assert row["task"] == "Push the T gently." and row["tasks"] == ["Push the T gently."]
    assert "Push the T gently." in lk.table("tasks").to_table()["task"].to_pylist()
    d = lk.diff(before, lk.version)
    assert d.relabelled == {eid: [old_task, "Push the T gently."]} and not d.episodes_removed and not d.moved

    lk.pack(progress=False)
    from packers._job import resolve_recipe

    tok = get_tokenizer(resolve_recipe(lk, None).tokenizer)
    new_ids, old_ids = tok.encode("Push the T gently."), tok.encode(old_task)

    def texts(handle):
        out = {}
        split = handle.episodes(filter=f"episode_id = '{eid}'")["split"][0].as_py()
        for b in handle.stream(split, batch_packs=4):
            for e, _ in b.origin:
                if e == eid:
                    out[e] = b
        return out

    new_b = texts(lk)[eid]
    old_b = texts(lk.checkout(before))[eid]
    assert bytes(np.asarray(new_b.text_ids, np.int32).tobytes()).find(np.asarray(new_ids[1:], np.int32).tobytes()) >= 0
    assert bytes(np.asarray(old_b.text_ids, np.int32).tobytes()).find(np.asarray(old_ids[1:], np.int32).tobytes()) >= 0


def test_update_moves_splits_sets_annotations_and_rejects_bad_input(ingested, tmp_path):
    lk = _copy(ingested, tmp_path)
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    before = lk.version
    lk.update_episodes(None, {"split": "val", "success": True}, ids=ids[:2])
    eps = {r["episode_id"]: r for r in lk.episodes().to_pylist()}
    assert all(eps[e]["split"] == "val" and eps[e]["success"] is True for e in ids[:2])
    assert set(lk.diff(before, lk.version).moved) <= set(ids[:2])
    with pytest.raises(ValueError, match="no column 'sucess'"):
        lk.update_episodes("length > 0", {"sucess": True})
    with pytest.raises(ValueError, match="is bool"):
        lk.update_episodes("length > 0", {"success": "yes"})
    with pytest.raises(ValueError, match="cannot be set"):
        lk.update_episodes("length > 0", {"length": 3})
    v = lk.version
    with pytest.raises(lake.NoChange):
        lk.update_episodes("length > 100000", {"task": "x"})
    with pytest.raises(lake.NoChange):
        lk.update_episodes(None, {"split": "val"}, ids=ids[:2])  # already so
    with pytest.raises(lake.NoChange):
        lk.delete_episodes(filter="length > 100000")
    assert lk.version == v and lake.open(lk.uri).version == v  # never an empty version


def test_resplit_is_deterministic_and_says_when_a_split_empties(ingested, tmp_path):
    a, b = _copy(ingested, tmp_path, "a"), _copy(ingested, tmp_path, "b")
    ra = a.resplit({"train": 0.5, "val": 0.5}, seed=7)
    rb = b.resplit({"train": 0.5, "val": 0.5}, seed=7)
    sa = {r["episode_id"]: r["split"] for r in a.episodes().to_pylist()}
    assert sa == {r["episode_id"]: r["split"] for r in b.episodes().to_pylist()}
    assert sorted(sa.values()).count("train") == 3 and ra.changes == rb.changes
    dry = a.resplit({"train": "length > 0"}, dry_run=True)
    assert dry.version is None and any("'val'" in n and "no episodes" in n for n in dry.notes)
    assert a.version == ra.version
    rep = a.resplit({"train": "length > 0"})
    assert set(a.episodes()["split"].to_pylist()) == {"train"} and any("no episodes" in n for n in rep.notes)


def test_add_feature_from_frames_in_new_version_only_and_in_lerobot_style_dataset(ingested, tmp_path):
    from loaders import LeRobotStyleDataset

    lk = _copy(ingested, tmp_path)
    before = lk.version
    files_before = _files(lk.uri)

    def progress(frames):
        n = frames.num_rows
        return (np.asarray(frames["frame_index"]) / max(n - 1, 1)).astype(np.float32)

    lk.add_feature("progress", progress, level="frame")
    eid = sorted(lk.episodes()["episode_id"].to_pylist())[1]
    f = lk.frames(eid)
    n = f.num_rows
    assert np.allclose(f["progress"].to_numpy(), np.arange(n) / (n - 1))
    assert "progress" not in lk.checkout(before).frames(eid).column_names
    files_after = _files(lk.uri)
    assert all(files_after[p] == s for p, s in files_before.items())  # no existing column rewritten
    assert lk.diff(before, lk.version).features_added == [f"{lk.episodes()['frames_table'][0].as_py()}:progress"]

    ds = LeRobotStyleDataset(lk, episodes=[eid], decoded=False)
    assert float(ds[n - 1]["progress"]) == pytest.approx(1.0) and float(ds[0]["progress"]) == 0.0

    lk.add_feature("grade", {eid: 0.5}, level="episode")
    eps = {r["episode_id"]: r for r in lk.episodes().to_pylist()}
    assert eps[eid]["grade"] == 0.5 and sum(r["grade"] is None for r in eps.values()) == 5
    lk.update_episodes(None, {"grade": 0.9}, ids=[eid])
    assert lk.episodes(filter=f"episode_id = '{eid}'")["grade"][0].as_py() == 0.9
    with pytest.raises(ValueError, match="already has"):
        lk.add_feature("progress", progress)
    with pytest.raises(ValueError, match="no '.'"):
        lk.add_feature("observation.progress", progress)

    v = lk.version
    lk.remove_feature("progress")
    assert "progress" not in lk.frames(eid).column_names and "progress" in lk.checkout(v).frames(eid).column_names
    assert lk.diff(v, lk.version).features_removed[0].endswith(":progress")
    with pytest.raises(ValueError, match="indexes the frames"):
        lk.remove_feature("frame_index")


def test_delete_then_ingest_and_edits_interleave(ingested, pusht_v3, tmp_path):
    lk = _copy(ingested, tmp_path)
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    lk.delete_episodes(ids=ids[:2])
    rep = lk.ingest(pusht_v3, progress=False)  # the deleted ones come back from the source; nothing else moves
    assert rep.episodes_added == 2 and sorted(lk.episodes()["episode_id"].to_pylist()) == ids
    lk.delete_episodes(filter=f"episode_id = '{ids[3]}'")
    assert lk.episodes().num_rows == 5


def test_merge_brings_new_episodes_once_with_video_packets_as_stored(ingested, tmp_path):
    a, b = _copy(ingested, tmp_path, "a"), _copy(ingested, tmp_path, "b")
    ids = sorted(a.episodes()["episode_id"].to_pylist())
    a.delete_episodes(ids=ids[:2])
    dry = a.merge(b.uri, dry_run=True)
    assert dry.episodes == ids[:2] and a.episodes().num_rows == 4
    rep = a.merge(b)
    assert rep.episodes == ids[:2] and sorted(a.episodes()["episode_id"].to_pylist()) == ids
    for e in ids[:2]:
        assert a.frames(e).equals(b.frames(e))
        va, vb = a._video_meta(e, "observation.images.top"), b._video_meta(e, "observation.images.top")
        blob_a = a.table("videos").take_blobs("data", ids=[va["_rowid"]])[0].readall()
        blob_b = b.table("videos").take_blobs("data", ids=[vb["_rowid"]])[0].readall()
        assert blob_a == blob_b
    with pytest.raises(lake.NoChange):
        a.merge(b)  # no duplicates


_KILL = """
import sys, lake
lk = lake.open(sys.argv[1], create=False)
lk.delete_episodes(ids=[sys.argv[2]])
"""


def test_kill_9_during_an_edit_leaves_the_previous_version(ingested, tmp_path):
    lk = _copy(ingested, tmp_path)
    v = lk.version
    eid = sorted(lk.episodes()["episode_id"].to_pylist())[0]
    marker = tmp_path / "marker"
    env = {**os.environ, "EPISODE_LAKE_FAULT": f"before_log_append:{marker}",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-c", _KILL, lk.uri, eid], env=env)
    try:
        for _ in range(600):
            if marker.exists() or p.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the edit never reached the fault point"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    again = lake.open(lk.uri, create=False)
    assert again.version == v and eid in again.episodes()["episode_id"].to_pylist()
    assert again.frames(eid).num_rows > 0
    again.delete_episodes(ids=[eid])  # the left-over Lance versions do not get in the way
    assert eid not in again.episodes()["episode_id"].to_pylist() and again.episodes().num_rows == 5


def test_edit_concurrent_with_ingest_both_land(ingested, pusht_v21, tmp_path):
    import threading

    lk = _copy(ingested, tmp_path)
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    lk.delete_episodes(ids=ids[:2])
    other = lake.open(lk.uri)
    errors = []

    def ingest():
        try:
            other.ingest(pusht_v21, progress=False)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=ingest)
    t.start()
    lk.update_episodes(None, {"success": False}, ids=[ids[2]])
    t.join()
    assert not errors
    final = lake.open(lk.uri)
    eps = {r["episode_id"]: r for r in final.episodes().to_pylist()}
    assert eps[ids[2]]["success"] is False and set(ids) <= set(eps)  # the v2.1 copy brings the deleted 2 back
    msgs = [e.message for e in final.log()[:2]]
    assert any(m.startswith("update") for m in msgs)


def test_cli_edit_dry_run_prints_the_diff_and_writes_nothing_then_edits(ingested, tmp_path, capsys):
    import json

    import lake.cli

    lk = _copy(ingested, tmp_path)
    v = lk.version
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    assert lake.cli.main(["edit", "delete", ids[0], ids[1], "--dry-run", "--lake", lk.uri]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and f"- {ids[0]}" in out and f"- {ids[1]}" in out
    assert lake.open(lk.uri).version == v
    assert lake.cli.main(["edit", "relabel", "--filter", f"episode_id = '{ids[2]}'", "--task", "Push it.",
                          "-m", "fix typo", "--lake", lk.uri]) == 0
    assert lake.open(lk.uri).log()[0].message == "fix typo"
    assert lake.cli.main(["edit", "delete", "--filter", "length > 100000", "--lake", lk.uri]) == 0
    assert "no change" in capsys.readouterr().out and lake.open(lk.uri).version == v + 1
    (tmp_path / "v.json").write_text(json.dumps({ids[3]: True}))
    assert lake.cli.main(["edit", "add-feature", "reviewed", "--values", str(tmp_path / "v.json"),
                          "--level", "episode", "--lake", lk.uri]) == 0
    assert lake.cli.main(["diff", str(v), str(v + 2), "--lake", lk.uri]) == 0
    out = capsys.readouterr().out
    assert f"~ {ids[2]} task:" in out and "'Push it.'" in out and "+ feature episodes:reviewed" in out
    assert lake.cli.main(["edit", "restore", str(v), "--lake", lk.uri]) == 0
    assert lake.cli.main(["edit", "update", "--set", "nope=1", "--filter", "length > 0", "--lake", lk.uri]) == 1
    assert "no column 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_delete_and_restore_on_an_s3_lake(pusht_v3, ray_session):
    from test_s3 import BUCKET, KEY, REGION, SECRET, _free_port  # the moto server setup of the S3 tests

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name=REGION).create_bucket(Bucket=BUCKET)
        opts = {"aws_access_key_id": KEY, "aws_secret_access_key": SECRET, "aws_endpoint": endpoint,
                "aws_region": REGION, "allow_http": "true"}
        lk = lake.open(f"s3://{BUCKET}/edit", storage_options=opts)
        lk.ingest(pusht_v3, progress=False)
        v = lk.version
        ids = sorted(lk.episodes()["episode_id"].to_pylist())
        frames = lk.frames(ids[0])
        rep = lk.delete_episodes(ids=ids[:2])
        assert lk.diff(v, rep.version).episodes_removed == ids[:2] and lk.episodes().num_rows == 4
        lk.update_episodes(None, {"task": "Push it on S3."}, ids=[ids[2]])
        assert lk.checkout(v).frames(ids[0]).equals(frames)
        lk.restore(v)
        assert sorted(lk.episodes()["episode_id"].to_pylist()) == ids and lk.frames(ids[0]).equals(frames)
        assert lake.open(f"s3://{BUCKET}/edit", storage_options=opts).log()[0].summary["restored"] == v
    finally:
        server.stop()


def test_delete_reaches_decoded_frames_and_keeps_them_in_the_old_version(ingested, tmp_path):
    lk = _copy(ingested, tmp_path)
    lk.decode_videos(["observation.images.top"], progress=False)
    v = lk.version
    eid = sorted(lk.episodes()["episode_id"].to_pylist())[0]
    lk.delete_episodes(ids=[eid])

    def decoded(handle):
        return set(handle.table("decoded_frames").to_table(columns=["episode_id"])["episode_id"].to_pylist())

    assert eid not in decoded(lk) and eid in decoded(lk.checkout(v)) and len(decoded(lk)) == 5
    assert lk.decode_videos(["observation.images.top"], progress=False).version is None  # nothing to redo
