"""Whole data files read with Lance's file reader give exactly the rows and columns an allow-list scan gives, and
are used only where they can (one data file per fragment, the dataset's own schema, most rows needed)."""

from __future__ import annotations

import lance
import numpy as np
import pyarrow as pa
import pytest
from lance.dataset import serialize_row_addrs

from loaders import fragfiles
from packed_tables import LAYOUT, synthetic_packs


@pytest.fixture
def ds(tmp_path):
    table = synthetic_packs(LAYOUT, episodes=14, seed=2)
    return lance.write_dataset(table, tmp_path / "t.lance", max_rows_per_file=7)


def _addrs(ds) -> np.ndarray:
    return ds.to_table(columns=["pack_id"], with_row_address=True)["_rowaddr"].to_numpy()


def _scan(ds, addrs, columns) -> pa.Table:
    return ds.scanner(columns=columns, scan_in_order=True,
                      row_addr_allowlist=serialize_row_addrs(np.asarray(addrs).tolist())).to_table()


def _whole(ds, addrs, columns, tmp_path):
    got = fragfiles.fetch(ds, addrs, columns, ds.uri, spool=tmp_path / "spool")
    got = None if got is None else pa.Table.from_batches(list(got), pa.schema([ds.schema.field(c) for c in columns]))
    assert not (tmp_path / "spool").exists() or not list((tmp_path / "spool").iterdir())  # spool files removed
    return got


@pytest.mark.parametrize("pick", ["all", "most", "every other row"])
def test_whole_files_read_the_rows_a_scan_reads(ds, tmp_path, pick):
    addrs = _addrs(ds)
    frag = addrs >> np.uint64(32)
    if pick == "most":  # the first 5 rows of each 7-row fragment
        addrs = np.concatenate([addrs[frag == f][:5] for f in np.unique(frag)])
    elif pick == "every other row":  # 4 of 7 (and of the shorter last fragment, half rounded up)
        addrs = np.concatenate([addrs[frag == f][::2] for f in np.unique(frag)])
    columns = [c for c in ds.schema.names if c != "split"]
    files = fragfiles.STATS["files"]
    got = _whole(ds, addrs, columns, tmp_path)
    assert got is not None and got.equals(_scan(ds, addrs, columns))
    assert fragfiles.STATS["files"] - files == len(np.unique(frag))


def test_deleted_rows_are_skipped_as_the_scan_skips_them(ds, tmp_path):
    ds.delete("pack_id % 3 = 0")
    ds = lance.dataset(ds.uri)
    addrs = _addrs(ds)
    got = _whole(ds, addrs, ds.schema.names, tmp_path)
    assert got is not None and got.equals(_scan(ds, addrs, ds.schema.names))
    assert got.num_rows == ds.count_rows() and all(p % 3 for p in got["pack_id"].to_pylist())


def test_a_read_of_few_rows_or_an_evolved_table_is_left_to_the_scan(ds, tmp_path):
    addrs = _addrs(ds)
    frag = addrs >> np.uint64(32)
    few = np.concatenate([addrs[frag == f][:2] for f in np.unique(frag)])  # 2 of 7: under MOST
    assert _whole(ds, few, ["pack_id"], tmp_path) is None
    assert fragfiles.plan(ds, addrs[::-1]) is None  # not in table order
    ds.add_columns({"extra": "pack_id * 2"})  # a second data file per fragment
    assert _whole(lance.dataset(ds.uri), addrs, ["pack_id", "extra"], tmp_path) is None


def test_a_file_written_with_another_schema_is_left_to_the_scan(ds, tmp_path):
    ds.drop_columns(["max_seqlen"])  # the data files still hold it; only the dataset's schema maps them
    ds = lance.dataset(ds.uri)
    assert len(ds.get_fragments()[0].metadata.files) == 1
    addrs, before = _addrs(ds), fragfiles.STATS["files"]
    got = _whole(ds, addrs, ["pack_id", "n_tokens"], tmp_path)  # the first file is seen not to match: all scanned
    assert got.equals(_scan(ds, addrs, ["pack_id", "n_tokens"])) and fragfiles.STATS["files"] - before == 1
