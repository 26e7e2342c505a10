"""The loader inside torch DataLoaders: its own workers (forkserver, persistent) and spawned ones of the user's.

Spawning a worker costs seconds here (each imports torch and Lance), so the fast test starts one DataLoader;
the user-built DataLoader variant is marked slow.
"""

from __future__ import annotations

import pytest
import torch


def _ids(batches) -> list[list[int]]:
    return [b.pack_ids.tolist() for b in batches]


def _check_origin(batch, table):
    rows = table.filter(torch.isin(torch.as_tensor(table["pack_id"].to_numpy()), batch.pack_ids).numpy())
    assert sorted(batch.origin) == sorted(zip(rows["origin_episode"].combine_chunks().flatten().to_pylist(),
                                              rows["origin_frame"].combine_chunks().flatten().to_pylist()))


@pytest.mark.parametrize("shuffle", ["random", "blocks:16"])  # takes; and scans of runs inside each worker
def test_spawned_workers_read_their_shares_in_rank_order_and_state_dict_stays_exact(packed, shuffle):
    lk, table = packed
    want = _ids(lk.stream("train", seed=11, batch_packs=2, rank=1, world_size=2, shuffle=shuffle))

    # stream(num_workers=2) runs a DataLoader (spawn) over the loader; each worker opens the table itself
    loader = lk.stream("train", seed=11, batch_packs=2, rank=1, world_size=2, num_workers=2, prefetch=1,
                       shuffle=shuffle)
    got, state = [], None
    for b in loader:
        got.append(b)
        if len(got) == 2:
            state = loader.state_dict()
    assert _ids(got) == want  # worker k read batches k, k+2, ...; the DataLoader gave them back in order
    _check_origin(got[-1], table)
    assert got[0].image_patches.shape[1] == 768 and got[0].cu_seqlens.dtype == torch.int32

    assert state["consumed"] == 2 * 2 * 2
    rest = lk.stream("train", seed=0, batch_packs=2, rank=1, world_size=2, shuffle=shuffle)  # resume, no workers
    rest.load_state_dict(state)
    assert _ids(got[:2]) + _ids(rest) == want


@pytest.mark.slow
def test_the_loader_is_an_iterable_dataset_for_a_user_built_dataloader(packed):
    lk, table = packed
    want = _ids(lk.stream("train", seed=11, batch_packs=2, rank=0, world_size=2))
    loader = lk.stream("train", seed=11, batch_packs=2, rank=0, world_size=2)
    assert isinstance(loader, torch.utils.data.IterableDataset)
    dl = torch.utils.data.DataLoader(loader, batch_size=None, num_workers=3, multiprocessing_context="spawn")
    got = list(dl)
    assert _ids(got) == want and len(dl) == len(want)
    _check_origin(got[0], table)
