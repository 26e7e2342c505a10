"""Every config in configs/rl loads, validates and fits 2 cores; bad configs fail naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.rl import load_config, required_cpus, with_overrides
from training.rl.config import RLConfig

from rl_configs import small_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "rl").glob("*.yaml"))


def test_there_are_configs_for_every_mode():
    assert {load_config(p).mode for p in CONFIGS} == {"ss", "as", "aa"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_fits_two_cores_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "python -m training.rl" in first and f"configs/rl/{path.name}" in first
    cfg = load_config(path)
    assert required_cpus(cfg) <= 2.0, f"{path.name} needs {required_cpus(cfg)} CPUs"
    from training.rl import build_policy, policy_config

    pcfg = policy_config(cfg.env.id, image=cfg.policy.image, env_kwargs=cfg.env.kwargs)
    policy = build_policy(**pcfg)
    assert ("observation.images.top" in policy.input_features) == cfg.policy.image


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("mode: aa\nalgo:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown key algo\.learning_rate"):
        load_config(p)


@pytest.mark.parametrize("overrides, match", [
    ({"mode": "sa"}, "mode"),
    ({"algo.advantage": "grpo"}, "group_size"),  # grpo with groups of 1
    ({"mode": "ss", "algo.batch_trajectories": 6, "algo.micro_batch_trajectories": 2}, "multiple of the envs"),
    ({"algo.micro_batch_trajectories": 32}, "larger than the global batch"),
    ({"latency.dist": "gamma"}, "latency.dist"),
    ({"algo.max_staleness": -1}, "max_staleness"),
    ({"placement.trainer.cpus": [-1]}, "placement.trainer.cpus: CPU ids"),
    ({"placement.rollout.cpus": "0"}, "placement.rollout.cpus: expected a list of integers"),
    ({"placement.rollout.cpus": [0.5]}, "placement.rollout.cpus: expected a list of integers"),
])
def test_settings_that_cannot_run_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        with_overrides(RLConfig(), overrides)


def test_overrides_replace_nested_fields_and_reject_wrong_types(tmp_path):
    cfg = with_overrides(RLConfig(), {"algo.lr": 1, "workers.env_workers": 2, "latency": {"dist": "constant"}})
    assert cfg.algo.lr == 1.0 and isinstance(cfg.algo.lr, float) and cfg.workers.env_workers == 2
    assert cfg.latency.dist == "constant" and cfg.latency.cap_ms == RLConfig().latency.cap_ms
    with pytest.raises(ValueError, match="no field"):
        with_overrides(RLConfig(), {"algo.nope": 1})
    p = tmp_path / "c.yaml"
    p.write_text("workers:\n  env_workers: two\n")
    with pytest.raises(ValueError, match="workers.env_workers: expected a number"):
        load_config(p)
    p.write_text("placement:\n  env_worker: {cpus: [0]}\n  trainer: {num_cpus: 0.5, cpus: [1]}\n")
    cfg = load_config(p)
    assert cfg.placement.env_worker.cpus == (0,) and cfg.placement.trainer.cpus == (1,)
    assert cfg.placement.rollout.cpus == () and cfg.placement.trainer.num_cpus == 0.5


def test_a_rollout_batch_is_capped_at_the_rows_its_env_workers_can_send():
    """A batch that can never fill would wait out the timeout every step: rollout r serves env workers i with
    i % rollout_workers == r, each sending at most envs_per_worker rows."""
    from training.rl.pipeline import batch_rows

    cfg = small_config(**{"workers.env_workers": 3, "workers.envs_per_worker": 2, "workers.rollout_workers": 2,
                          "batching.max_batch_size": 16})
    assert [batch_rows(cfg, r) for r in range(2)] == [4, 2]  # workers 0, 2 -> rollout 0; worker 1 -> rollout 1
    capped = small_config(**{"workers.env_workers": 3, "workers.envs_per_worker": 2, "workers.rollout_workers": 2,
                             "batching.max_batch_size": 3})
    assert [batch_rows(capped, r) for r in range(2)] == [3, 2]
