"""Byte integrity end to end: a corpus of damaged copies of a genuine LeRobot dataset is caught episode by
episode (strict decode, timestamps, missing / empty / truncated files, duplicated metadata) while the good
episodes land; the lake's own bytes verify; a repaired source replaces the damaged episode; an unchanged source
is recognised without reading it."""

from __future__ import annotations

import json
import os
import shutil

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
from lake import _tables, _versions
from lake._lerobot import SourceError
from lake.cli import main as cli

TOP, WRIST = "observation.images.top", "observation.images.wrist"


# --- the corpus: damage a copy of a genuine dataset ------------------------------------------------------------

def _data(root, i):
    return os.path.join(root, f"data/chunk-000/episode_{i:06d}.parquet")


def _video(root, cam, i):
    return os.path.join(root, f"videos/chunk-000/{cam}/episode_{i:06d}.mp4")


def packets(path) -> list[tuple[int, int, bool, int]]:
    """(byte position in the file, size, keyframe, pts) of every video packet, in decode order."""
    with av.open(path) as c:
        s = c.streams.video[0]
        return [(p.pos, p.size, p.is_keyframe, p.pts) for p in c.demux(s) if p.size]


def frame_of(path, pts) -> int:
    """Index of the frame with ``pts`` in presentation order (one episode per file: its frame index)."""
    return sorted(p[3] for p in packets(path)).index(pts)


def flip(path, key: bool, nth: int, nbytes: int = 8) -> int:
    """Invert ``nbytes`` bytes inside the ``nth`` keyframe (I) or non-keyframe (P) packet, at the first place
    (half way in, then other offsets) where a strict decode notices; returns that packet's pts. Not every flip is
    visible to a decoder (AV1 tile data can decode "cleanly" to other pixels: see ``silent_flip``), and which
    ones are depends on the encoder's output, so the place is searched rather than fixed."""
    pos, size, _, pts = [p for p in packets(path) if p[2] == key][nth]
    original = open(path, "rb").read()
    for offset in (0.5, 0.3, 0.7, 0.1, 0.9, 0.2, 0.4, 0.6, 0.8):
        at = pos + max(4, min(size - nbytes, int(size * offset)))
        damaged = bytearray(original)
        damaged[at:at + nbytes] = bytes(x ^ 0xFF for x in original[at:at + nbytes])
        with open(path, "wb") as f:
            f.write(damaged)
        if not strict_ok(path):
            return pts
    raise AssertionError(f"no flip inside packet pts={pts} of {path} is visible to a strict decode")


def strict_ok(path) -> bool:
    """Does the file decode cleanly with every check the lake's strict decode makes?"""
    try:
        with av.open(path) as c:
            s = c.streams.video[0]
            s.codec_context.options = {"err_detect": "explode"}
            n = 0
            for p in c.demux(s):
                for fr in s.codec_context.decode(p):
                    if fr.is_corrupt:
                        return False
                    n += 1
            return n == len(packets(path))
    except av.error.FFmpegError:
        return False


def silent_flip(path) -> int:
    """Flip one byte of a P-frame so that the file still decodes cleanly but to other pixels (bit rot no
    decoder can see); returns the pts of the damaged frame."""
    with av.open(path) as c:
        clean = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    data = open(path, "rb").read()
    for pos, size, key, pts in packets(path):
        if key:
            continue
        for at in range(pos + size - 1, pos + 4, -1):
            damaged = bytearray(data)
            damaged[at] ^= 0x01
            with open(path, "wb") as f:
                f.write(damaged)
            if strict_ok(path):
                with av.open(path) as c:
                    got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
                if len(got) == len(clean) and any((a != b).any() for a, b in zip(got, clean)):
                    return pts
    raise AssertionError(f"no silent flip found in {path}")


def truncate(path, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep))


def rewrite(path, fn) -> None:
    pq.write_table(fn(pq.read_table(path)), path)


