"""What ``lk.pack()`` writes streams as the contract says: one sample per frame, each exactly once."""

from __future__ import annotations

import shutil

import pytest

import lake


@pytest.fixture(scope="module")
def packed_pusht(ingested, tmp_path_factory):
    """A copy of the ingested PushT lake, packed with the default recipe."""
    path = tmp_path_factory.mktemp("packed_pusht") / "lake"
    shutil.copytree(ingested.uri, path)
    lk = lake.open(path, create=False)
    rep = lk.pack()
    assert rep.packs > 0 and rep.samples == sum(lk.episodes()["length"].to_pylist())
    return lk


def test_every_frame_of_the_split_is_one_sample_streamed_exactly_once_across_ranks(packed_pusht):
    lk = packed_pusht
    layout = lk.stream("train").source.layout
    for split in sorted(set(lk.episodes()["split"].to_pylist())):
        want = sorted((e["episode_id"], f) for e in lk.episodes(split=split).to_pylist() for f in range(e["length"]))
        got = []
        for rank in range(2):
            for b in lk.stream(split, batch_packs=2, rank=rank, world_size=2):
                got += b.origin
                assert b.n_tokens == int(b.cu_seqlens[-1]) and len(b.origin) == len(b.cu_seqlens) - 1
                assert b.image_patches.shape[1] == layout["token_dim"] and b.actions.shape[1] == layout["action_dim"]
                assert b.actions.shape[0] == len(b.origin) * len(layout["action_offsets"])
        assert sorted(got) == want, split
