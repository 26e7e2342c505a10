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


def test_a_file_of_the_layout_before_checksums_is_refused(packed, tmp_path):
    _, table = packed
    path = tmp_path / "s.lks"
    _write(path, table.slice(0, 3), 0)
    data = path.read_bytes()
    path.write_bytes(b"LKSHARD2" + data[8:-8] + b"LKSHARD2")
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
