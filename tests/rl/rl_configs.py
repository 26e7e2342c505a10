"""Small RL configs for tests (2 cores: 2 env workers x 4 envs, 20-step episodes, 8-trajectory batches)."""

from __future__ import annotations

import os

SMALL = {
    "env.max_episode_steps": 20, "workers.env_workers": 2, "workers.envs_per_worker": 4,
    "algo.batch_trajectories": 8, "algo.micro_batch_trajectories": 4, "algo.epochs": 1,
    "batching.max_batch_size": 8, "latency.dist": "lognormal", "latency.params": {"median_ms": 1.0, "sigma": 1.0},
    "placement.env_worker.num_cpus": 0.2, "placement.rollout.num_cpus": 0.3, "placement.trainer.num_cpus": 0.3,
    "placement.lake_writer.num_cpus": 0.2, "timeout_s": 240,
}

# placement.*.cpus of the shared aa run: simulators and inference on the first CPU, learner and lake writer on
# the last (the same CPU on a one-CPU machine)
_CPUS = sorted(os.sched_getaffinity(0))
PINS = {"env_worker": [_CPUS[0]], "rollout": [_CPUS[0]], "trainer": [_CPUS[-1]], "lake_writer": [_CPUS[-1]]}


def small_config(**overrides):
    from training.rl import RLConfig, with_overrides

    return with_overrides(RLConfig(), {**SMALL, **overrides})
