"""Lakes written before a table gained columns still take new data: the new columns are added, old rows read
them as nulls, nothing is rewritten; a changed column type is refused with the table and column named."""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pytest

import lake
from lake import _tables, _versions
from lake._store import Store

OLD = pa.schema([pa.field("id", pa.string()), pa.field("obs", pa.struct([pa.field("x", pa.float32())])),
                 pa.field("n", pa.int64())])
# the writer's order differs from the table's: new columns in the middle and at the end
NEW = pa.schema([pa.field("id", pa.string()), pa.field("tag", pa.string()),
                 pa.field("obs", pa.struct([pa.field("x", pa.float32())])), pa.field("n", pa.int64()),
                 pa.field("extra", pa.struct([pa.field("z", pa.int8())]))])


def _commit(store, table, data, schema, pinned):
    frags = _tables.load_fragments(_tables.write_fragments(store, table, data, schema))
    return _tables.overwrite_with(store, table, schema, pinned, frags)


def test_new_columns_are_appended_and_old_rows_read_nulls(tmp_path):
    store = Store(str(tmp_path / "lake"))
    v1 = _commit(store, "t", pa.table({"id": ["a", "b"], "obs": [{"x": 1.0}, {"x": 2.0}], "n": [1, 2]}, OLD), OLD, None)
    files_before = {f.path for fr in store.dataset("t", version=v1).get_fragments() for f in fr.data_files()}
    new = pa.table({"id": ["c"], "tag": ["rl"], "obs": [{"x": 3.0}], "n": [3], "extra": [{"z": 7}]}, NEW)
    v2 = _commit(store, "t", new, NEW, v1)
    ds = store.dataset("t", version=v2)
    assert ds.schema.names == ["id", "obs", "n", "tag", "extra"]  # the table's order first, then the new ones
    rows = {r["id"]: r for r in ds.to_table().to_pylist()}
    assert rows["a"] == {"id": "a", "obs": {"x": 1.0}, "n": 1, "tag": None, "extra": None}
    assert rows["c"] == {"id": "c", "obs": {"x": 3.0}, "n": 3, "tag": "rl", "extra": {"z": 7}}
    assert ds.to_table(filter="tag IS NULL").num_rows == 2
    files_after = {f.path for fr in ds.get_fragments() for f in fr.data_files()}
    assert files_before < files_after  # the old files are still the old rows: nothing rewritten
    assert store.dataset("t", version=v1).schema == OLD  # the pinned version is untouched
    # data in the old shape still lands in the evolved table (missing columns are nulls)
    v3 = _commit(store, "t", pa.table({"id": ["d"], "obs": [{"x": 4.0}], "n": [4]}, OLD), OLD, v2)
    got = {r["id"]: r["tag"] for r in store.dataset("t", version=v3).to_table(columns=["id", "tag"]).to_pylist()}
    assert got == {"a": None, "b": None, "c": "rl", "d": None}


def test_a_changed_column_type_is_refused_with_table_and_column(tmp_path):
    store = Store(str(tmp_path / "lake"))
    v1 = _commit(store, "t", pa.table({"id": ["a"], "obs": [{"x": 1.0}], "n": [1]}, OLD), OLD, None)
    bad = pa.schema([pa.field("id", pa.string()), pa.field("obs", pa.struct([pa.field("x", pa.float32())])),
                     pa.field("n", pa.string())])
    with pytest.raises(_tables.SchemaMismatch, match=r"table 't': column 'n' is int64 in the lake but string"):
        _commit(store, "t", pa.table({"id": ["b"], "obs": [{"x": 2.0}], "n": ["2"]}, bad), bad, v1)
    assert store.dataset("t").version == v1


def _episode(rng, version):
    return lake.NewEpisode(
        frames={"observation.state": rng.normal(size=(6, 2)).astype(np.float32),
                "action": rng.normal(size=(6, 2)).astype(np.float32)},
        task="push", images={}, policy_version=version, episode_return=1.5, success=True, attrs={"env": "x"})


def test_a_lake_whose_episodes_table_predates_the_rl_columns_takes_rl_episodes(tmp_path):
    rng = np.random.default_rng(0)
    lk = lake.open(tmp_path / "lake")
    lk.append_episodes([_episode(rng, 0)], source="old", fps=10)
    # make it a lake from before the RL columns: the episodes table without them, as the head's pin
    store = lk._store
    rl = ["policy_version", "episode_return", "success", "attrs"]
    old = store.dataset("episodes", version=_versions.head(store).tables["episodes"]).to_table()
    old = old.drop_columns([c for c in rl if c in old.column_names])
    from lance.fragment import write_fragments

    frags = write_fragments(old, store.table_uri("episodes"), schema=old.schema, mode="overwrite")
    _versions.commit(store, lambda head: {"episodes": _tables.overwrite_with(store, "episodes", old.schema, None,
                                                                             frags)},
                     "episodes as an older release wrote them")
    lk.refresh()
    assert not set(rl) & set(lk.episodes().column_names)
    rep = lk.append_episodes([_episode(rng, 3)], source="rl", fps=10)
    assert rep.episodes_added == 1
    rows = lk.episodes().to_pylist()
    assert sorted((r["source"], r["policy_version"]) for r in rows) == [("old", None), ("rl", 3)]
    assert {r["source"]: r["episode_return"] for r in rows} == {"old": None, "rl": 1.5}
