"""Retention (``lake gc``): what it keeps, what it deletes, dry runs, kill -9 at any point, readers beside it."""

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
from lake import _versions


def _episode(i: int, camera: bool = False) -> lake.NewEpisode:
    r = np.random.default_rng(i)
    images = {"observation.image": r.integers(0, 255, size=(4, 16, 16, 3), dtype=np.uint8)} if camera else {}
    return lake.NewEpisode(frames={"observation.state": r.normal(size=(6, 2)).astype(np.float32),
                                   "action": r.normal(size=(6, 2)).astype(np.float32)}, task=f"task {i % 3}",
                           images=images)


def _grow(lk, start: int, n: int) -> None:
    for i in range(start, start + n):
        lk.append_episodes([_episode(i, camera=True)], source="rl", fps=10)


def _snapshot(lk) -> dict:
    """Everything a reader of this version sees: episodes, every frame, every video."""
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    return {"ids": ids, "frames": [lk.frames(e).to_pydict() for e in ids],
            "video": [lk.video(e, "observation.image").sum() for e in ids]}


def _du(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A lake at version 12 (one episode with a camera per version), version 3 tagged 'v3'."""
    lk = lake.open(tmp_path_factory.mktemp("gc") / "lake")
    _grow(lk, 0, 12)
    lk.tag("v3", 3)
    return lk


@pytest.fixture
def lk(grown, tmp_path):
    shutil.copytree(grown.uri, tmp_path / "lake")
    return lake.open(tmp_path / "lake")


def test_gc_keeps_tagged_and_newest_versions_and_deletes_the_rest(lk):
    kept = {v: _snapshot(lk.checkout(v)) for v in (3, 10, 11, 12)}
    before = _du(lk.uri)
    rep = lk.gc(keep_last=3)
    assert rep.deleted_versions == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert rep.retained_versions == [3, 10, 11, 12]
    assert 0 < rep.bytes_freed and _du(lk.uri) < before
    for v, snap in kept.items():
        assert _snapshot(lk.checkout(v)) == snap
    with pytest.raises(lake.VersionDeleted, match=r"retained versions: 3, 10, 11, 12"):
        lk.checkout(5)
    with pytest.raises(KeyError):  # VersionDeleted is a KeyError: callers that caught unknown versions still do
        lk.checkout(0)
    # the log keeps every entry (lineage still names deleted versions) and says which lost their data
    log = {e.version: e for e in lk.log()}
    assert sorted(log) == list(range(13))
    assert [v for v, e in sorted(log.items()) if e.data_deleted] == rep.deleted_versions
    assert lk.describe(5).data_deleted and lk.describe(5).summary["episodes_added"] == 1
    assert not lk.describe("v3").data_deleted and lk.describe("v3").tags == ("v3",)
    # a second gc has nothing left to do; writing goes on as before
    again = lk.gc(keep_last=3)
    assert again.deleted_versions == [] and again.bytes_freed < rep.bytes_freed / 10
    _grow(lk, 100, 1)
    assert lk.version == 13 and lk.episodes().num_rows == 13


def test_gc_keep_within_keeps_recent_versions(lk):
    rep = lk.gc(keep_last=1, keep_within="1h")
    assert rep.deleted_versions == [] and lk.checkout(1).episodes().num_rows == 1
    with pytest.raises(ValueError, match="not a duration"):
        lk.gc(keep_within="soon")
    with pytest.raises(ValueError):
        lk.gc(keep_last=0)


def test_retention_rule_is_tags_or_newest_or_recent():
    from datetime import datetime, timedelta, timezone

    from lake._gc import parse_duration, retained

    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    entries = [_versions.LogEntry(v, now - timedelta(days=10 - v), "", {}) for v in range(10)]  # v9: 1 day old
    assert retained(entries, {}, 2, None, now) == {8, 9}
    assert retained(entries, {"t": 1}, 2, None, now) == {1, 8, 9}
    assert retained(entries, {}, 1, parse_duration("3d"), now) == {7, 8, 9}  # 3, 2 and 1 days old
    assert retained(entries, {}, 1, parse_duration("36h"), now) == {9}
    assert parse_duration("2w") == timedelta(weeks=2) and parse_duration("90s") == timedelta(seconds=90)


def test_dry_run_deletes_nothing_and_reports_what_gc_would(lk):
    files = sorted((d, f, os.path.getsize(os.path.join(d, f))) for d, _, fs in os.walk(lk.uri) for f in fs)
    dry = lk.gc(keep_last=2, dry_run=True)
    assert sorted((d, f, os.path.getsize(os.path.join(d, f))) for d, _, fs in os.walk(lk.uri) for f in fs) == files
    assert lk.checkout(1).episodes().num_rows == 1 and not any(e.data_deleted for e in lk.log())
    real = lk.gc(keep_last=2)
    assert dry.dry_run and dry.deleted_versions == real.deleted_versions
    assert abs(dry.bytes_freed - real.bytes_freed) <= 0.1 * real.bytes_freed


def test_cli_gc_dry_run_lists_versions(lk):
    p = subprocess.run([sys.executable, "-m", "lake.cli", "gc", "--keep-last", "11", "--dry-run", "--lake", lk.uri],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "would delete 2 versions" in p.stdout and "would delete version 1\n" in p.stdout
    assert lk.checkout(0).version == 0


def _cli(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "lake.cli", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["gc_marked", "gc_table", "gc_table#3", "timed"])
def test_gc_killed_at_any_point_leaves_every_retained_version_readable(lk, tmp_path, point):
    kept = {v: _snapshot(lk.checkout(v)) for v in (3, 11, 12)}
    marker = tmp_path / "at_fault"
    name, _, nth = point.partition("#")
    env = {} if name == "timed" else {"EPISODE_LAKE_FAULT": f"{name}:{marker}"}
    if nth:  # the nth table: kill with some tables cleaned and others not
        env["EPISODE_LAKE_FAULT_SKIP"] = str(int(nth) - 1)
    p = _cli("gc", "--keep-last", "2", "--lake", lk.uri, env=env)
    deadline = time.time() + 120
    if name == "timed":
        time.sleep(2.5)  # somewhere inside the Python start + gc
    else:
        while not marker.exists():
            assert p.poll() is None, p.communicate()
            assert time.time() < deadline
            time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    again = lake.open(lk.uri)
    for v, snap in kept.items():
        assert _snapshot(again.checkout(v)) == snap
    rep = again.gc(keep_last=2)  # finishes the job
    assert set(rep.retained_versions) == {3, 11, 12}
    for v, snap in kept.items():
        assert _snapshot(again.checkout(v)) == snap
    assert all(e.data_deleted for e in again.log() if e.version not in kept)


_READER = r"""
import sys, time, lake
lk = lake.open(sys.argv[1], create=False).checkout(sys.argv[2])
ids = sorted(lk.episodes()["episode_id"].to_pylist())
table = lk.episodes()["frames_table"][0].as_py()
want = sum(lk.frames(e).num_rows for e in ids)
n = 0
print("ready", flush=True)
while True:
    # a streaming scan of the pinned frames table, small batches, plus indexed reads and video decodes
    got = sum(b.num_rows for b in lk.table(table).to_batches(batch_size=4))
    assert got == want, (got, want)
    for e in ids:
        assert lk.frames(e).num_rows == 6 and lk.video(e, "observation.image").shape[0] == 4
    n += 1
    print(n, flush=True)
"""


@pytest.mark.slow
def test_reader_of_a_retained_version_never_fails_while_gc_runs(lk, tmp_path):
    script = tmp_path / "reader" / "reader.py"  # not beside the lake's folder `lake`, which would shadow the package
    script.parent.mkdir()
    script.write_text(_READER)
    reader = subprocess.Popen([sys.executable, str(script), lk.uri, "v3"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
    _grow(lk, 200, 3)  # writers and gc beside the reader
    rep = lk.gc(keep_last=1)
    assert 3 in rep.retained_versions and len(rep.deleted_versions) == 14
    time.sleep(1.0)
    assert reader.poll() is None, reader.communicate()  # still reading, no failure
    reader.send_signal(signal.SIGTERM)
    out, err = reader.communicate()
    assert "Error" not in err and int(out.split()[-1]) >= 1, err


def test_a_table_emptied_by_restore_has_its_data_freed_by_gc(tmp_path):
    """No public operation drops a table from the pins (a commit only adds or moves pins): restore pins a
    table made after the restored version at an empty Lance version instead. gc frees that table's data."""
    from lake import _versions

    lk = lake.open(tmp_path / "lake")
    for i in range(3):
        lk.append_episodes([_episode(i, camera=True)], source="rl", fps=10)
    v = lk.version
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    other = lake.NewEpisode(frames={"observation.state": np.ones((5, 7), np.float32)}, task="other robot")
    lk.append_episodes([other], source="sim", fps=10)  # other features: a frames table of its own
    new = set(_versions.head(lk.store).tables) - set(_versions.entry(lk.store, v).tables)
    assert len(new) == 1
    table = new.pop()
    data = os.path.join(lk.store.table_uri(table), "data")
    assert _du(data) > 0
    lk.restore(v)
    rep = lk.gc(keep_last=1)
    head = _versions.head(lk.store)
    assert table in head.tables and rep.tables_removed == []
    assert lk.store.dataset(table, version=head.tables[table]).count_rows() == 0
    assert _du(data) == 0  # every data file of the table is gone; its (empty) newest version stays
    assert sorted(lk.refresh().episodes()["episode_id"].to_pylist()) == ids
    with pytest.raises(lake.VersionDeleted):
        lk.checkout(v + 1)
