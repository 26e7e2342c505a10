"""Closed-loop evaluation: episodes + one evals row in ONE lake version, carrying the checkpoint's lineage;
the ``lake eval`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lake
from lake.cli import main
from training.evaluate import EVALS, evaluate
from training.checkpoint import load


def test_evaluation_writes_episodes_and_summary_in_one_version_with_the_checkpoints_lineage(aa_run):
    rep, cfg = aa_run
    ckpt = load(rep.checkpoint)
    assert ckpt["lineage"]["lake_version"] == rep.lake.lake_version  # the RL run's own lineage
    lk = lake.open(cfg.lake.uri)
    before = lk.version
    ev = evaluate(rep.checkpoint, "gym_pusht/PushT-v0", 3, lake_uri=cfg.lake.uri, seed=1, max_steps=15)
    assert ev.lake_version == before + 1 and lk.refresh().version == before + 1
    diff = lk.diff(before, ev.lake_version)
    assert sorted(diff.episodes_added) == sorted(r.episode_id for r in ev.rows) and not diff.episodes_removed
    evals = lk.table("evals")
    assert evals.schema.equals(EVALS) or evals.schema.names == EVALS.names
    row = evals.to_table().to_pylist()[-1]
    assert row["eval_id"] == ev.eval_id and row["episode_ids"] == [r.episode_id for r in ev.rows]
    assert (row["checkpoint_step"], row["lake_version"], row["lake_uri"]) == (
        ckpt["step"], ckpt["lineage"]["lake_version"], ckpt["lineage"]["lake_uri"])
    assert row["checkpoint_step"] == rep.versions and row["env_id"] == "gym_pusht/PushT-v0"
    assert row["episodes"] == 3 and row["success_rate"] == ev.success_rate
    assert row["mean_return"] == pytest.approx(np.mean([r.episode_return for r in ev.rows]))
    # the version before has neither the episodes nor the row: they landed together
    old = lk.checkout(before)
    try:
        rows_before = old.table("evals").count_rows()
    except KeyError:  # no evals table yet
        rows_before = 0
    assert rows_before == evals.count_rows() - 1
    assert not set(old.episodes()["episode_id"].to_pylist()) & {r.episode_id for r in ev.rows}
    eps = {r["episode_id"]: r for r in lk.episodes(split="eval").to_pylist()}
    first = eps[ev.rows[0].episode_id]
    assert first["policy_version"] == ckpt["step"] and json.loads(first["attrs"])["eval_id"] == ev.eval_id
    video = lk.video(first["episode_id"], "observation.images.top")
    assert video.shape == (first["length"], 96, 96, 3)
    again = evaluate(rep.checkpoint, "gym_pusht/PushT-v0", 3, lake_uri=cfg.lake.uri, seed=1, max_steps=15)
    assert again.already_recorded and again.lake_version is None  # same episodes: content ids make it a no-op
    assert again.success_rate == ev.success_rate and again.mean_return == ev.mean_return


def test_lake_eval_prints_the_summary_and_exits_0(aa_run, tmp_path, capsys):
    rep, _ = aa_run
    uri = str(tmp_path / "eval_lake")
    assert main(["eval", rep.checkpoint, "--env", "gym_pusht/PushT-v0", "--episodes", "2", "--lake", uri,
                 "--max-steps", "7", "--seed", "3", "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 episodes" in out and "success rate" in out and "version 1" in out
    lk = lake.open(uri)
    assert lk.episodes().num_rows == 2 and lk.table("evals").count_rows() == 1
    assert all(n <= 7 for n in lk.episodes()["length"].to_pylist())  # --max-steps reached the env
    assert lk.table("evals").to_table(columns=["seed"])["seed"].to_pylist() == [3]


def test_lake_eval_failures_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.pt"), "--env", "gym_pusht/PushT-v0", "--episodes", "1",
                 "--lake", str(tmp_path / "l")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint" in err[0]


def test_any_registered_box_action_env_can_be_evaluated_and_recorded(tmp_path):
    """Not only PushT: a generic Gymnasium env (Box observation -> observation.state, rendered camera)."""
    from training.checkpoint import save
    from training.rl import build_policy, policy_config
    from training.rl.policy import FACTORY

    cfg = policy_config("Pendulum-v1")
    path = save(tmp_path / "p.pt", build_policy(**cfg), factory=FACTORY, config=cfg, step=0)
    ev = evaluate(path, "Pendulum-v1", 2, lake_uri=str(tmp_path / "lake"), max_steps=12)
    assert (ev.episodes, ev.mean_length, ev.lake_version) == (2, 12.0, 1)
    lk = lake.open(str(tmp_path / "lake"))
    ep = lk.episodes().to_pylist()[0]
    assert ep["cameras"] == ["observation.image"] and ep["episode_return"] < 0  # pendulum costs are negative
    assert lk.frames(ep["episode_id"], columns=["observation.state"]).num_rows == 12
    assert lk.video(ep["episode_id"], "observation.image").shape[0] == 12
    with pytest.raises(ValueError, match="does not name its env"):
        evaluate(path, None, 1)


def test_explicit_env_seeds_and_env_kwargs_reach_the_envs(tmp_path):
    """``env_seeds`` pins each episode's reset seed (LIBERO: its recorded init state); ``env_kwargs`` go to the
    env's constructor (Pendulum's gravity here)."""
    from training.checkpoint import load_policy, save
    from training.evaluate import run_episodes
    from training.rl import build_policy, policy_config
    from training.rl.policy import FACTORY

    cfg = policy_config("Pendulum-v1", image=False)
    policy, _ = load_policy(save(tmp_path / "p.pt", build_policy(**cfg), factory=FACTORY, config=cfg, step=0))
    eps = run_episodes(policy, "Pendulum-v1", 3, env_seeds=[4, 4, 9], max_steps=10, record_video=False, batch_size=3)
    assert [e["env_seed"] for e in eps] == [4, 4, 9]
    state = [e["frames"]["observation.state"] for e in eps]
    np.testing.assert_array_equal(state[0][0], state[1][0])  # the same reset state, exactly
    # then the same episode: actions come from one batched forward, whose rows may differ in the last float32 bit
    np.testing.assert_allclose(state[0], state[1], rtol=0, atol=1e-5)
    assert not np.array_equal(state[0][0], state[2][0])
    weightless = run_episodes(policy, "Pendulum-v1", 1, env_seeds=[4], max_steps=10, record_video=False,
                              env_kwargs={"g": 0.0})[0]["frames"]["observation.state"]
    np.testing.assert_array_equal(weightless[0], state[0][0])  # same start, other physics
    assert not np.array_equal(weightless, state[0])
    with pytest.raises(ValueError, match="2 env seeds for 3 episodes"):
        run_episodes(policy, "Pendulum-v1", 3, env_seeds=[1, 2])


class _NoisyPolicy:
    """Acts with torch's global RNG, as the VLA's flow sampling does."""

    input_features = ["observation.state"]

    def reset(self, batch_size: int) -> None:
        pass

    def act(self, obs, tasks):
        import torch

        return torch.randn(len(tasks), 1).clamp(-2, 2).numpy()


def test_a_sampling_policy_is_seeded_by_the_evaluation_seed(tmp_path):
    """Same evaluation seed -> the same sampled actions (a rerun reproduces an evaluation); another seed ->
    other actions; the caller's global RNG is left as it was."""
    import torch

    from training.evaluate import run_episodes

    def actions(seed):
        eps = run_episodes(_NoisyPolicy(), "Pendulum-v1", 3, seed=seed, max_steps=6, record_video=False, batch_size=2)
        return np.concatenate([e["actions"] for e in eps])

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = actions(0)
    assert torch.equal(torch.rand(1), expected_next)  # global state untouched
    np.testing.assert_array_equal(a, actions(0))
    assert not np.array_equal(a, actions(1))
    assert not np.array_equal(a[:6], a[6:12])  # waves draw different noise
