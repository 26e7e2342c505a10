"""Streaming memory is flat in the table's size: bounded prefetch, nothing accumulated."""

from __future__ import annotations

import gc

import numpy as np
import pyarrow as pa
import pytest

import lake
from packed_tables import LAYOUT, synthetic_packs, write_packed_table


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def _peak_growth(loader) -> tuple[int, int]:
    """(peak RSS above the RSS before, packs streamed) while iterating ``loader`` once."""
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset this process's peak RSS (Linux)
        f.write("5")
    streamed = sum(len(b.pack_ids) for b in loader)
    return _status("VmHWM") - before, streamed


@pytest.mark.parametrize("shuffle", ["random", "blocks:16", "none"])  # takes; scans of blocks; one scan of all
def test_peak_memory_does_not_grow_with_the_table(tmp_path, monkeypatch, shuffle):
    from loaders import reads

    # a uniform shuffle reads its batches in groups of up to GROUP_BYTES (GROUPS_AHEAD + 1 in memory): scaled down
    # with this small table (the default, 32 MiB, is over a quarter of its 10x copy), the bound it sets is checked
    monkeypatch.setattr(reads, "GROUP_BYTES", 256 << 10)
    base = synthetic_packs(LAYOUT, episodes=24, seed=4)  # ~12 MB of packs
    n = base.num_rows
    growth = {}
    for copies in (1, 20):  # 20x: a fixed ~20 MB of Lance scan buffers is small next to the epoch's packs
        lk = lake.open(tmp_path / f"x{copies}")
        table = pa.concat_tables([base.set_column(0, "pack_id", pa.array(np.arange(c * n, (c + 1) * n), pa.int64()))
                                  for c in range(copies)])
        write_packed_table(lk, table, rows_per_file=n)
        del table
        growth[copies] = _peak_growth(lk.stream("train", batch_packs=2, prefetch=2, shuffle=shuffle))
    (g1, s1), (g20, s20) = growth[1], growth[20]
    assert s20 == 20 * s1
    # flat: 20x the data (~250 MB), the same peak up to 16 MiB of slack for the allocator and Lance's per-file
    # metadata cache (10 files here instead of 1)
    assert g20 <= 1.1 * g1 + (16 << 20), growth
    assert g20 < 0.25 * 20 * base.nbytes * s1 / n, growth  # far below holding the epoch's packs
