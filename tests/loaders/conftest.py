"""Fixtures for the loader tests: a lake holding a synthetic packed table (see ``packed_tables``)."""

from __future__ import annotations

import pytest

from packed_tables import LAYOUT, synthetic_packs, write_packed_table


@pytest.fixture(scope="session")
def packed(tmp_path_factory):
    """(lake with one synthetic packed table 'packed_test' in 3 fragments, that table as Arrow)."""
    import lake

    lk = lake.open(tmp_path_factory.mktemp("packed") / "lake")
    table = synthetic_packs(LAYOUT, episodes=24, seed=0)
    write_packed_table(lk, table, rows_per_file=max(1, table.num_rows // 3))
    return lk, table
