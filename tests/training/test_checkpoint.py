"""Checkpoints hold tensors and JSON only: weights and resume state round-trip exactly, factories are chosen
by registered name, and a hostile file makes ``lake eval`` fail with one line having run nothing."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import training
from training import checkpoint
from training.checkpoint import CheckpointError
from training.factories import FACTORIES, UnknownFactory
from training.rl.policy import FACTORY, build_policy

ROOT = Path(__file__).resolve().parents[2]
CFG = {"state_features": [["observation.state", 2, [0.0, 0.0], [512.0, 512.0]]], "action_low": [0.0, 0.0],
       "action_high": [512.0, 512.0], "image_feature": None, "image_size": 24, "hidden": 16, "init_log_std": -0.5}


def _trained():
    """A policy and its AdamW after three steps (so the optimizer holds moments and int-keyed state)."""
    torch.manual_seed(0)
    p = build_policy(**CFG)
    opt = torch.optim.AdamW(p.parameters(), lr=1e-2)
    obs = {"observation.state": torch.rand(8, 2) * 512}
    for _ in range(3):
        logp, _, value = p.evaluate_actions(obs, torch.rand(8, 2))
        opt.zero_grad()
        (value.pow(2).mean() - logp.mean()).backward()
        opt.step()
    return p, opt


def _step(p, opt):
    obs = {"observation.state": torch.linspace(0, 512, 8).reshape(4, 2)}
    logp, _, value = p.evaluate_actions(obs, torch.zeros(4, 2))
    opt.zero_grad()
    (value.pow(2).mean() - logp.mean()).backward()
    opt.step()


def test_weights_and_resume_state_round_trip_exactly(tmp_path):
    p, opt = _trained()
    loader = {"epoch": 2, "consumed": 17, "seed": 5, "shuffle": "py1b", "segment_start": None}
    path = checkpoint.save(tmp_path / "c.pt", p, factory=FACTORY, config=CFG, step=3, lineage={"lake_version": 4},
                           optimizer=opt.state_dict(), rng=torch.get_rng_state(), loader=loader,
                           losses=[0.5, 0.25], stats=np.arange(6, dtype=np.float32).reshape(2, 3))
    ck = checkpoint.load(path)
    assert (ck["factory"], ck["config"], ck["step"], ck["lineage"], ck["loader"], ck["losses"]) == \
        (FACTORY, CFG, 3, {"lake_version": 4}, loader, [0.5, 0.25])
    want = p.state_dict()
    assert list(ck["state_dict"]) == list(want) and all(torch.equal(ck["state_dict"][k], want[k]) for k in want)
    saved = opt.state_dict()
    assert ck["optimizer"]["param_groups"] == saved["param_groups"]  # betas stay a tuple, params stay ints
    assert list(ck["optimizer"]["state"]) == list(saved["state"])  # int keys, in order
    for i, st in saved["state"].items():
        assert all(torch.equal(ck["optimizer"]["state"][i][k], v) for k, v in st.items())
    assert torch.equal(ck["rng"], torch.get_rng_state())
    np.testing.assert_array_equal(ck["stats"], np.arange(6, dtype=np.float32).reshape(2, 3))
    # resuming from the file continues exactly as the original would have
    q, _ = checkpoint.load_module(path)
    q.train()
    opt_q = torch.optim.AdamW(q.parameters(), lr=1e-2)
    opt_q.load_state_dict(ck["optimizer"])
    _step(p, opt)
    _step(q, opt_q)
    assert all(torch.equal(a, b) for a, b in zip(p.state_dict().values(), q.state_dict().values()))


def test_the_header_reads_without_tensors_and_names_the_factory(tmp_path):
    p, _ = _trained()
    path = checkpoint.save(tmp_path / "c.pt", p, factory=FACTORY, config=CFG, step=7)
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        assert set(f.keys()) == {f"state_dict/{k}" for k in p.state_dict()}  # the file is tensors + JSON only
    head = checkpoint.read_header(path)
    assert head["factory"] == FACTORY and head["step"] == 7 and head["config"] == CFG


def test_save_refuses_module_paths_and_values_the_format_cannot_hold(tmp_path):
    p, _ = _trained()
    with pytest.raises(ValueError, match="registered name"):
        checkpoint.save(tmp_path / "c.pt", p, factory="training.rl.policy:build_policy", config=CFG)
    with pytest.raises(CheckpointError, match="cannot store a object at extra"):
        checkpoint.save(tmp_path / "c.pt", p, factory=FACTORY, config=CFG, extra=object())
    assert not (tmp_path / "c.pt").exists() and not list(tmp_path.iterdir())  # no temp file left behind


def test_users_register_their_own_factories(tmp_path):
    calls = []

    def make_mine(**config):
        calls.append(config)
        return build_policy(**config)

    p, _ = _trained()
    path = checkpoint.save(tmp_path / "mine.pt", p, factory="mine", config=CFG)
    with pytest.raises(UnknownFactory, match=rf"{path}: model factory 'mine' is not registered"):
        checkpoint.load_module(path)
    assert not calls
    try:
        training.register_factory("mine", make_mine)
        q, ck = checkpoint.load_module(path)
        assert calls == [CFG] and torch.equal(q.log_std, p.log_std)
        with pytest.raises(ValueError, match="already registered"):
            training.register_factory("mine", build_policy)
    finally:
        FACTORIES.pop("mine", None)


def test_old_torch_save_checkpoints_load_weights_only_with_known_factories(tmp_path):
    p, opt = _trained()
    old = tmp_path / "old.pt"
    torch.save({"factory": "training.rl.policy:build_policy", "config": CFG, "state_dict": p.state_dict(), "step": 9,
                "lineage": {}, "optimizer": opt.state_dict()}, old)
    q, ck = checkpoint.load_module(old)
    assert ck["factory"] == FACTORY and ck["step"] == 9 and torch.equal(q.log_std, p.log_std)
    other = tmp_path / "other.pt"
    torch.save({"factory": "mypkg.models:make", "config": {}, "state_dict": {}, "step": 0}, other)
    with pytest.raises(CheckpointError, match=r"old-format checkpoint naming code by path .*re-save it"):
        checkpoint.load(other)


# --- hostile files through the real command line -------------------------------------------------------------

class _WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appearing proves that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile(tmp_path: Path, kind: str, marker: Path) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "torch_pickle":  # a torch.save zip whose pickle calls open()
        torch.save({"factory": "training.vla:make_vla", "config": {}, "state_dict": {}, "x": _WritesMarker(marker)}, path)
    elif kind == "raw_pickle":
        path.write_bytes(pickle.dumps({"factory": "vla", "x": _WritesMarker(marker)}))
    else:  # a well-formed safetensors checkpoint naming a factory nobody registered
        from safetensors.torch import save_file

        name = {"unregistered": "evil_factory", "module_path": "os:system"}[kind]
        header = {"factory": name, "config": {"command": f"touch {marker}"}, "step": 0, "lineage": {},
                  "state_dict": {"w": {"__tensor__": "state_dict/w"}}}
        save_file({"state_dict/w": torch.zeros(2)}, str(path),
                  metadata={"format": checkpoint.FORMAT, "format_version": "1", "header": json.dumps(header)})
    assert not marker.exists()
    return path


@pytest.mark.parametrize("kind, reason", [
    ("torch_pickle", "not a checkpoint that loads without running code"),
    ("raw_pickle", "not a checkpoint that loads without running code"),
    ("unregistered", "model factory 'evil_factory' is not registered"),
    ("module_path", "model factory 'os:system' is not registered"),
])
def test_lake_eval_refuses_a_hostile_checkpoint_with_one_line_and_runs_nothing(tmp_path, kind, reason):
    marker = tmp_path / "MARKER"
    path = _hostile(tmp_path, kind, marker)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "lake.cli", "eval", str(path), "--env", "gym_pusht/PushT-v0",
                          "--episodes", "1", "--lake", str(tmp_path / "lake")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    err = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(err) == 1, out.stderr
    assert err[0].startswith(f"error: {path}: ") and reason in err[0], err[0]
    assert not marker.exists()  # nothing from the file ran
    assert not (tmp_path / "lake").exists()  # and nothing was built or recorded
