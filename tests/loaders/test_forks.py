"""DataLoader workers however they are run: fork (LeRobot's default), spawn, forkserver, persistent or not.

Lance does not survive fork(): a worker forked from this process (which has used Lance) must read without it. And the
epoch, seed and resume position must reach workers that a DataLoader keeps alive across epochs. Each test starts
its workers once per DataLoader where it can (spawning costs seconds here); pytest-timeout guards against hangs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loaders import LeRobotStyleDataset, forks

TOP, WRIST = "observation.images.top", "observation.images.wrist"


def _ids(batches) -> list[list[int]]:
    return [b.pack_ids.tolist() for b in batches]


def _flat(batches) -> list[int]:
    return [p for b in _ids(batches) for p in b]


def test_this_process_may_use_lance_and_its_forks_may_not(packed):
    import os

    lk, _ = packed
    lk.stream("train").read(np.array([0]))  # Lance's runtime is running here now
    assert not forks.lance_forbidden()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(w, b"1" if forks.lance_forbidden() else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"


@pytest.mark.timeout(900)
def test_forked_persistent_workers_read_every_pack_once_per_epoch_for_ten_epochs(packed):
    lk, table = packed
    want = [_ids(lk.stream("train", seed=4, batch_packs=2, epoch=e)) for e in range(10)]
    loader = lk.stream("train", seed=4, batch_packs=2)
    dl = DataLoader(loader, batch_size=None, num_workers=2, multiprocessing_context="fork", persistent_workers=True)
    packs = loader.packs
    for e in range(10):  # no set_epoch: iterating again goes on to the next epoch, as the loader does alone
        got = _ids(dl)
        assert got == want[e], e
        assert sorted(p for b in got for p in b) == sorted(p for b in want[0] for p in b) and \
            len([p for b in got for p in b]) == packs
    assert loader.state_dict()["epoch"] == 10 and loader.state_dict()["consumed"] == 0
    assert want[0] != want[1]  # epochs are reshuffled


@pytest.mark.timeout(600)
def test_forked_workers_restarted_every_epoch_read_the_local_copy(packed, tmp_path):
    lk, _ = packed
    want = [_ids(lk.stream("train", seed=4, batch_packs=2, epoch=e)) for e in range(10)]
    loader = lk.stream("train", seed=4, batch_packs=2, cache_dir=tmp_path, progress=False)
    dl = DataLoader(loader, batch_size=None, num_workers=2, multiprocessing_context="fork", persistent_workers=False)
    for e in range(10):
        loader.set_epoch(e)
        assert _ids(dl) == want[e], e


@pytest.mark.timeout(900)
@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_epochs_through_a_persistent_user_dataloader_equal_the_stream_without_workers(packed, context):
    lk, _ = packed
    world = dict(rank=1, world_size=2)
    want = [_ids(lk.stream("train", seed=9, batch_packs=2, epoch=e, **world)) for e in range(3)]
    loader = lk.stream("train", seed=9, batch_packs=2, **world)
    dl = DataLoader(loader, batch_size=None, num_workers=2, multiprocessing_context=context, persistent_workers=True,
                    prefetch_factor=1)
    for e in range(3):
        loader.set_epoch(e)
        assert _ids(dl) == want[e], e
    # and resume mid-epoch through the same workers: the rest of epoch 1 after 3 batches of this rank
    state = lk.stream("train", seed=9, batch_packs=2, **world)
    state.set_epoch(1)
    it = iter(state)
    for _ in range(3):
        next(it)
    loader.load_state_dict(state.state_dict())
    assert _ids(dl) == want[1][3:]


@pytest.mark.timeout(900)
def test_this_process_reads_the_first_batches_while_its_own_workers_start(packed, monkeypatch):
    """The stream's own workers deal the epoch from MAIN_FIRST steps on while this process reads the first
    batches itself: the same stream as without workers, state_dict exact on either side of the handover; later
    epochs (workers running) come from the workers alone."""
    import os

    from loaders import loader as L

    lk, _ = packed
    monkeypatch.setattr(L, "MAIN_FIRST", 3)
    here = []  # batches built in this process (a forked worker appends to its own copy)
    build = L.Loader._batch
    monkeypatch.setattr(L.Loader, "_batch", lambda self, t, pin: here.append(os.getpid()) or build(self, t, pin))
    kw = dict(seed=6, batch_packs=1, rank=1, world_size=2)
    want = [_ids(lk.stream("train", epoch=e, **kw)) for e in range(2)]
    assert len(want[0]) > 3 + 2
    here.clear()
    loader = lk.stream("train", num_workers=2, **kw)
    got = [_ids(loader)]
    assert len(here) == 3
    got.append(_ids(loader))
    assert len(here) == 3 and got == want
    for stop in (2, 5):  # inside the first batches / after the workers took over
        fresh, part = lk.stream("train", num_workers=2, **kw), []
        for b in fresh:
            part.append(b)
            if len(part) == stop:
                state = fresh.state_dict()
                break
        assert state["consumed"] == stop * 2 * 1
        rest = lk.stream("train", **{**kw, "seed": 0})
        rest.load_state_dict(state)
        assert _ids(part) + _ids(rest) == want[0]
        for h in fresh._helpers:
            h.close()
    monkeypatch.setattr(L, "MAIN_FIRST", 100)  # the whole plan read here (its last step short): workers get none
    whole = lk.stream("train", num_workers=2, **kw)
    assert _ids(whole) == want[0] and loader.packs % 2 == 1
    for h in whole._helpers:
        h.close()


@pytest.mark.timeout(900)
def test_the_streams_own_workers_start_once_and_resume_exactly(packed):
    lk, _ = packed
    want = [_ids(lk.stream("train", seed=2, batch_packs=2, epoch=e)) for e in range(3)]
    loader = lk.stream("train", seed=2, batch_packs=2, num_workers=2)  # persistent, fork + Lance helpers
    got = [_ids(loader)]
    procs = list(loader._workers._iterator._workers)
    # each worker read through the helper started for it beside the fork (none started one of its own)
    helpers = [h._proc for h in loader._helpers]
    assert len(helpers) == 2 and all(h.poll() is None for h in helpers)
    assert all(not Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split() for p in procs)
    got += [_ids(loader) for _ in range(2)]
    assert got == want
    # the same worker processes served all three epochs
    assert loader._workers._iterator._workers == procs and all(p.is_alive() for p in procs)

    part, state = [], None
    for b in loader:  # epoch 3: stop after 2 batches
        part.append(b)
        if len(part) == 2:
            state = loader.state_dict()
            break
    rest = lk.stream("train", seed=0, batch_packs=2, num_workers=2, multiprocessing_context="forkserver")
    rest.load_state_dict(state)
    assert _ids(part) + _ids(rest) == _ids(lk.stream("train", seed=2, batch_packs=2, epoch=3))
    for h in loader._helpers:  # stopped with the loader (its workers hold their pipes: killed, not awaited)
        h.close()
    assert all(h.wait(timeout=10) is not None for h in helpers)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lerobot_style_dataset_under_forked_persistent_workers_serves_every_frame_once_per_epoch(ingested, tmp_path):
    import shutil

    import lake

    shutil.copytree(ingested.uri, tmp_path / "lake")
    lk = lake.open(tmp_path / "lake", create=False)
    lk.decode_videos(TOP, progress=False)  # top from decoded frames, wrist decoded from video: both without Lance
    ds = LeRobotStyleDataset(lk, delta_timestamps={TOP: [-0.1, 0.0], "action": [0.0, 0.1]})
    dl = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, multiprocessing_context="fork",
                    persistent_workers=True, generator=torch.Generator().manual_seed(0))
    check = {}
    for e in range(10):
        seen = []
        for batch in dl:
            seen += batch["index"].tolist()
            if e == 0 and not check:
                check = {int(i): (batch[TOP][k], batch[WRIST][k]) for k, i in enumerate(batch["index"][:3].tolist())}
        assert sorted(seen) == list(range(len(ds))), e
    for i, (top, wrist) in check.items():  # what forked workers read equals what this process reads
        item = ds[i]
        assert torch.equal(item[TOP], top) and torch.equal(item[WRIST], wrist)


def test_the_lance_helper_keeps_freed_memory_unless_the_user_chose(monkeypatch):
    """The helper process's glibc keeps freed buffers for the next read (``forks._helper_env``); a user's own
    settings of the same variables win."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    env = forks._helper_env()
    assert int(env["MALLOC_TRIM_THRESHOLD_"]) >= 2**30 and env["MALLOC_MMAP_THRESHOLD_"] == "65536"
    helper = forks.LanceHelper()
    try:
        proc = helper._start()
        with open(f"/proc/{proc.pid}/environ", "rb") as f:
            seen = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        assert seen[b"MALLOC_MMAP_THRESHOLD_"] == b"65536" and int(seen[b"MALLOC_TRIM_THRESHOLD_"]) >= 2**30
    finally:
        helper.close()