def set_timestamps(t: pa.Table, ts: np.ndarray) -> pa.Table:
    return t.set_column(t.column_names.index("timestamp"), "timestamp", pa.array(ts, t["timestamp"].type))


def duplicate_meta_row(root, index: int, change: dict | None = None) -> None:
    path = os.path.join(root, "meta/episodes.jsonl")
    rows = [json.loads(line) for line in open(path) if line.strip()]
    rows.append({**[r for r in rows if r["episode_index"] == index][0], **(change or {})})
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


# --- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """v2.1 (one mp4 per episode and camera), 10 episodes: h264 top, AV1 wrist."""
    return lake.write_pusht_dataset(tmp_path_factory.mktemp("integrity") / "ten", episodes=10, version="v2.1",
                                    min_len=16, max_len=24, seed=7)


@pytest.fixture
def base_lake(tmp_path, pusht_v3, ray_session):
    lk = lake.open(tmp_path / "lake")
    lk.ingest(pusht_v3, progress=False)
    return lk


def _state(lk, version):
    old = lk.checkout(version)
    eps = old.episodes().sort_by("episode_id")
    eid = eps["episode_id"][0].as_py()
    return eps, old.frames(eid), old.video(eid, TOP)


# --- ingest catches every kind of damage, by episode ------------------------------------------------------------

