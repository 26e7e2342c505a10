"""The trajectory ledger balances only when every received trajectory has exactly one outcome."""

from __future__ import annotations

import numpy as np
import pytest

from training.rl import Ledger, Trajectory, staleness, to_new_episode


def test_a_balanced_ledger_passes_and_every_kind_of_imbalance_is_named():
    ok = Ledger(("a", "b", "c", "d"), ("a", "b"), ("c",), ("d",), (0, 1))
    assert ok.problems() == [] and ok.check() is ok
    cases = {
        "neither consumed nor dropped": Ledger(("a", "b"), ("a",), (), (), (0,)),
        "two outcomes": Ledger(("a",), ("a",), ("a",), (), (0,)),
        "never received": Ledger(("a",), ("a", "z"), (), (), (0, 0)),
        "duplicates": Ledger(("a",), ("a", "a"), (), (), (0, 0)),
    }
    for why, ledger in cases.items():
        assert any(why in p for p in ledger.problems()), why
        with pytest.raises(RuntimeError, match="does not balance"):
            ledger.check()


def _traj(versions=(3, 3, 4)):
    t = len(versions)
    return Trajectory("w0.i0.e1.n2", 0, 0, 1, 2, "w0.i0.g2", 123, "push", {"observation.state": np.ones((t, 2))},
                      {"observation.state": np.ones(2)}, np.ones((t, 2)), np.zeros((t, 2)), np.zeros(t), np.zeros(t),
                      np.array([0.0, 0.5, 0.25]), np.asarray(versions), False, True, False)


def test_staleness_counts_from_the_oldest_step_and_lake_episodes_keep_every_tag():
    tr = _traj()
    assert staleness(tr, 6) == 3 and tr.min_version == 3 and tr.max_version == 4
    ep = to_new_episode(tr, env_id="gym_pusht/PushT-v0", run_id="r")
    assert ep.policy_version == 3 and ep.episode_return == 0.75 and ep.success is False
    assert list(ep.frames["rl.policy_version"]) == [3, 3, 4]
    assert ep.frames["next.done"].tolist() == [False, False, True]
    assert ep.attrs["traj_id"] == "w0.i0.e1.n2" and ep.attrs["truncated"] is True
