"""The reference SFT recipe on a real packed lake: loss falls, resume is exact, checkpoints carry lineage."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import lake
from packers import Recipe
from training import checkpoint
from training.sft import SFTConfig, train

TINY = {"width": 32, "depth": 1, "heads": 2, "head_dim": 16}


@pytest.fixture(scope="module")
def packed_lake(tmp_path_factory, ingested):
    dst = tmp_path_factory.mktemp("sft") / "lake"
    shutil.copytree(ingested.uri, dst)
    lk = lake.open(dst)
    lk.pack(Recipe(image_size=(32, 32), action_horizon=8, token_budget=512, name="tiny"), progress=False)
    lk.tag("sft-data")
    return lk


def _cfg(lk, out, **kw):
    return SFTConfig(lake=lk.uri, out_dir=str(out), model=TINY, warmup=2, log_every=1000, **kw)


def _eval_loss(model, lk) -> float:
    """Loss on fixed batches with fixed noise and times: comparable across models."""
    batches = [b for _, b in zip(range(4), lk.stream("train", shuffle=False))]
    with torch.no_grad():
        return float(np.mean([model.loss(b, torch.Generator().manual_seed(i)).item() for i, b in enumerate(batches)]))


def test_loss_falls(packed_lake, tmp_path):
    from training.vla import make_vla

    out = train(_cfg(packed_lake, tmp_path, steps=60, lr=3e-3, ckpt_every=1000), progress=False)
    trained, ck = checkpoint.load_module(out["checkpoint"])
    torch.manual_seed(0)  # the recipe's initialisation
    initial = make_vla(**ck["config"])
    before, after = _eval_loss(initial, packed_lake), _eval_loss(trained, packed_lake)
    assert after < 0.6 * before, (before, after)
    assert len(out["losses"]) == 60 and (tmp_path / "loss.png").exists()


def test_resume_continues_exactly(packed_lake, tmp_path):
    straight = train(_cfg(packed_lake, tmp_path / "a", steps=6, ckpt_every=1000), progress=False)
    train(_cfg(packed_lake, tmp_path / "b", steps=3, ckpt_every=1000), progress=False)
    resumed = train(_cfg(packed_lake, tmp_path / "b", steps=6, ckpt_every=1000), progress=False)
    assert resumed["losses"] == straight["losses"]
    a, b = checkpoint.load(straight["checkpoint"]), checkpoint.load(resumed["checkpoint"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["loader"] == b["loader"]


def test_checkpoint_records_lineage_and_acts(packed_lake, tmp_path):
    out = train(_cfg(packed_lake, tmp_path, steps=2, version="sft-data"), progress=False)
    ck = checkpoint.load(out["checkpoint"])
    row = packed_lake.table("packings").to_table().to_pylist()[-1]
    assert ck["lineage"]["lake_version"] == packed_lake.checkout("sft-data").version
    assert ck["lineage"]["lake_tag"] == "sft-data" and ck["lineage"]["recipe_hash"] == row["recipe_hash"]
    assert ck["lineage"]["packed_table"] == row["table"]
    policy, _ = checkpoint.load_policy(out["checkpoint"])
    obs = {"observation.state": np.array([[100.0, 200.0], [300.0, 50.0]], np.float32),
           "observation.images.top": np.zeros((2, 96, 96, 3), np.uint8),
           "observation.images.wrist": np.zeros((2, 64, 64, 3), np.uint8)}
    policy.reset(2)
    a = policy.act(obs, ["push the T into the target"] * 2)
    assert a.shape == (2, 2) and np.isfinite(a).all()
    b = policy.act(obs, ["push the T into the target"] * 2)  # the next action of the queued chunk
    assert b.shape == (2, 2)


def test_every_sft_config_loads():
    configs = glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "sft", "*.yaml"))
    assert configs
    for path in configs:
        assert open(path).readline().startswith("# python -m training.sft")
        SFTConfig.load(path)
    with pytest.raises(ValueError, match="unknown config keys"):
        SFTConfig.load(None, ["stepz=3"])


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo(packed_lake, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m",
           "training.sft", f"lake={packed_lake.uri}", f"out_dir={tmp_path}", "steps=3", f"model={TINY}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    ck = checkpoint.load(tmp_path / "last.pt")
    assert ck["step"] == 3 and ck["loader"]["world_size"] == 2