def test_damaged_corpus_each_episode_caught_by_name_and_good_episodes_land(clean, copy_source, base_lake, capsys):
    src = copy_source(clean)
    p_pts = flip(_video(src, TOP, 0), key=False, nth=4)  # inside a P-frame
    i_pts = flip(_video(src, WRIST, 1), key=True, nth=3)  # inside an I-frame (AV1)
    truncate(_video(src, TOP, 2))
    open(_video(src, WRIST, 3), "wb").close()  # zero bytes
    os.remove(_video(src, TOP, 4))
    n5 = pq.read_table(_data(src, 5)).num_rows
    ts = np.arange(n5) / 10.0
    ts[[6, 9]] = ts[[9, 6]]  # shuffled: the first bad index is 7 (6 -> 9 -> 8 ...)
    rewrite(_data(src, 5), lambda t: set_timestamps(t, ts))
    rewrite(_data(src, 6), lambda t: set_timestamps(t, np.arange(t.num_rows) / 10.0 + (np.arange(t.num_rows) >= 11) * 0.002))
    duplicate_meta_row(src, 7)  # identical row twice: lands once, reported
    duplicate_meta_row(src, 8, {"length": 3})  # two different rows: which is right is unknown
    before = base_lake.version
    snapshot = _state(base_lake, before)

    rep = base_lake.ingest(src, progress=False)
    got = {item: reason for _, item, reason in rep.quarantined}

    def reason(fragment: str) -> str:
        hits = [r for i, r in got.items() if i.endswith(fragment)]
        assert len(hits) == 1, (fragment, got)
        return hits[0]

    assert len(got) == 9, got
    assert f"corrupt video at frame {frame_of(_video(clean, TOP, 0), p_pts)}:" in \
        reason(f"{TOP}/episode_000000.mp4 episode 0")
    assert f"corrupt video at frame {frame_of(_video(clean, WRIST, 1), i_pts)}:" in \
        reason(f"{WRIST}/episode_000001.mp4 episode 1")
    assert "unreadable video" in reason(f"{TOP}/episode_000002.mp4 episode 2")
    assert reason(f"{WRIST}/episode_000003.mp4 episode 3") == "video file is empty (0 bytes)"
    assert reason(f"{TOP}/episode_000004.mp4 episode 4") == "video file not found"
    assert reason("episode_000005.parquet episode 5").startswith("timestamps are not strictly increasing at frame 7 ")
    assert reason("episode_000006.parquet episode 6").startswith("timestamp at frame 11 is 0.102000 s after")
    assert "appears in 2 rows" in reason("meta/episodes.jsonl episode 7") and "ingested once" in got[
        "meta/episodes.jsonl episode 7"]
    assert "not ingested" in reason("meta/episodes.jsonl episode 8")
    # every good episode landed, exactly once, and nothing else
    landed = base_lake.episodes(filter="source = 'src'")
    assert sorted(landed["source_episode_index"].to_pylist()) == [7, 9]
    assert rep.episodes_added == 2
    for row in landed.to_pylist():
        assert base_lake.frames(row["episode_id"])["action"].to_pylist() == \
            pq.read_table(_data(src, row["source_episode_index"]))["action"].to_pylist()
    # the earlier version is untouched and still verifies
    eps, frames, video = _state(base_lake, before)
    assert eps.equals(snapshot[0]) and frames.equals(snapshot[1]) and np.array_equal(video, snapshot[2])
    assert base_lake.verify(before, progress=False).ok
    assert base_lake.verify(progress=False).ok
    # the CLI: one line per problem, exit 1; the same source again adds nothing and says the same
    code = cli(["ingest", str(src), "--lake", base_lake.uri, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 9 and len(set(err)) == 9
    assert base_lake.refresh().version == before + 1


def test_a_flipped_p_frame_passes_a_plain_decode_but_not_the_strict_one(clean, tmp_path):
    path = str(tmp_path / "p.mp4")
    shutil.copy(_video(clean, TOP, 0), path)
    flip(path, key=False, nth=4)
    with av.open(path) as c:  # what a decode with FFmpeg's defaults (error concealment) gives: no error
        n = sum(1 for _ in c.decode(video=0))
    assert n == len(packets(path))
    assert not strict_ok(path)


def test_missing_and_empty_video_in_a_shared_file_is_one_line_naming_its_episodes(pusht_v3, copy_source, tmp_path,
                                                                                  capsys, ray_session):
    src = copy_source(pusht_v3)
    meta = pq.read_table(next((src / "meta/episodes").rglob("*.parquet"))).to_pylist()
    top_file = f"videos/{TOP}/chunk-000/file-000.mp4"
    wrist_file = f"videos/{WRIST}/chunk-000/file-001.mp4"
    in_top = sorted(r["episode_index"] for r in meta if r[f"videos/{TOP}/file_index"] == 0)
    in_wrist = sorted(r["episode_index"] for r in meta if r[f"videos/{WRIST}/file_index"] == 1)
    assert len(in_top) > 1 and len(in_wrist) > 1
    os.remove(src / top_file)
    open(src / wrist_file, "wb").close()
    lk = lake.open(tmp_path / "lake")
    code = cli(["ingest", str(src), "--lake", lk.uri, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert sorted(err) == sorted([
        f"quarantined: src: {top_file} episodes {', '.join(map(str, in_top))}: video file not found",
        f"quarantined: src: {wrist_file} episodes {', '.join(map(str, in_wrist))}: video file is empty (0 bytes)",
    ])
    landed = set(lk.refresh().episodes()["source_episode_index"].to_pylist())
    assert landed == set(range(6)) - set(in_top) - set(in_wrist)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_source_folder_is_an_error_and_writes_no_version(make, base_lake, tmp_path, capsys):
    src = tmp_path / "nothing"
    if make == "empty":
        src.mkdir()
    before = base_lake.version
    with pytest.raises(SourceError, match="not found" if make == "missing" else "is empty"):
        base_lake.ingest(src, progress=False)
    code = cli(["ingest", str(src), "--lake", base_lake.uri, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and str(src) in err[0]
    assert base_lake.refresh().version == before and len(base_lake.log()) == before + 1


# --- the lake's own bytes ---------------------------------------------------------------------------------------

@pytest.fixture
def own_lake(ingested, tmp_path):
    """A private copy of the session lake (to damage its files)."""
    dst = tmp_path / "copy"
    shutil.copytree(ingested.uri, dst)
    return lake.open(dst, create=False)


def _flip_in_files(folder, needle: bytes, at: int) -> str:
    """Invert one byte ``at`` bytes into the one occurrence of ``needle`` in the data files under ``folder``."""
    hits = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            data = open(path, "rb").read()
            i = data.find(needle)
            if i >= 0:
                assert data.find(needle, i + 1) < 0
                hits.append((path, i))
    assert len(hits) == 1, hits
    path, i = hits[0]
    with open(path, "r+b") as f:
        f.seek(i + at)
        b = f.read(1)
        f.seek(i + at)
        f.write(bytes([b[0] ^ 0x10]))
    return path


def test_clean_lake_verifies_clean(own_lake, capsys):
    rep = own_lake.verify(progress=False)
    assert rep.ok and rep.episodes == 6 and rep.segments == 12 and rep.unchecked == 0 and rep.bytes > 0
    assert own_lake.verify(deep=True, progress=False).ok
    assert cli(["verify", "--deep", "--lake", own_lake.uri, "-q"]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")


def test_a_flipped_byte_in_a_video_segment_is_named_by_episode_and_camera(own_lake, capsys):
    eid = sorted(own_lake.episodes()["episode_id"].to_pylist())[2]
    data = own_lake.video_reader(eid, WRIST).blob.read()
    _flip_in_files(os.path.join(own_lake.uri, "videos.lance", "data"), data[len(data) // 2:len(data) // 2 + 24], 12)
    rep = own_lake.verify(progress=False)
    assert not rep.ok
    assert [(m.table, m.episode, m.camera) for m in rep.mismatches] == [("videos", eid, WRIST)]
    assert "segment checksum mismatch" in rep.mismatches[0].reason
    assert cli(["verify", "--lake", own_lake.uri, "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"episode {eid}" in err[0] and f"camera {WRIST}" in err[0]


def test_a_flipped_byte_in_frame_rows_is_named_by_episode(own_lake):
    eid = sorted(own_lake.episodes()["episode_id"].to_pylist())[4]
    state = np.asarray(own_lake.frames(eid)["observation.state"].to_pylist(), np.float32)
    table = own_lake.episodes(filter=f"episode_id = '{eid}'")["frames_table"][0].as_py()
    _flip_in_files(os.path.join(own_lake.uri, f"{table}.lance", "data"), state[3:7].tobytes(), 9)
    rep = own_lake.verify(progress=False)
    assert [(m.table, m.episode) for m in rep.mismatches] == [(table, eid)]
    assert "frame rows checksum mismatch" in rep.mismatches[0].reason


def test_verify_checks_the_version_asked_for_and_appended_episodes_carry_checksums(own_lake):
    v = own_lake.version
    rng = np.random.default_rng(0)
    own_lake.append_episodes([lake.NewEpisode(
        frames={"observation.state": rng.normal(size=(5, 2)).astype(np.float32),
                "action": rng.normal(size=(5, 2)).astype(np.float32)},
        images={"cam": rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)}, task="t")], source="rl", fps=10)
    old, new = own_lake.verify(v, progress=False), own_lake.verify(progress=False)
    assert (old.episodes, old.segments) == (6, 12) and (new.episodes, new.segments) == (7, 13)
    assert new.ok and new.unchecked == 0


# --- replacement and cheap re-ingest ----------------------------------------------------------------------------

def test_repaired_source_replaces_the_silently_damaged_episode_in_a_new_version(clean, copy_source, tmp_path,
                                                                                ray_session):
    damaged = copy_source(clean, "damaged")
    pts = silent_flip(_video(damaged, TOP, 3))  # decodes cleanly, to wrong pixels: no decoder can tell
    lk = lake.open(tmp_path / "lake")
    first = lk.ingest(damaged, progress=False)
    assert first.episodes_added == 10 and not first.quarantined
    eid = lk.episodes(filter="source_episode_index = 3")["episode_id"][0].as_py()
    bad_pixels = lk.video(eid, TOP)
    with av.open(_video(clean, TOP, 3)) as c:
        truth = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    frame = frame_of(_video(clean, TOP, 3), pts)
    assert not np.array_equal(bad_pixels[frame], truth[frame])
    rows_before = lk.table(lk.episodes()["frames_table"][0].as_py()).count_rows()

    shutil.copy(_video(clean, TOP, 3), _video(damaged, TOP, 3))  # the source repaired in place
    other = lk.ingest(copy_source(clean, "other"), progress=False)  # another source's copy: not a repair
    assert other.version is None and other.episodes_skipped == 10 and not other.episodes_replaced
    rep = lk.ingest(damaged, progress=False)
    assert rep.version == first.version + 1 and rep.episodes_replaced == [eid] and rep.episodes_added == 0
    assert np.array_equal(lk.video(eid, TOP), truth)
    assert lk.episodes().num_rows == 10 and lk.table("videos").count_rows() == 20
    assert lk.table(lk.episodes()["frames_table"][0].as_py()).count_rows() == rows_before  # frame rows kept
    assert np.array_equal(lk.checkout(first.version).video(eid, TOP), bad_pixels)  # history untouched
    assert lk.diff(first.version, rep.version).episodes_added == []
    assert lk.verify(progress=False).ok
    # an identical source adds nothing, read or not
    assert lk.ingest(damaged, progress=False).version is None
    assert lk.ingest(damaged, progress=False, verify_all=True).version is None


def test_unchanged_source_is_recognised_without_reading_it_and_verify_all_reads_it(clean, copy_source, tmp_path,
                                                                                   ray_session):
    src = copy_source(clean)
    lk = lake.open(tmp_path / "lake")
    assert lk.ingest(src, progress=False).episodes_added == 10
    again = lk.ingest(src, progress=False)
    assert again.version is None and again.episodes_unchanged == 10 and again.episodes_skipped == 10
    # same size, same mtime, other bytes: the cheap check trusts them; --verify-all reads every file
    path = _video(src, TOP, 5)
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"\0" * 64)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lk.ingest(src, progress=False).episodes_unchanged == 10
    full = lk.ingest(src, progress=False, verify_all=True)
    assert full.episodes_unchanged == 0 and [q[1] for q in full.quarantined] == [
        f"videos/chunk-000/{TOP}/episode_000005.mp4 episode 5"]
    # a copy elsewhere keeps sizes and mtimes (copy2): unchanged; a touched file with the same bytes is read
    # again, found identical (same content hash), and nothing is added
    copied = copy_source(clean, "copied")
    assert lk.ingest(copied, progress=False).episodes_unchanged == 10
    os.utime(_video(copied, WRIST, 2))
    rep = lk.ingest(copied, progress=False)
    assert rep.version is None and rep.episodes_unchanged == 9 and rep.episodes_skipped == 10


def test_a_lake_from_before_checksums_verifies_as_unchecked_and_takes_the_same_source_as_nothing_new(
        pusht_v3, tmp_path, ray_session):
    lk = lake.open(tmp_path / "lake")
    lk.ingest(pusht_v3, progress=False)
    store = lk.store
    new = ["frames_checksum", "content_hash", "source_fingerprint", "video_checksums"]
    old = store.dataset("episodes", version=_versions.head(store).tables["episodes"]).to_table().drop_columns(new)
    from lance.fragment import write_fragments

    frags = write_fragments(old, store.table_uri("episodes"), schema=old.schema, mode="overwrite")
    _versions.commit(store, lambda head: {"episodes": _tables.overwrite_with(store, "episodes", old.schema, None,
                                                                             frags)},
                     "episodes as an older release wrote them")
    lk.refresh()
    rep = lk.verify(progress=False)
    assert rep.ok and rep.unchecked == 6 + 12
    assert lk.ingest(pusht_v3, progress=False).version is None
