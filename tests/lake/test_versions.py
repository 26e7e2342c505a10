"""Lake-level versions: log, tags, checkout, diff, atomicity under kill -9, and concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

import lake
from lake import _tables, _versions


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    small = lake.write_pusht_dataset(root / "small", episodes=3, version="v3.0", min_len=10, max_len=16,
                                     episodes_per_file=2, seed=3)
    big = lake.write_pusht_dataset(root / "big", episodes=5, version="v3.0", min_len=10, max_len=16,
                                   episodes_per_file=2, seed=3)  # a superset of `small`
    return small, big


@pytest.fixture(scope="module")
def history(tmp_path_factory, two_sources, ray_session):
    """A lake at version 2: small ingested (v1, tagged 'first'), then big (v2)."""
    small, big = two_sources
    lk = lake.open(tmp_path_factory.mktemp("hist") / "lake")
    r1 = lk.ingest(small, message="small", progress=False)
    lk.tag("first", r1.version)
    r2 = lk.ingest(big, message="big", progress=False)
    assert (r1.version, r2.version) == (1, 2)
    return lk


def test_log_lists_versions_newest_first_with_messages_and_tags(history):
    log = history.log()
    assert [e.version for e in log] == [2, 1, 0]
    assert [e.message for e in log[:2]] == ["big", "small"]
    assert log[1].tags == ("first",) and log[0].tags == ()
    assert log[0].summary["episodes_added"] == 2 and log[1].summary["episodes_added"] == 3
    assert log[0].timestamp >= log[1].timestamp >= log[2].timestamp


def test_checkout_by_number_and_by_tag_reads_that_version_only(history):
    old = history.checkout("first")
    assert old.version == 1 and history.checkout(1).version == 1
    assert old.episodes().num_rows == 3 and history.episodes().num_rows == 5
    assert old.checkout(0).episodes().num_rows == 0
    eid = old.episodes()["episode_id"][0].as_py()
    assert old.frames(eid).equals(history.frames(eid))
    with pytest.raises(lake.ReadOnlyError):
        old.ingest("/nonexistent")
    with pytest.raises(lake.ReadOnlyError):
        old.tag("nope")


def test_diff_names_the_episodes_added_between_versions(history):
    d = history.diff("first", 2)
    new_ids = set(history.episodes()["episode_id"].to_pylist()) - set(history.checkout(1).episodes()["episode_id"].to_pylist())
    assert sorted(new_ids) == d.episodes_added and len(d.episodes_added) == 2 and d.episodes_removed == []
    back = history.diff(2, "first")
    assert back.episodes_removed == d.episodes_added and back.episodes_added == []


def test_tag_errors_are_clear(history):
    with pytest.raises(ValueError, match="already exists"):
        history.tag("first", 2)
    with pytest.raises(KeyError):
        history.tag("later", 99)
    with pytest.raises(ValueError):
        history.tag("12")
    with pytest.raises(KeyError):
        history.checkout("no-such-tag")
    assert history.checkout("first").version == 1  # failed attempts changed nothing


def test_tags_protect_pinned_table_versions_from_cleanup(history):
    entry = history.checkout("first")._entry
    for table, v in entry.tables.items():
        assert history.store.dataset(table).tags.list()["first"]["version"] == v


# --- concurrency -------------------------------------------------------------------------------------------

ROWS = pa.schema([pa.field("writer", pa.int64()), pa.field("i", pa.int64())])


def test_concurrent_commits_serialize_without_losing_any(tmp_path):
    """Threads race to commit appends to one table: every commit becomes exactly one version, no row lost."""
    lk = lake.open(tmp_path / "lake")
    store = lk.store
    writers, commits = 4, 5

    def work(w):
        for i in range(commits):
            frags = _tables.write_rows(store, "t", pa.table({"writer": [w], "i": [i]}, schema=ROWS), ROWS)
            _versions.commit(store, lambda head: _tables.append_tables(store, head.tables, {"t": (ROWS, frags)}),
                             f"w{w} i{i}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chain = _versions.chain(store)
    assert [e.version for e in chain] == list(range(writers * commits + 1))
    final = lk.refresh().table("t").to_table()
    assert sorted(zip(final["writer"].to_pylist(), final["i"].to_pylist())) == \
        [(w, i) for w in range(writers) for i in range(commits)]
    # every version holds exactly the rows committed up to it
    for e in chain[1:]:
        assert store.dataset("t", version=e.tables["t"]).count_rows() == e.version


def _cli(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "lake.cli", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_writer_killed_before_commit_leaves_lake_at_last_version(tmp_path, two_sources, ray_session):
    small, big = two_sources
    lk = lake.open(tmp_path / "lake")
    lk.ingest(small, progress=False)
    before = (lk.version, sorted(lk.episodes()["episode_id"].to_pylist()))
    marker = tmp_path / "at_fault"
    p = _cli("ingest", str(big), "--lake", lk.uri, "-q",
             env={"EPISODE_LAKE_FAULT": f"before_log_append:{marker}"})
    deadline = time.time() + 240
    while not marker.exists():
        assert p.poll() is None, p.communicate()
        assert time.time() < deadline, "writer never reached the commit"
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)  # table versions are written, the lake version is not
    p.wait()
    again = lake.open(lk.uri)
    assert (again.version, sorted(again.episodes()["episode_id"].to_pylist())) == before
    assert sum(again.episodes()["length"].to_pylist()) == again.table(again.episodes()["frames_table"][0].as_py()).count_rows()
    # the next writer lands cleanly: nothing the dead writer left behind becomes visible
    rep = again.ingest(big, progress=False)
    assert rep.episodes_added == 2
    frames_table = again.episodes()["frames_table"][0].as_py()
    assert again.table(frames_table).count_rows() == sum(again.episodes()["length"].to_pylist())
    assert again.table("videos").count_rows() == 2 * again.episodes().num_rows


@pytest.mark.slow
def test_two_ingest_processes_at_once_both_land_without_duplicates(tmp_path, two_sources):
    small, big = two_sources
    uri = str(tmp_path / "lake")
    lake.open(uri)
    procs = [_cli("ingest", str(src), "--lake", uri, "-q") for src in (small, big)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lk = lake.open(uri)
    ids = lk.episodes()["episode_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 5  # big ⊇ small: each episode exactly once
    log = lk.log()
    assert [e.version for e in log] == list(range(len(log) - 1, -1, -1))  # no lost or forked versions
    assert sum(e.summary.get("episodes_added", 0) for e in log) == 5
    frames_table = lk.episodes()["frames_table"][0].as_py()
    assert lk.table(frames_table).count_rows() == sum(lk.episodes()["length"].to_pylist())
