"""RL of the VLA itself on Meta-World: demos -> pack -> a tiny SFT -> ``from_sft`` -> a short fully-async (aa) GRPO
run of the flow policy whose trajectories land in the same lake as a version, whose checkpoint keeps the SFT
lineage, and whose weights moved from the SFT ones. It acts in chunks as SFT evaluation does (exec 2 here: one RL
step executes two actions, env option ``action_chunk``), and its checkpoint evaluates in the plain env."""

import json

import numpy as np
from sims_marks import needs_metaworld, packed_reach_demos

import lake

pytestmark = needs_metaworld
ENV = "metaworld/reach-v3"


def test_vla_rl_from_an_sft_checkpoint_lands_trajectories_as_a_lake_version(tmp_path, ray_session):
    from training.checkpoint import load, load_policy
    from training.evaluate import evaluate
    from training.rl import RLConfig, run, with_overrides
    from training.rl.flow_policy import FACTORY, FlowPolicy, from_sft
    from training.sft import SFTConfig, train
    from training.sims.metaworld_sft import METAWORLD_VLA

    uri, recipe, sft_version = packed_reach_demos(tmp_path)
    sft = train(SFTConfig(lake=uri, recipe=recipe.hash, out_dir=str(tmp_path / "sft"), steps=3, warmup=1,
                          model={**METAWORLD_VLA, "denoise_steps": 3}), progress=False)
    start = from_sft(sft["checkpoint"], str(tmp_path / "start.pt"), env_id=ENV, rl_sigma=0.1, exec_steps=2)
    ck = load(start)
    assert ck["factory"] == FACTORY and ck["config"]["exec_steps"] == 2 and ck["lineage"]["lake_version"] == sft_version
    sft_weights = load(sft["checkpoint"])["state_dict"]
    assert all(np.array_equal(sft_weights[k].numpy(), v.numpy()) for k, v in ck["state_dict"].items())

    # shaped reward (6-step episodes = 3 chunks never succeed): returns differ within a GRPO group, so the weights must move
    cfg = with_overrides(RLConfig(), {
        "mode": "aa", "env.id": ENV, "env.max_episode_steps": 6, "env.kwargs": {"terminate_on_success": False, "reward_scale": 0.01, "action_chunk": 2},
        "algo.advantage": "grpo", "algo.group_size": 2, "workers.env_workers": 2, "workers.envs_per_worker": 2,
        "algo.batch_trajectories": 4, "algo.micro_batch_trajectories": 2, "algo.train_steps": 2, "algo.lr": 1e-3,
        "batching.max_batch_size": 4, "policy.init_checkpoint": start, "lake.uri": uri, "lake.source": "rl-vla/reach",
        "lake.images": False, "lake.commit_every": 4, "checkpoint": str(tmp_path / "rl.pt"), "timeout_s": 300,
        "placement.env_worker.num_cpus": 0.2, "placement.rollout.num_cpus": 0.3, "placement.trainer.num_cpus": 0.3,
        "placement.lake_writer.num_cpus": 0.2})
    rep = run(cfg)
    assert rep.versions == 2 and rep.consumed_trajectories == 8
    assert rep.lake.lake_version is not None and rep.lake.lake_version > sft_version
    rows = lake.open(uri).episodes(filter="source = 'rl-vla/reach'").to_pylist()
    assert len(rows) == rep.produced and {json.loads(r["attrs"])["traj_id"] for r in rows} == set(rep.trajectories)
    fr = lake.open(uri).frames(rows[0]["episode_id"], columns=["action", "rl.logprob"])
    assert np.asarray(fr["action"].to_pylist()).shape == (3, 8) and np.isfinite(fr["rl.logprob"].to_numpy()).all()
    # the RL checkpoint: the flow policy, its lineage (RL lake version -> start checkpoint -> SFT data), weights moved
    policy, out = load_policy(rep.checkpoint)
    assert isinstance(policy, FlowPolicy) and out["factory"] == FACTORY
    assert out["lineage"]["lake_version"] == rep.lake.lake_version
    assert out["lineage"]["extra"]["config"]["policy"]["init_checkpoint"] == start
    assert ck["lineage"]["extra"]["init_from"] == sft["checkpoint"]
    assert any(not np.array_equal(sft_weights[k].numpy(), v.numpy()) for k, v in out["state_dict"].items())
    ev = evaluate(rep.checkpoint, ENV, 2, lake_uri=uri, seed=1000, record_video=False, max_steps=4, batch_size=2)
    assert ev.episodes == 2 and ev.lake_version > rep.lake.lake_version
