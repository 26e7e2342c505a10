"""The packed table as a Ray Data dataset: streaming_split hands every pack to exactly one consumer."""

from __future__ import annotations

import pytest

import loaders


@pytest.fixture(scope="module")
def consumer_cls(ray_session):
    import ray

    @ray.remote(num_cpus=0)  # streaming_split deadlocks on a 2-CPU Ray when consumers hold CPUs
    class Consumer:
        def consume(self, shard, batch_packs):
            out = []
            for b in loaders.packed_batches(shard, batch_packs=batch_packs):
                out.append((b.pack_ids.tolist(), b.n_tokens, int(b.cu_seqlens[-1]), b.image_patches.shape[1],
                            len(b.origin)))
            return out

    return Consumer


def test_streaming_split_delivers_each_pack_of_the_split_to_exactly_one_consumer(packed, consumer_cls):
    import ray

    lk, table = packed
    want = sorted(p for p, s in zip(table["pack_id"].to_pylist(), table["split"].to_pylist()) if s == "train")
    ds = loaders.ray_dataset(lk, "train", shuffle=True, seed=1)
    shards = ds.streaming_split(2, equal=False)
    consumers = [consumer_cls.remote() for _ in shards]
    results = ray.get([c.consume.remote(s, 2) for c, s in zip(consumers, shards)])
    got = [p for r in results for ids, *_ in r for p in ids]
    assert sorted(got) == want and len(got) == len(set(got))
    for r in results:
        for ids, n_tokens, cu_end, width, n_samples in r:
            assert n_tokens == cu_end and width == 768 and 1 <= len(ids) <= 2 and n_samples > 0


def test_ray_dataset_reads_the_pinned_version_and_only_the_split(packed):
    lk, table = packed
    rows = loaders.ray_dataset(lk, "val", version=lk.version, columns=["pack_id", "split"]).take_all()
    assert {r["split"] for r in rows} == {"val"}
    assert sorted(r["pack_id"] for r in rows) == sorted(
        p for p, s in zip(table["pack_id"].to_pylist(), table["split"].to_pylist()) if s == "val")
