"""Two robots, one SFT run: a GR00T-style source (modality.json, 4-d state, 3-d action) and PushT (2-d) train
together from one mixture pack; the loss is reported per embodiment and falls for both."""

from __future__ import annotations

import shutil

import numpy as np
import torch

import lake
from packers import Recipe
from training.sft import SFTConfig, train

TINY = {"width": 32, "depth": 1, "heads": 2, "head_dim": 16}


def test_two_embodiments_train_together_and_both_losses_fall(two_robots, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(two_robots.uri, dst)
    lk = lake.open(dst)
    rep = lk.pack(Recipe(image_size=(32, 32), action_horizon=8, token_budget=512, name="robots"),
                  mixture={"pusht_v3": 1.0, "groot": 1.0}, progress=False)
    torch.manual_seed(0)
    out = train(SFTConfig(lake=lk.uri, recipe=rep.recipe_hash, out_dir=str(tmp_path / "run"), model=TINY, warmup=2,
                          log_every=1000, steps=60, lr=3e-3, ckpt_every=1000), progress=False)
    by = out["losses_by_embodiment"]
    assert set(by) == {"pusht", "gr1_sim"}
    for robot, losses in by.items():
        assert len(losses) >= 20, (robot, len(losses))
        first, last = np.mean(losses[:8]), np.mean(losses[-8:])
        assert last < 0.8 * first, (robot, first, last)
