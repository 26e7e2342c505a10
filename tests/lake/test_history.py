"""Cost independent of history: bounded log reads per commit, automatic compaction that changes no version,
indexed episode reads equal to scans, stats merged from sketches equal to exact numpy within the stated error."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lake
from lake import _sketch, _tables, _versions


def _episode(i: int, length: int = 5) -> lake.NewEpisode:
    r = np.random.default_rng(i)
    return lake.NewEpisode(frames={"observation.state": r.normal(2, 3, size=(length, 2)).astype(np.float32),
                                   "action": r.exponential(1, size=(length, 3)).astype(np.float32)},
                           task=f"task {i % 4}")


@pytest.fixture(scope="module")
def long_lake(tmp_path_factory):
    """80 commits of one episode each; a handle opened at version 5 before the compactions."""
    lk = lake.open(tmp_path_factory.mktemp("long") / "lake")
    reads = []
    old = None
    for i in range(80):
        before = _versions.counters["log_rows_read"]
        lk.append_episodes([_episode(i)], source="rl", fps=10)
        reads.append(_versions.counters["log_rows_read"] - before)
        if lk.version == 5:
            old = lk.checkout(5)
            old_view = {"ids": sorted(old.episodes()["episode_id"].to_pylist())}
    return lk, reads, old, old_view


def test_a_commit_reads_a_bounded_number_of_log_rows_whatever_the_history(long_lake):
    lk, reads, _, _ = long_lake
    # head lookup, winner check and the handle's refresh each read the clean fragment's last row and the
    # fragments after it (at most LOG_FRAGMENTS + 1); a compaction (one commit in LOG_FRAGMENTS) reads the log once
    bound = 3 * (_versions.LOG_FRAGMENTS + 2)
    over = [i for i, r in enumerate(reads) if r > bound]
    assert len(over) <= len(reads) // _versions.LOG_FRAGMENTS, reads
    assert all(reads[i] <= bound + i + 2 for i in over), reads  # one whole-log read, not one per version


def test_log_and_small_tables_are_compacted_and_no_version_changes(long_lake):
    lk, _, old, old_view = long_lake
    store = lk.store
    assert len(store.dataset(_versions.LOG).get_fragments()) <= _versions.LOG_FRAGMENTS + 1
    assert len(lk.table("episodes").get_fragments()) <= _tables.COMPACT_FRAGMENTS + 1
    chain = _versions.chain(store)
    assert [e.version for e in chain] == list(range(81))
    for e in chain[1:]:  # every version still holds exactly the episodes committed up to it
        assert store.dataset("episodes", version=e.tables["episodes"]).count_rows() == e.version
    assert sorted(old.episodes()["episode_id"].to_pylist()) == old_view["ids"]  # old handles read as before
    assert lk.checkout(5).episodes().num_rows == 5 and _versions.head(store).version == 80
    for v in (0, 1, 33, 64, 79, 80):  # by-number lookups from the clean fragment or the tail
        assert _versions.entry(store, v).version == v


def test_log_compaction_drops_only_rows_that_lost_races(tmp_path):
    """Rows appended by losers (same version number, later) vanish at compaction; the chain is the same."""
    import lance
    import pyarrow as pa

    lk = lake.open(tmp_path / "lake")
    for i in range(3):
        lk.append_episodes([_episode(i)], source="rl", fps=10)
    before = [(e.version, e.writer) for e in _versions.chain(lk.store)]
    loser = {"version": [2], "parent": [1], "writer": ["loser"], "timestamp": [before and lk.log()[0].timestamp],
             "message": ["lost"], "tables": ["{}"], "summary": ["{}"]}
    lance.write_dataset(pa.table(loser, schema=_versions.LOG_SCHEMA), lk.store.table_uri("_log"), mode="append")
    assert [(e.version, e.writer) for e in _versions.chain(lk.store)] == before
    assert _versions.compact_log(lk.store)
    rows = lk.store.dataset("_log").to_table()
    assert rows.num_rows == 4 and "loser" not in rows["writer"].to_pylist()
    assert [(e.version, e.writer) for e in _versions.chain(lk.store)] == before
    assert len(lk.store.dataset("_log").get_fragments()) == 1
    lk.append_episodes([_episode(9)], source="rl", fps=10)
    assert lk.version == 4 and _versions.head(lk.store).version == 4


def test_indexed_frames_equal_a_filtered_scan(long_lake, ingested):
    lk, _, _, _ = long_lake
    for handle in (lk, ingested):
        eps = handle.episodes()
        for eid, table in zip(eps["episode_id"].to_pylist(), eps["frames_table"].to_pylist()):
            from lake._schema import unnest

            scan = unnest(handle.table(table).to_table(filter=f"episode_id = '{eid}'")).sort_by("frame_index")
            got = handle.frames(eid)
            assert got.equals(scan)
            assert handle.frames(eid, ["action"]).column("action").equals(scan.column("action"))
    with pytest.raises(KeyError):
        lk.frames("nope")


def _exact(eps, name):
    return np.concatenate([np.asarray(e.frames[name], np.float64).reshape(len(e.frames[name]), -1) for e in eps])


def test_stats_merged_from_sketches_equal_exact_numpy_within_the_stated_error(tmp_path):
    lk = lake.open(tmp_path / "lake")
    eps = [_episode(100 + i, length=5 + i % 17) for i in range(60)]
    for k in range(0, 60, 20):  # three commits: stats merge across appends
        lk.append_episodes(eps[k:k + 20], source="rl", fps=10)
    st = lk.stats()
    for name in ("observation.state", "action"):
        x, s = _exact(eps, name), st[name]
        assert int(s["count"][0]) == len(x)
        np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-9)
        np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-9)
        np.testing.assert_array_equal(s["min"], x.min(0))
        np.testing.assert_array_equal(s["max"], x.max(0))
        for q, key in ((0.01, "q01"), (0.99, "q99")):
            lo = np.quantile(x, q, axis=0, method="lower")
            hi = np.quantile(x, q, axis=0, method="higher")
            a = _sketch.ALPHA
            assert (s[key] >= np.minimum(lo * (1 - a), lo * (1 + a)) - 1e-9).all(), (key, s[key], lo)
            assert (s[key] <= np.maximum(hi * (1 - a), hi * (1 + a)) + 1e-9).all(), (key, s[key], hi)
    # a subset (filter) merges only its episodes
    part = lk.stats(filter="length > 12")["action"]
    x = _exact([e for e in eps if len(e.frames["action"]) > 12], "action")
    assert int(part["count"][0]) == len(x)
    np.testing.assert_allclose(part["mean"], x.mean(0), rtol=1e-9)


def test_pixel_sketch_quantiles_are_exact():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8) for _ in range(5)]
    codes, counts = _sketch.pixels(frames)
    q01, q99 = _sketch.quantiles("u8", codes, counts, 3)
    x = np.stack(frames).reshape(-1, 3) / 255.0
    np.testing.assert_array_equal(q01, np.quantile(x, 0.01, axis=0, method="lower"))
    np.testing.assert_array_equal(q99, np.quantile(x, 0.99, axis=0, method="lower"))


def test_a_commit_landing_during_log_compaction_is_kept_in_order(tmp_path, monkeypatch):
    """Lance places a rewrite that rebased over an append *after* the appended fragment: the chain, the head,
    lookups by number and the next compaction must still read commit order."""
    lk = lake.open(tmp_path / "lake")
    for i in range(3):
        lk.append_episodes([_episode(i)], source="rl", fps=10)
    other = lake.open(lk.uri)
    real = _versions._fault_point

    def commit_meanwhile(name):  # another writer commits between the compaction's read and its Rewrite
        if name == "log_compaction":
            monkeypatch.setattr(_versions, "_fault_point", real)
            other.append_episodes([_episode(50)], source="rl", fps=10)

    monkeypatch.setattr(_versions, "_fault_point", commit_meanwhile)
    assert _versions.compact_log(lk.store)
    frags = lk.store.dataset("_log").get_fragments()
    assert [f.count_rows() for f in frags] == [1, 4]  # the newer row lies before the compacted ones
    assert [e.version for e in _versions.chain(lk.store)] == [0, 1, 2, 3, 4]
    assert _versions.head(lk.store).version == 4 and _versions.entry(lk.store, 4).summary["episodes_added"] == 1
    lk.refresh().append_episodes([_episode(51)], source="rl", fps=10)
    assert lk.version == 5 and _versions.compact_log(lk.store)
    assert [e.version for e in _versions.chain(lk.store)] == list(range(6))
    assert lk.store.dataset("_log").to_table()["version"].to_pylist() == list(range(6))


def test_a_commit_opens_no_table_at_its_newest_version_but_the_log(tmp_path, monkeypatch):
    """Opening a Lance table's newest version lists every manifest it has (grows with history); opening a
    version by number does not. A commit opens only ``_log`` at its newest (head lookup, then the handle's
    refresh); every data table is opened at the version the head pins."""
    from lake._store import Store

    lk = lake.open(tmp_path / "lake")
    for i in range(3):
        lk.append_episodes([_episode(i)], source="rl", fps=10)
    newest: list[str] = []
    real = Store.dataset

    def counting(self, name, version=None):
        if version is None:
            newest.append(name)
        return real(self, name, version)

    monkeypatch.setattr(Store, "dataset", counting)
    for i in range(3, 8):
        newest.clear()
        lk.append_episodes([_episode(i)], source="rl", fps=10)
        assert newest == [_versions.LOG, _versions.LOG], newest
    # after an edit (deletion vectors: appends go through Lance Append on the pinned version) the same holds
    lk.delete_episodes(ids=[lk.episodes()["episode_id"][0].as_py()])
    for i in range(8, 11):
        newest.clear()
        lk.append_episodes([_episode(i)], source="rl", fps=10)
        assert newest == [_versions.LOG, _versions.LOG], newest
    assert lk.episodes().num_rows == 10


def test_old_lance_versions_of_the_log_are_pruned_without_gc_and_no_lake_version_changes(tmp_path, monkeypatch):
    from datetime import timedelta

    monkeypatch.setattr(_versions, "LOG_GRACE", timedelta(0))
    lk = lake.open(tmp_path / "lake")
    lk.tag("first", 0)
    views = {}
    for i in range(2 * _versions.LOG_FRAGMENTS + 5):
        lk.append_episodes([_episode(i)], source="rl", fps=10)
        if lk.version in (1, 20, 40):
            views[lk.version] = sorted(lk.episodes()["episode_id"].to_pylist())
    log = lk.store.dataset(_versions.LOG)
    assert len(log.versions()) <= _versions.LOG_KEEP + _versions.LOG_FRAGMENTS + 1
    assert [e.version for e in _versions.chain(lk.store)] == list(range(lk.version + 1))
    for v, ids in views.items():
        assert sorted(lk.checkout(v).episodes()["episode_id"].to_pylist()) == ids
    assert lk.checkout("first").episodes().num_rows == 0


def _frag(rows: int, nbytes: int):
    from types import SimpleNamespace

    return SimpleNamespace(physical_rows=rows, files=[SimpleNamespace(file_size_bytes=nbytes)])


def test_merge_is_size_tiered_and_never_takes_large_fragments():
    T, N, big = _tables.TIER_BYTES, _tables.COMPACT_FRAGMENTS, _tables.AUTO_COMPACT_MAX_BYTES

    def target(frags):
        per_row = sum(f.files[0].file_size_bytes for f in frags) / sum(f.physical_rows for f in frags)
        return _tables.merge_target(frags), per_row

    assert _tables.merge_target([_frag(10, 1000)] * N) is None  # not past the threshold
    # tier 0 past the threshold: merged into fragments of about T bytes (rows = T / bytes per row)
    assert _tables.merge_target([_frag(10, 1000)] * (N + 1)) == math.ceil(T / 100)
    # a tier is merged when it alone is past the threshold, not with the tiers above it
    assert _tables.merge_target([_frag(10, 1000)] * N + [_frag(1000, 2 * T)] * N + [_frag(9000, 20 * T)]) is None
    got, per_row = target([_frag(10, 1000)] * 5 + [_frag(1000, 2 * T)] * (N + 1))
    assert got == math.ceil(16 * T / per_row)  # tier 1 (and the smaller) into tier 2
    # what bulk writes make (>= AUTO_COMPACT_MAX_BYTES each) is never merged by a commit, however many
    assert _tables.merge_target([_frag(100_000, big)] * 100) is None
    got, per_row = target([_frag(100_000, big)] * 100 + [_frag(10, 1000)] * (N + 1))
    assert got == math.ceil(T / per_row) and got < 100_000  # the small ones only: bulk fragments have more rows


def test_small_commits_after_a_bulk_write_never_rewrite_its_fragment(tmp_path, monkeypatch):
    """A fragment at least AUTO_COMPACT_MAX_BYTES big stays as written while small commits pile up and are
    merged around it; fragments per table stay bounded."""
    monkeypatch.setattr(_tables, "TIER_BYTES", 1 << 10)
    monkeypatch.setattr(_tables, "AUTO_COMPACT_MAX_BYTES", 16 << 10)
    lk = lake.open(tmp_path / "lake")
    lk.append_episodes([_episode(1000 + i, length=40) for i in range(200)], source="bulk", fps=10)
    table = lk.episodes()["frames_table"][0].as_py()
    bulk = [f.metadata for f in lk.table(table).get_fragments()]
    assert len(bulk) == 1 and _tables.fragment_bytes(bulk[0]) >= _tables.AUTO_COMPACT_MAX_BYTES
    files = {d.path for d in bulk[0].files}
    ids = sorted(lk.episodes()["episode_id"].to_pylist())
    for i in range(60):
        lk.append_episodes([_episode(i)], source="rl", fps=10)
    frags = [f.metadata for f in lk.table(table).get_fragments()]
    assert any({d.path for d in f.files} == files for f in frags)  # the bulk fragment itself, not a copy
    assert len(frags) <= 3 * (_tables.COMPACT_FRAGMENTS + 1)
    assert lk.table(table).count_rows() == 200 * 40 + 60 * 5
    assert sorted(lk.checkout(1).episodes()["episode_id"].to_pylist()) == ids


def test_ingest_units_are_whole_files_about_parts_many_and_bounded_in_frames():
    """One unit = one fragment per table: about ``parts`` units (so a fresh ingest needs no merge), each of
    whole data files, every episode once and in order, at most ``max_frames`` frames unless one file is bigger."""
    from lake._ingest import units_of
    from lake._lerobot import EpisodeRef, Source

    def src(eps):
        return Source("/src", "src", "v3.0", {}, None, tuple(eps))

    eps = [EpisodeRef(i, 50, ("t",), f"data/file-{i // 4:03d}.parquet") for i in range(200)]  # 4 per file
    for parts, max_frames, n in ((4, 20_000, 4), (1, 20_000, 1), (1, 1_000, 10), (500, 20_000, 50)):
        units = units_of(src(eps), parts=parts, max_frames=max_frames)
        assert len(units) == n, (parts, max_frames, len(units))
        assert [e.index for u in units for e in u.episodes] == list(range(200))
        files = [{e.data_path for e in u.episodes} for u in units]
        assert all(not (a & b) for i, a in enumerate(files) for b in files[i + 1:])  # a file is read by one unit
        assert all(sum(e.length for e in u.episodes) <= max(max_frames, 200) for u in units)
    big = [EpisodeRef(0, 5000, ("t",), "data/big.parquet"), EpisodeRef(1, 10, ("t",), "data/small.parquet")]
    assert [len(u.episodes) for u in units_of(src(big), parts=8, max_frames=1000)] == [1, 1]


def test_a_slow_commit_survives_the_log_versions_it_read_being_pruned(tmp_path, monkeypatch):
    """The log versions after the one a writer read may be pruned while its build runs: its row still lands on
    the newest log version, in order, once (also without the re-open after a long build: Lance finds the newest)."""
    import time
    from datetime import timedelta

    monkeypatch.setattr(_versions, "LOG_GRACE", timedelta(seconds=0.3))
    lk = lake.open(tmp_path / "lake")
    other = lake.open(lk.uri)
    for i in range(3):
        lk.append_episodes([_episode(i)], source="rl", fps=10)
    calls = []

    def slow(head):
        if not calls:  # meanwhile others commit enough to compact and prune the log
            calls.append(head.version)
            for i in range(_versions.LOG_FRAGMENTS + _versions.LOG_KEEP + 4):
                other.append_episodes([_episode(100 + i)], source="rl", fps=10)
            time.sleep(0.4)
        return {}

    mine = _versions.commit(lk.store, slow, "slow")
    chain = _versions.chain(lk.store)
    assert [e.version for e in chain] == list(range(len(chain)))
    assert chain[mine.version].writer == mine.writer and chain[-1].version == mine.version
    assert mine.version == calls[0] + _versions.LOG_FRAGMENTS + _versions.LOG_KEEP + 5
