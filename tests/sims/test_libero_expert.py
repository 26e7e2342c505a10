"""The scripted LIBERO expert: object positions in the state, sampled scenes, and expert demos -> LeRobot v3.0 ->
lake -> pack; its checkpoint evaluates with the env options it records."""

import json

import numpy as np
import pytest
from sims_marks import needs_libero

import lake

ENV = "libero/libero_goal/6"  # put the cream cheese in the bowl
TASK = "put the cream cheese in the bowl"


def test_expert_refuses_tasks_it_has_no_script_for_and_states_without_objects():
    from training.sims.libero_expert import build_libero_expert

    with pytest.raises(ValueError, match="no scripted LIBERO expert for 'libero/libero_object/3'"):
        build_libero_expert("libero/libero_object/3")
    expert = build_libero_expert(ENV + "/7")  # an init-state index names the same task
    with pytest.raises(ValueError, match="objects=True"):
        expert.act({"observation.state": np.zeros((1, 8), np.float32)}, [TASK])


def test_env_kwargs_option_of_lake_eval_must_be_a_json_object():
    from training.evaluate import _json_object

    assert _json_object('{"objects": true}') == {"objects": True} and _json_object(None) is None
    with pytest.raises(ValueError, match="not a JSON object"):
        _json_object("[1]")
    with pytest.raises(ValueError, match="not JSON"):
        _json_object("{objects}")


@needs_libero
def test_objects_in_the_state_and_sampled_scenes_are_seeded_and_leave_numpy_alone():
    """Sampled scenes: objects from the BDDL regions, the arm's joints with the recorded init states' noise."""
    from training.sims import libero

    env = libero.make(ENV, objects=True, relative=True, init="sampled")
    try:
        inner = env.raw.env
        assert inner.obj_of_interest == ["cream_cheese_1", "akita_black_bowl_1"]
        assert env.observation_space.shape == (8 + 3 * 2 + 3 * 2,)
        np.random.seed(123)
        before = np.random.get_state()[1].copy()
        a, info = env.reset(seed=7)
        assert info["init_state"] is None  # not one of the recorded init states
        np.testing.assert_array_equal(np.random.get_state()[1], before)  # the global RNG is restored
        for k, name in enumerate(inner.obj_of_interest):  # positions as the sim has them (float32 state)
            np.testing.assert_allclose(a[8 + 3 * k: 11 + 3 * k], inner.sim.data.body_xpos[inner.obj_body_id[name]],
                                       atol=1e-6)
        np.testing.assert_allclose(a[14:20], a[8:14] - np.tile(a[:3], 2), atol=1e-6)  # relative to the gripper
        b, _ = env.reset(seed=8)
        again, _ = env.reset(seed=7)
        np.testing.assert_array_equal(again, a)  # a scene is a function of its seed
        assert np.abs(b[8:14] - a[8:14]).max() > 1e-3  # another seed, another scene
        assert np.abs(b[:3] - a[:3]).max() > 1e-3  # and another start of the arm (joint noise, as LIBERO's own)
    finally:
        env.close()
    with pytest.raises(ValueError, match="init 'replayed' is not one of"):
        libero.make(ENV, init="replayed")
    with pytest.raises(ValueError, match="relative=True needs objects=True"):
        libero.make(ENV, relative=True)


@needs_libero
def test_libero_expert_demos_round_trip_to_lake_and_pack_and_its_checkpoint_evaluates(tmp_path, ray_session, capsys):
    from lake.cli import main
    from training.checkpoint import load_policy
    from training.sims.demos import record_expert_demos
    from training.sims.experts import save_expert
    from training.sims.metaworld_sft import metaworld_recipe

    out, uri = tmp_path / "demos", str(tmp_path / "lake")
    # one full pick-and-place on a sampled scene, state only (nothing rendered)
    rep = record_expert_demos(uri, ENV, out=out, episodes=1, noise=0.05, seed=3, batch_size=1, camera=False,
                              max_steps=160)
    assert (rep.rolled_out, rep.kept, rep.success_rate) == (1, 1, 1.0)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert (info["codebase_version"], info["fps"], info["robot_type"]) == ("v3.0", 20, "panda")
    assert info["features"]["observation.state"]["shape"] == [14] and info["features"]["action"]["shape"] == [7]
    assert not any(f.startswith("observation.images") for f in info["features"])
    lk = lake.open(uri)
    (ep,) = lk.episodes().to_pylist()
    assert (ep["task"], ep["length"]) == (TASK, rep.frames) and rep.frames < 160  # ended on success
    frames = lk.frames(ep["episode_id"], columns=["observation.state", "action", "next.success"])
    assert frames["next.success"].to_pylist()[-1] is True
    actions = np.asarray(frames["action"].to_pylist(), np.float32)
    assert actions[0, 6] == -1.0 and actions[-1, 6] == -1.0 and (actions[:, 6] == 1.0).any()  # open, close, open
    assert np.abs(actions).max() <= 1.0 and not actions[:, 3:6].any()  # orientation held
    packed = lk.pack(metaworld_recipe("libero"))
    assert packed.samples == rep.frames

    # the expert's checkpoint records its env and env options: lake eval needs neither
    ckpt = save_expert(tmp_path / "expert.pt", ENV)
    policy, saved = load_policy(ckpt)
    assert saved["lineage"]["extra"]["env_kwargs"] == {"objects": True}
    assert main(["eval", ckpt, "--episodes", "1", "--batch-size", "1", "--no-video", "--max-steps", "160",
                 "--lake", uri]) == 0
    assert "1 episodes, success rate 100.0%" in capsys.readouterr().out
