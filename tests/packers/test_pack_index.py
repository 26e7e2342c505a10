"""The packer's pack index side file: written with each packed version, equal to the table's own index, verified on
read (a corrupt or stale file is detected and the stream reads the table instead), kept and deleted by gc with its
version."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pytest
from lance.file import LanceFileWriter

import lake
from lake import _sidefiles
from packers import Recipe, pack_index

RECIPE = Recipe(image_size=(32, 32), patch_size=16, observation_deltas=(-0.1, 0.0), action_horizon=8,
                normalization="quantile", action_bins=16, token_budget=512, episodes_per_group=2, name="small")


@pytest.fixture(scope="module")
def packed(tmp_path_factory, ingested):
    """A lake packed twice (the second pack appends new episodes: a second Lance version of the packed table)."""
    root = tmp_path_factory.mktemp("pack_index")
    dst = root / "lake"
    shutil.copytree(ingested.uri, dst)
    lk = lake.open(dst)
    first = lk.pack(RECIPE, progress=False)
    v1 = lk.entry.tables[first.table]
    more = lake.write_pusht_dataset(root / "more", episodes=2, version="v2.1", min_len=10, max_len=12, seed=99)
    lk.ingest(more, progress=False)
    second = lk.pack(RECIPE, progress=False)
    assert second.packs and lk.entry.tables[first.table] > v1
    return lk, first.table, v1, lk.entry.tables[first.table]


def _copy(packed, tmp_path):
    lk, table, v1, v2 = packed
    shutil.copytree(lk.uri, tmp_path / "lake")
    return lake.open(tmp_path / "lake"), table, v1, v2


def _side(lk, table, version) -> str:
    return _sidefiles.path(lk.store.table_uri(table), pack_index.KIND, version)


def _truth(ds):
    m = ds.to_table(columns=["split", "n_tokens"], with_row_address=True)
    return (np.asarray(m["split"].to_numpy(zero_copy_only=False)), m["_rowaddr"].to_numpy(),
            np.asarray(m["n_tokens"].to_numpy()))


def _batches(lk, **kw):
    return [(b.pack_ids.tolist(), b.origin) for b in lk.stream("train", batch_packs=2, seed=1, **kw)]


def test_each_packed_version_has_a_side_file_equal_to_the_table_s_index(packed):
    lk, table, v1, v2 = packed
    for v in (v1, v2):
        ds = lk.store.dataset(table, version=v)
        assert os.path.exists(_side(lk, table, v))
        got = pack_index.read(ds, lk.store.table_uri(table), table)
        for a, b in zip(got, _truth(ds)):
            assert a.tolist() == b.tolist()
    assert len(got[1]) == lk.store.dataset(table, version=v2).count_rows() > 0


def test_a_missing_side_file_is_the_quiet_fallback_and_a_rerun_writes_it(packed, tmp_path):
    lk, table, _, v2 = _copy(packed, tmp_path)
    ds = lk.store.dataset(table, version=v2)
    want = _batches(lk)
    os.remove(_side(lk, table, v2))
    assert pack_index.read(ds, lk.store.table_uri(table), table) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no side file (a lake packed before them): no warning, same stream
        assert _batches(lake.open(tmp_path / "lake")) == want
    assert lk.pack(RECIPE, progress=False).version is None  # a re-run that packs nothing writes it again
    assert os.path.exists(_side(lk, table, v2))


def test_a_corrupt_side_file_is_never_trusted(packed, tmp_path):
    lk, table, _, v2 = _copy(packed, tmp_path)
    ds = lk.store.dataset(table, version=v2)
    truth = [a.tolist() for a in _truth(ds)]
    path = _side(lk, table, v2)
    good = open(path, "rb").read()
    detected = 0
    for i in range(0, len(good), 3):  # every third byte flipped, one at a time
        with open(path, "wb") as f:
            f.write(good[:i] + bytes([good[i] ^ 0x5A]) + good[i + 1:])
        try:
            got = pack_index.read(ds, lk.store.table_uri(table), table)
        except pack_index.Unusable:
            detected += 1
            continue
        assert got is not None and [a.tolist() for a in got] == truth  # undetected only where nothing changed
    assert detected > len(good) // 3 // 2
    # values changed but the file well formed (a writer's bug, or bits flipped before the file was written):
    # the digest catches it
    info, t = pack_index.build(ds, table)
    t = t.set_column(1, "n_tokens", pa.array(t["n_tokens"].to_numpy() + 1))
    os.remove(path)
    w = LanceFileWriter(path, t.schema)
    w.write_batch(t)
    w.add_schema_metadata("pack_index", json.dumps(info))
    w.close()
    with pytest.raises(pack_index.Unusable, match="checksum"):
        pack_index.read(ds, lk.store.table_uri(table), table)
    want = _batches(lake.open(packed[0].uri))
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert _batches(lake.open(tmp_path / "lake")) == want  # read from the table instead


def test_a_stale_side_file_is_detected(packed, tmp_path, ingested):
    lk, table, v1, v2 = _copy(packed, tmp_path)
    ds = lk.store.dataset(table, version=v2)
    want = _batches(lake.open(packed[0].uri))
    # version 1's file under version 2's name: another fragment list
    shutil.copyfile(_side(lk, table, v1), _side(lk, table, v2))
    with pytest.raises(pack_index.Unusable, match="stale"):
        pack_index.read(ds, lk.store.table_uri(table), table)
    with pytest.warns(RuntimeWarning, match="stale"):
        assert _batches(lake.open(tmp_path / "lake")) == want
    # the same table at the same version number in a lake packed afresh: other data files (random names)
    shutil.copytree(ingested.uri, tmp_path / "again")
    again = lake.open(tmp_path / "again")
    again.pack(RECIPE, progress=False)
    assert again.entry.tables[table] == v1
    shutil.copyfile(_side(packed[0], table, v1), _side(again, table, v1))
    with pytest.raises(pack_index.Unusable, match="stale"):
        pack_index.read(again.store.dataset(table, version=v1), again.store.table_uri(table), table)


def test_gc_keeps_a_side_file_with_its_version_and_deletes_it_with_it(packed, tmp_path):
    lk, table, v1, v2 = _copy(packed, tmp_path)
    rep = lk.gc(keep_last=100)
    assert rep.deleted_versions == [] and os.path.exists(_side(lk, table, v1)) and os.path.exists(_side(lk, table, v2))
    # restore to before the first pack: the new head pins the table at an empty Lance version
    lk.restore(_before_pack(lk, table))
    lk.gc(keep_last=2)  # kept: the restore and the second pack (pins v2); v1's manifest goes, its side file too
    assert not os.path.exists(_side(lk, table, v1)) and os.path.exists(_side(lk, table, v2))
    got = pack_index.read(lk.store.dataset(table, version=v2), lk.store.table_uri(table), table)
    assert [a.tolist() for a in got] == [a.tolist() for a in _truth(lk.store.dataset(table, version=v2))]
    lk.gc(keep_last=1)  # now v2 goes as well
    assert not os.path.exists(_side(lk, table, v2))
    assert lk.gc(keep_last=1, dry_run=True).bytes_freed == 0  # nothing left behind


def _before_pack(lk, table) -> int:
    return min(e.version for e in lk.log() if table in e.tables) - 1
