"""One small fully-async run shared by the pipeline, lake and evaluation tests (Ray actors start slowly)."""

from __future__ import annotations

import pytest
from rl_configs import PINS, small_config


@pytest.fixture(scope="session")
def aa_run(tmp_path_factory, ray_session):
    """(RunReport, config) of an ``aa`` run whose trajectories went to a lake and whose policy was saved; its
    actors are pinned to CPUs (``PINS``)."""
    from training.rl import run

    tmp = tmp_path_factory.mktemp("rl")
    cfg = small_config(**{"mode": "aa", "algo.train_steps": 6, "algo.max_staleness": 1, "lake.uri": str(tmp / "lake"),
                          "lake.commit_every": 4, "lake.compact_every": 3, "lake.compact_min_fragments": 3,
                          "checkpoint": str(tmp / "rl.pt"),
                          **{f"placement.{k}.cpus": v for k, v in PINS.items()}})
    return run(cfg), cfg
