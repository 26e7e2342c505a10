"""The packed table as a Ray Data dataset of pack rows, for Ray Train (``streaming_split`` per worker).

Ray owns the order and the split between consumers here (``streaming_split`` hands every row to exactly one
consumer per epoch); ``packed_batches`` turns a consumer's Arrow batches into the same ``PackedBatch`` that
``stream`` yields, without copying the payloads.
"""

from __future__ import annotations

import numpy as np

from .packings import resolve


def ray_dataset(lk, split: str, recipe=None, version=None, columns: list[str] | None = None, shuffle: bool = False,
                seed: int = 0, epoch: int = 0, **read_options):
    """``ray.data.Dataset`` of the pack rows of ``split`` (packed table of ``recipe`` at lake ``version``).

    Reads the pinned Lance version with ``ray.data.read_lance``; ``read_options`` go to it (e.g.
    ``override_num_blocks``, ``concurrency``). ``shuffle`` permutes rows with a seed made from (seed, epoch).
    Raises PackedTableNotFound when there is nothing packed.
    """
    import ray.data

    src = resolve(lk, recipe, version)
    quoted = split.replace("'", "''")
    ds = ray.data.read_lance(src.table_uri, version=src.lance_version, columns=columns, filter=f"split = '{quoted}'",
                             storage_options=src.storage_options, **read_options)
    if shuffle:
        ds = ds.random_shuffle(seed=int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return ds


def packed_batches(data, batch_packs: int = 1, layout: dict | None = None, **iter_options):
    """Iterate ``PackedBatch`` es of ``batch_packs`` packs from a Ray ``Dataset`` / ``DataIterator`` (a shard
    from ``streaming_split``). ``layout`` gives payload widths (default: inferred from token counts)."""
    from .batch import packed_batch

    for table in data.iter_batches(batch_size=batch_packs, batch_format="pyarrow", **iter_options):
        if table.num_rows:
            yield packed_batch(table, layout)
