"""RL on Meta-World from a supervised start: behaviour cloning on lake demos, then a short fully-async (aa) run
whose trajectories land in the same lake as a new version, and whose checkpoint ``lake eval`` runs."""

import json

import numpy as np
import pytest
from sims_marks import needs_metaworld

import lake

pytestmark = needs_metaworld
ENV = "metaworld/reach-v3"


def test_bc_then_aa_rl_lands_trajectories_as_a_lake_version(tmp_path, ray_session):
    from training.checkpoint import load_policy
    from training.evaluate import evaluate
    from training.rl import RLConfig, run, with_overrides
    from training.rl.bc import behaviour_clone
    from training.sims.demos import record_expert_demos

    uri = str(tmp_path / "lake")
    record_expert_demos(uri, ENV, out=tmp_path / "demos", episodes=3, noise=0.1, seed=0, camera=False, batch_size=3)
    demo_version = lake.open(uri).version
    bc = behaviour_clone(uri, ENV, out=str(tmp_path / "bc.pt"), steps=30, batch_size=64, episodes=2)
    assert (bc["episodes"], bc["lake_version"]) == (2, demo_version)
    policy, ckpt = load_policy(bc["checkpoint"])
    assert ckpt["lineage"]["lake_version"] == demo_version and ckpt["lineage"]["extra"]["env_id"] == ENV
    assert policy.input_features == ["observation.state"]

    cfg = with_overrides(RLConfig(), {
        "mode": "aa", "env.id": ENV, "env.max_episode_steps": 8, "workers.env_workers": 2,
        "workers.envs_per_worker": 2, "algo.batch_trajectories": 4, "algo.micro_batch_trajectories": 2,
        "algo.train_steps": 2, "batching.max_batch_size": 4, "policy.init_checkpoint": bc["checkpoint"],
        "lake.uri": uri, "lake.source": "rl/reach", "lake.images": False, "lake.commit_every": 4,
        "checkpoint": str(tmp_path / "rl.pt"), "timeout_s": 240,
        "placement.env_worker.num_cpus": 0.2, "placement.rollout.num_cpus": 0.3, "placement.trainer.num_cpus": 0.3,
        "placement.lake_writer.num_cpus": 0.2})
    rep = run(cfg)
    assert rep.versions == 2 and rep.consumed_trajectories == 8
    lk = lake.open(uri)
    assert rep.lake.lake_version is not None and rep.lake.lake_version > demo_version
    rows = lk.episodes(filter="source = 'rl/reach'").to_pylist()
    assert len(rows) == rep.produced
    assert {json.loads(r["attrs"])["traj_id"] for r in rows} == set(rep.trajectories)
    frames = lk.frames(rows[0]["episode_id"], columns=["observation.state", "action"])
    assert np.asarray(frames["observation.state"].to_pylist()).shape[1] == 39
    # the RL checkpoint starts from the cloned weights and names its env: lake eval needs no --env
    ev = evaluate(rep.checkpoint, None, 2, lake_uri=uri, seed=1000, record_video=False, batch_size=2)
    assert ev.env_id == ENV and ev.episodes == 2 and all(r.length <= 8 for r in ev.rows)
    with pytest.raises(ValueError, match="no episodes"):
        behaviour_clone(uri, ENV, out=str(tmp_path / "none.pt"), steps=1, split="val")
