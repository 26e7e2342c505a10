"""The Ray pipeline end to end: version tags and the staleness bound, conservation, the lake sees exactly what
was produced, ss reproducibility, and surviving a killed env worker."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rl_configs import PINS, small_config

import lake


def _lake_rows(uri, source="rl"):
    rows = lake.open(uri).episodes(filter=f"source = '{source}'").to_pylist()
    return {json.loads(r["attrs"])["traj_id"]: r for r in rows}


def test_every_step_carries_its_policy_version_and_staleness_stays_bounded(aa_run):
    rep, cfg = aa_run
    assert rep.versions == cfg.algo.train_steps
    assert rep.ledger.staleness and max(rep.ledger.staleness) <= cfg.algo.max_staleness
    assert all(h["staleness_max"] <= cfg.algo.max_staleness for h in rep.history)
    lk = lake.open(cfg.lake.uri)
    seen = set()
    for tid, row in _lake_rows(cfg.lake.uri).items():
        v = np.asarray(lk.frames(row["episode_id"], columns=["rl.policy_version"])["rl.policy_version"].to_pylist())
        assert np.all(np.diff(v) >= 0), tid  # weights swap between batches: versions only go up in an episode
        assert 0 <= v.min() and v.max() <= rep.versions
        assert row["policy_version"] == v.min() == rep.trajectories[tid][2]
        seen.update(v.tolist())
    assert len(seen) >= 3  # rollouts picked up new versions mid-run


def test_every_actor_process_runs_only_on_its_placement_cpus(aa_run):
    # every thread of each actor (Ray's own included), read at the end of the run: a pin of the calling thread
    # only would leave Ray's threads on every CPU
    rep, cfg = aa_run
    assert rep.affinity == {"trainer": PINS["trainer"], "rollout.0": PINS["rollout"], "lake_writer": PINS["lake_writer"],
                            **{f"env_worker.{i}": PINS["env_worker"] for i in range(cfg.workers.env_workers)}}


def test_every_trajectory_is_consumed_or_counted_as_dropped(aa_run):
    rep, cfg = aa_run
    led = rep.ledger
    assert led.problems() == []
    assert len(led.received) == len(led.consumed) + len(led.dropped_stale) + len(led.dropped_unused) == rep.produced
    assert len(led.consumed) == cfg.algo.train_steps * cfg.algo.batch_trajectories
    produced_by_workers = [t for w in rep.workers for t in w.produced]
    assert sorted(produced_by_workers) == sorted(led.received)  # no deaths: the workers' own accounts agree


def test_the_lake_holds_exactly_the_trajectories_produced(aa_run):
    rep, cfg = aa_run
    rows = _lake_rows(cfg.lake.uri)
    assert set(rows) == set(rep.trajectories) and len(rows) == rep.produced == rep.lake.episodes_added
    for tid, (ret, length, _) in rep.trajectories.items():
        assert rows[tid]["length"] == length and rows[tid]["episode_return"] == pytest.approx(ret, abs=1e-4)
        assert rows[tid]["split"] == "rl"
    lk = lake.open(cfg.lake.uri)
    log = lk.log()
    commits = [e for e in log if e.message.startswith(f"rl {rep.run_id}:") and "compact" not in e.message]
    assert len(commits) == rep.lake.commits >= rep.produced // cfg.lake.commit_every  # small commits, a few each
    assert rep.lake.compactions >= 1 and any("compact" in e.message for e in log)
    # without compaction the episodes table would hold one fragment per commit
    assert rep.lake.commits > cfg.lake.compact_min_fragments + cfg.lake.compact_every
    assert rep.lake.max_fragments <= cfg.lake.compact_min_fragments + cfg.lake.compact_every
    assert len(lk.checkout(rep.lake.lake_version).table("episodes").get_fragments()) < cfg.lake.compact_min_fragments


@pytest.mark.slow
def test_ss_with_a_fixed_seed_is_reproducible(ray_session):
    from training.rl import run

    cfg = small_config(**{"mode": "ss", "workers.envs_per_worker": 2, "algo.batch_trajectories": 4,
                          "algo.micro_batch_trajectories": 2, "algo.epochs": 2, "algo.train_steps": 3,
                          "algo.max_staleness": 0, "env.max_episode_steps": 15, "seed": 7})
    a, b = run(cfg), run(cfg)
    assert a.weights_sha256 == b.weights_sha256
    assert a.trajectories == b.trajectories  # same ids, returns, lengths, versions
    keys = ["consumed_steps", "reward_per_step", "policy_loss", "value_loss", "entropy", "staleness_max"]
    assert [[h[k] for k in keys] for h in a.history] == [[h[k] for k in keys] for h in b.history]
    assert a.staleness_max == 0 and a.dropped_stale == 0 and a.consumed_trajectories == 12
    assert len({r for r, _, _ in a.trajectories.values()}) > 1  # real, varied episodes, not a constant


@pytest.mark.slow
def test_a_killed_env_worker_is_restarted_and_the_run_continues(ray_session, tmp_path):
    """The only env worker SIGKILLs itself mid-episode: the run can only finish if Ray restarts it. (GRPO, so
    groups that straddle the kill would be counted as unused, never trained on half.)"""
    from training.rl import run

    cfg = small_config(**{"mode": "aa", "workers.env_workers": 1, "algo.train_steps": 3, "fault.worker": 0,
                          "algo.advantage": "grpo", "algo.group_size": 4,
                          "fault.after_steps": 30, "lake.uri": str(tmp_path / "lake"), "lake.commit_every": 4})
    rep = run(cfg)
    assert rep.restarts == 1 and rep.versions == 3
    assert any(t.startswith("w0.i0.") for t in rep.ledger.received)  # before the kill
    assert any(t.startswith("w0.i1.") for t in rep.ledger.consumed)  # after the restart
    rep.ledger.check()
    assert set(_lake_rows(cfg.lake.uri)) == set(rep.ledger.received)


@pytest.mark.slow
def test_ss_rounds_with_episodes_of_different_lengths_run_to_the_end(ray_session):
    """A synchronous round keeps stepping envs whose episode ended early (idle action) until the round is over;
    with autoreset off that stepped a finished env and crashed before. InvertedPendulum ends when the pole falls:
    episode lengths differ within every round (3-11 steps under a random policy)."""
    from training.rl import run

    cfg = small_config(**{"mode": "ss", "env.id": "InvertedPendulum-v5", "env.max_episode_steps": 30,
                          "algo.batch_trajectories": 8, "algo.train_steps": 3, "algo.max_staleness": 0,
                          "seed": 3})
    rep = run(cfg)
    lengths = [n for _, n, _ in rep.trajectories.values()]
    assert rep.versions == 3 and rep.consumed_trajectories == 24 and rep.produced == 24
    assert len(set(lengths)) > 1 and max(lengths) < 30  # terminations at different steps, none at the time limit
    assert rep.consumed_steps == sum(lengths)
