"""Meta-World behind the env interface: seeded goals, rendered observations, the scripted expert in lake eval."""

import numpy as np
import pytest
from sims_marks import needs_metaworld

import lake
from lake.cli import main

pytestmark = needs_metaworld


def test_the_reset_seed_chooses_the_goal_and_replays_exactly():
    from training.rl.envs import make_env

    env = make_env("metaworld/push-v3")
    try:
        a, _ = env.reset(seed=11)
        b, _ = env.reset(seed=11)
        c, _ = env.reset(seed=12)
        assert a.shape == (39,) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a[-3:], c[-3:])  # the goal (last 3 entries) moved with the seed
        assert env.observation_space.contains(a)
    finally:
        env.close()


def test_rendered_observations_are_upright_camera_frames_under_the_lake_names():
    from training.rl.envs import get_family, make_env, to_features

    fam = get_family("metaworld/reach-v3")
    assert fam.default_task == "reach the goal position" and fam.camera == "observation.images.corner2"
    env = make_env("metaworld/reach-v3", image=True)
    try:
        obs, _ = env.reset(seed=0)
        first = to_features(obs, fam)
        obs, *_ = env.step(np.array([1.0, 0.0, 0.0, 0.0], np.float32))
        for _ in range(4):
            obs, *_ = env.step(np.array([1.0, 0.0, 0.0, 0.0], np.float32))
        later = to_features(obs, fam)
    finally:
        env.close()
    assert set(first) == {"observation.state", "observation.images.corner2"}
    img = first["observation.images.corner2"]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 10
    assert np.abs(later["observation.images.corner2"].astype(int) - img).sum() > 0  # the arm moved in the frame
    # upright: the floor (bottom rows) is darker than the sky/wall (top rows) in the corner2 view
    assert img[:8].mean() > img[-8:].mean()


def test_unknown_task_is_refused_naming_the_tasks():
    from training.rl.envs import make_env

    with pytest.raises(ValueError, match="unknown Meta-World task 'fly-v3'.*reach-v3"):
        make_env("metaworld/fly-v3")


def test_scripted_expert_reaches_at_least_80_percent_on_reach_in_lake_eval(tmp_path, capsys):
    from training.sims.experts import save_expert

    ckpt = save_expert(tmp_path / "reach_expert.pt", "metaworld/reach-v3", noise=0.0)
    uri = str(tmp_path / "lake")
    # no --env: the expert's checkpoint names its env
    assert main(["eval", ckpt, "--episodes", "6", "--batch-size", "3", "--seed", "4", "--no-video",
                 "--lake", uri]) == 0
    assert "on metaworld/reach-v3: 6 episodes" in capsys.readouterr().out
    lk = lake.open(uri)
    row = lk.table("evals").to_table().to_pylist()[0]
    assert row["env_id"] == "metaworld/reach-v3" and row["episodes"] == 6
    assert row["success_rate"] >= 0.8
    eps = lk.episodes().to_pylist()
    assert len(eps) == 6 and {e["source"] for e in eps} == {"eval/metaworld/reach-v3"}
    assert {e["task"] for e in eps} == {"reach the goal position"} and {e["robot_type"] for e in eps} == {"sawyer"}
    assert sum(bool(e["success"]) for e in eps) == round(row["success_rate"] * 6)
    # successful episodes end on success (terminated), well before Meta-World's 500-step limit
    assert all(e["length"] < 500 for e in eps if e["success"])


def test_vector_env_as_rl_workers_use_it_resets_only_the_masked_envs_with_their_seeds():
    from training.rl.envs import make_env, make_vector_env

    vec = make_vector_env("metaworld/reach-v3", 2, max_episode_steps=3)
    single = make_env("metaworld/reach-v3")
    try:
        obs, _ = vec.reset(seed=[1, 2])
        np.testing.assert_array_equal(obs[1], single.reset(seed=2)[0])
        for _ in range(3):
            obs, reward, term, trunc, info = vec.step(np.zeros((2, 4), np.float32))
        assert trunc.all() and not term.any() and info["is_success"].tolist() == [False, False]
        fresh, _ = vec.reset(seed=[3, None], options={"reset_mask": np.array([True, False])})
        np.testing.assert_array_equal(fresh[0], single.reset(seed=3)[0])
        np.testing.assert_array_equal(fresh[1], obs[1])  # the unmasked env kept its state
    finally:
        vec.close()
        single.close()


def test_action_chunk_env_executes_the_chunk_in_turn_and_stops_at_the_time_limit():
    """``action_chunk = 3``: one step = three steps of the plain env (same observation, summed reward); the time
    limit counts inner steps, so the second chunk of a 4-step episode stops after one."""
    from training.rl.envs import make_env

    chunked = make_env("metaworld/reach-v3", max_episode_steps=4, kwargs={"action_chunk": 3})
    single = make_env("metaworld/reach-v3", max_episode_steps=4)
    try:
        assert chunked.action_space.shape == (12,)
        acts = np.random.default_rng(0).uniform(-1, 1, (6, 4)).astype(np.float32)
        np.testing.assert_array_equal(chunked.reset(seed=5)[0], single.reset(seed=5)[0])
        obs, reward, term, trunc, info = chunked.step(acts[:3].reshape(-1))
        want = [single.step(a) for a in acts[:3]]
        np.testing.assert_array_equal(obs, want[-1][0])
        assert reward == pytest.approx(sum(w[1] for w in want)) and reward > 0
        assert info["chunk_steps"] == 3 and not term and not trunc
        obs, reward, term, trunc, info = chunked.step(acts[3:].reshape(-1))
        o4, r4, _, t4, _ = single.step(acts[3])
        assert info["chunk_steps"] == 1 and trunc and t4
        np.testing.assert_array_equal(obs, o4)
        assert reward == pytest.approx(r4)
    finally:
        chunked.close()
        single.close()
