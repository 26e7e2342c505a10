"""LIBERO behind the env interface: build, reset to a recorded init state, rendered steps, and lake eval."""

import numpy as np
from sims_marks import needs_libero

import lake
from lake.cli import main

pytestmark = needs_libero

ENV = "libero/libero_object/3"


def test_libero_env_builds_resets_renders_ten_steps_and_runs_in_lake_eval(tmp_path, capsys):
    from training.checkpoint import save
    from training.rl import build_policy
    from training.rl.envs import feature_spaces, get_family, make_env, to_features
    from training.rl.policy import FACTORY

    fam = get_family(ENV)
    assert fam.default_task == "pick up the bbq sauce and place it in the basket"
    env = make_env(ENV, image=True, kwargs={"reward": "dense"})
    inner = env.raw.env
    target = inner.obj_body_id[inner.obj_of_interest[0]]  # the bbq sauce

    def distance(features):  # gripper (state[:3]) to the object, from the observation and the sim
        return float(np.linalg.norm(inner.sim.data.body_xpos[target] - features["observation.state"][:3]))

    try:
        obs, info = env.reset(seed=53)
        assert info["init_state"] == 53 % 50
        spaces = feature_spaces(env.observation_space, fam)
        frames = [to_features(obs, fam)]
        d0, rewards = distance(frames[0]), []
        for _ in range(10):
            obs, reward, terminated, truncated, info = env.step(np.array([0, 0, -1, 0, 0, 0, -1], np.float32))
            frames.append(to_features(obs, fam))
            rewards.append(reward)
        assert not terminated and not truncated and info["is_success"] is False
        # dense shaping telescopes: the rewards sum to 10 x how much closer the gripper got (float32 state)
        assert abs(sum(rewards) - 10 * (d0 - distance(frames[-1]))) < 1e-5 and sum(rewards) != 0
        again, _ = env.reset(seed=3)
        np.testing.assert_array_equal(to_features(again, fam)["observation.state"], frames[0]["observation.state"])
    finally:
        env.close()
    assert set(frames[0]) == {"observation.state", "observation.images.agentview", "observation.images.wrist"}
    for cam in ("observation.images.agentview", "observation.images.wrist"):
        imgs = np.stack([f[cam] for f in frames])
        assert imgs.shape == (11, 64, 64, 3) and imgs.dtype == np.uint8 and imgs.std() > 5
    assert frames[0]["observation.state"].shape == (8,)

    # an untrained state policy for 1 short episode, recorded with the agentview camera
    (name, (shape, _, _)), = [(n, s) for n, s in spaces.items() if len(s[0]) == 1]  # unbounded: scale 1
    state = [[name, shape[0], [-1.0] * shape[0], [1.0] * shape[0]]]
    cfg = {"state_features": state, "action_low": [-1.0] * 7, "action_high": [1.0] * 7, "image_feature": None,
           "image_size": 24, "hidden": 16, "init_log_std": -0.5}
    ckpt = save(tmp_path / "p.pt", build_policy(**cfg), factory=FACTORY, config=cfg)
    uri = str(tmp_path / "lake")
    assert main(["eval", ckpt, "--env", ENV, "--episodes", "1", "--max-steps", "3", "--lake", uri]) == 0
    assert "1 episodes, success rate 0.0%" in capsys.readouterr().out
    lk = lake.open(uri)
    ep = lk.episodes().to_pylist()[0]
    assert (ep["length"], ep["robot_type"], ep["task"]) == (3, "panda", fam.default_task)
    assert lk.video(ep["episode_id"], "observation.images.agentview").shape == (3, 64, 64, 3)
