"""Shard files are written without an fsync; a crash is told by the boot id in the footer: a file of this boot is
served as is, one of an earlier boot is checked frame by frame against its checksums once (then stamped with this
boot), and a torn or corrupt one is refused, never read; files of the layout before checksums are refused too."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from loaders import shardfile

EARLIER = uuid.uuid4().bytes  # a boot id no kernel of this run has


def _write(path, table, level, boot=None):
    shardfile.write_frames(path, shardfile.Frames(table), level, boot=boot)
    shardfile._INDEXES.clear()  # as a fresh process opens it


def _boot_of(path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-shardfile._FOOTER, os.SEEK_END)
        return f.read(16)


def _offsets(table, level, tmp_path) -> list[int]:
    """Where the frames of ``table``'s shard file lie (read from a twin of this boot: opening the file of an
    earlier boot would verify and stamp it)."""
    twin = tmp_path / "twin.lks"
    _write(twin, table, level)
    with shardfile.ShardFile(twin) as f:
        return f.offsets


def _flip(path, lo: int, hi: int) -> None:
    """Change one byte in the middle of the stored frame at ``lo:hi``, leaving the structure whole."""
    assert hi > lo
    with open(path, "r+b") as f:
        f.seek((lo + hi) // 2)
        b = f.read(1)
        f.seek((lo + hi) // 2)
        f.write(bytes([b[0] ^ 0x5A]))
    shardfile._INDEXES.clear()


@pytest.mark.parametrize("level", [0, 1])
def test_a_file_of_this_boot_carries_its_boot_id_and_is_served(packed, tmp_path, level):
    _, table = packed
    path = tmp_path / "s.lks"
    _write(path, table.slice(0, 6), level)
    assert shardfile.boot_id() is not None and _boot_of(path) == shardfile.boot_id()
    with shardfile.ShardFile(path) as f:
        got = shardfile.read_batch([(f, i) for i in range(f.packs)])
    assert got.equals(shardfile.read_batch([(shardfile.Frames(table.slice(0, 6)), i) for i in range(6)]))


@pytest.mark.parametrize("level", [0, 1])
def test_an_intact_file_of_an_earlier_boot_is_verified_once_then_stamped_with_this_boot(packed, tmp_path, level):
    _, table = packed
    path = tmp_path / "s.lks"
    _write(path, table.slice(0, 6), level, boot=EARLIER)
    assert _boot_of(path) == EARLIER
    with shardfile.ShardFile(path) as f:
        assert f.packs == 6
    assert _boot_of(path) == shardfile.boot_id()  # verified: no process checks it again this boot


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("frame", [0, 1, -1])
def test_a_corrupt_frame_in_a_file_of_an_earlier_boot_is_refused(packed, tmp_path, level, frame):
    _, table = packed
    path = tmp_path / "s.lks"
    _write(path, table.slice(0, 6), level, boot=EARLIER)
    offsets = _offsets(table.slice(0, 6), level, tmp_path)
    j = frame % (len(offsets) - 1)
    _flip(path, offsets[j], offsets[j + 1])
    with pytest.raises(shardfile.TornShard, match="checksum"):
        shardfile.ShardFile(path)
    assert _boot_of(path) == EARLIER  # never stamped


@pytest.mark.parametrize("magic", [b"LKSHARD2", b"LKSHARD3", b"LKSHARD4"])  # earlier layouts
def test_a_file_of_an_earlier_layout_is_refused(packed, tmp_path, magic):
    _, table = packed
    path = tmp_path / "s.lks"
    _write(path, table.slice(0, 3), 0)
    data = path.read_bytes()
    path.write_bytes(magic + data[8:-8] + magic)
    shardfile._INDEXES.clear()
    with pytest.raises(shardfile.TornShard, match="layout"):
        shardfile.ShardFile(path)


def test_without_a_boot_id_files_are_synced_and_served(packed, tmp_path, monkeypatch):
    _, table = packed
    monkeypatch.setattr(shardfile, "BOOT_ID_FILE", str(tmp_path / "no-such-file"))
    monkeypatch.setattr(shardfile, "_BOOT_ID", [])
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    path = tmp_path / "s.lks"
    _write(path, table.slice(0, 3), 0)
    assert synced and _boot_of(path) == shardfile.SYNCED
    with shardfile.ShardFile(path) as f:
        assert np.array_equal(f.sizes, shardfile.Frames(table.slice(0, 3)).sizes)


def _ranges(batch) -> list[tuple[int, int]]:
    return [(b.address, b.address + b.size) for col in batch.columns for b in col.buffers() if b is not None and b.size]


def test_small_columns_kept_between_reads_are_never_handed_out(packed, tmp_path):
    """A process keeps each pack's parsed small columns (``ShardFile.small``); a batch must still own its memory
    (a user may write into its tensors in place), with one pack or several."""
    _, table = packed
    path = tmp_path / "s.lks"
    _write(path, table.slice(0, 6), 0)
    shardfile._SMALL.clear()
    for k in (3, 1, 3, 2):
        with shardfile.ShardFile(path) as f:
            got = shardfile.read_batch([(f, i) for i in range(k)])
        assert got.equals(shardfile.read_batch([(shardfile.Frames(table.slice(0, 6)), i) for i in range(k)]))
        kept = [r for b in shardfile._SMALL.values() for r in _ranges(b[0])]
        assert kept
        assert not [(a, b) for a, b in _ranges(got) for lo, hi in kept if a < hi and lo < b]


def test_kept_small_columns_stay_within_their_bound_and_follow_the_file(packed, tmp_path, monkeypatch):
    _, table = packed
    monkeypatch.setattr(shardfile, "SMALL_BYTES", 1)  # at most one file's at a time
    shardfile._SMALL.clear()
    shardfile._SMALL_HELD[0] = 0
    paths = []
    for s in range(3):
        paths.append(tmp_path / f"s{s}.lks")
        _write(paths[-1], table.slice(2 * s, 2), 0)
    for s, path in enumerate(paths):
        with shardfile.ShardFile(path) as f:
            got = shardfile.read_batch([(f, 0), (f, 1)])
        assert got.equals(shardfile.read_batch([(shardfile.Frames(table.slice(2 * s, 2)), i) for i in range(2)]))
        assert len(shardfile._SMALL) == 1
    # the same name refetched with other packs: another index, so the packs kept for the old file are not served
    _write(paths[2], table.slice(0, 2), 0)
    with shardfile.ShardFile(paths[2]) as f:
        got = shardfile.read_batch([(f, 0), (f, 1)])
    assert got.equals(shardfile.read_batch([(shardfile.Frames(table.slice(0, 2)), i) for i in range(2)]))
    assert shardfile._SMALL_HELD[0] == sum(b[0].nbytes for b in shardfile._SMALL.values())


@pytest.mark.parametrize("share", [0.0, 0.02, shardfile.BIG_SHARE])
def test_a_batch_gathered_from_a_shard_equals_the_one_built_from_its_rows(packed, tmp_path, monkeypatch, share):
    """``Packs``: the node cache builds a batch straight from a shard (small columns kept per process, big ones
    read from their frames into the batch's buffer); it must be the batch of those rows of the table, from a
    file and from frames in memory. With every flat column in a frame of its own (share 0) the columns the build
    reads are there too, and it says it cannot (the cache then joins the packs as a table)."""
    import torch

    from loaders.batch import gathered_batch, packed_batch

    _, table = packed
    monkeypatch.setattr(shardfile, "BIG_SHARE", share)
    shard = table.slice(0, 6)
    path = tmp_path / "s.lks"
    _write(path, shard, 0)
    shardfile._SMALL.clear()
    picks = [4, 0, 5, 2]
    want = packed_batch(shard.take(picks))
    with shardfile.ShardFile(path) as f:
        for src in (f, shardfile.Frames(shard)):
            packs = src.rows()
            assert set(packs.big) == {shard.schema[c].name for c in shardfile._big(shard)}
            if not packs.gatherable:
                assert share == 0.0
                continue
            got = gathered_batch([(packs, i, 1) for i in picks])
            assert got.origin == want.origin and got.max_seqlen == want.max_seqlen
            for name, t in want._tensors().items():
                assert torch.equal(getattr(got, name), t), name
