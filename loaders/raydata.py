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


def packed_batches(data, batch_packs: int = 1, layout: dict | None = None, *, split: str | None = None,
                   seed: int = 0, epoch: int | None = None, **iter_options):
    """Iterate ``PackedBatch`` es of ``batch_packs`` packs from a Ray ``Dataset`` / ``DataIterator`` (a shard
    from ``streaming_split``). ``layout`` gives payload widths (default: inferred from token counts).
    A table packed with a per-epoch mixture draw (``layout["mixture_draw"]``) needs ``split``, ``seed`` and
    ``epoch``: each batch keeps that epoch's draw (``loaders.mixture_epoch``); ValueError without them."""
    from packers.schema import layout_of

    from . import mixture_epoch
    from .batch import packed_batch

    for table in data.iter_batches(batch_size=batch_packs, batch_format="pyarrow", **iter_options):
        if not table.num_rows:
            continue
        lay = layout if layout is not None else layout_of(table.schema)
        if not lay.get("mixture_draw"):
            yield packed_batch(table, layout)
            continue
        if split is None or epoch is None:
            raise ValueError("this packed table is a per-epoch mixture pool: pass split=, seed= and epoch= to "
                             "packed_batches so each epoch keeps its own draw")
        yield from mixture_epoch.drawn([packed_batch(table, lay)], lay, split, seed, epoch)
