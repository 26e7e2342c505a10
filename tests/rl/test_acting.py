"""Acting inside the env worker process (``workers.inference: env``): the same actions and behaviour log-probs
as a rollout worker with the same weights and seeds, weights swapped after a publish, pause and stop honoured,
ss still lockstep and reproducing the rollout path's run bit for bit, and the lake holding exactly what was
produced in aa."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from rl_configs import small_config

import lake
from training.rl import PolicySpec, policy_config
from training.rl.batcher import ActRequest
from training.rl.policy import FACTORY

ENV = "gym_pusht/PushT-v0"


@pytest.fixture(scope="module")
def spec():
    return PolicySpec(FACTORY, policy_config(ENV))


def _weights(spec, seed):
    """A policy whose weights all differ from the factory's init (seeded), and its acting weights."""
    import torch

    p = spec.build().eval()
    with torch.no_grad():
        for prm in p.parameters():
            prm.add_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
    return p, p.get_weights(p.acting_keys())


def _request(worker=0):
    obs = {"observation.state": np.array([[100.0, 300.0], [400.0, 50.0]], np.float32),
           "observation.environment_state": np.linspace(0, 500, 32, dtype=np.float32).reshape(2, 16)}
    return ActRequest(worker, obs, np.array([5, 6]))


def _board():
    import ray

    from training.rl.acting import ControlBoard

    return ray.remote(ControlBoard).options(max_concurrency=4).remote()


def test_acting_in_the_env_worker_gives_the_rollout_workers_actions_and_logprobs_bit_for_bit(ray_session, spec):
    import ray

    from training.rl.acting import LocalActor
    from training.rl.rollout import RolloutWorker

    policy, w = _weights(spec, 1)
    rollout = ray.remote(RolloutWorker).remote(spec, 4, 2.0)
    ray.get(rollout.set_weights.remote(3, w))
    board = _board()
    ray.get(board.publish.remote(3, [ray.put(w)]))
    local = LocalActor(spec, board)
    req = _request()
    a, b = ray.get(rollout.act.remote(req)), local.act(req)
    assert a.version == b.version == 3 and not b.stop
    for k in ("actions", "raw", "logprob"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert np.isnan(a.value).all() and np.isnan(b.value).all()  # neither ran the critic
    want = policy.act_with_logprob(req.obs, req.seeds)  # the full policy: the published weights are what acted
    assert np.array_equal(b.raw, want.raw) and np.array_equal(b.logprob, want.logprob)
    fresh = spec.build().eval().act_with_logprob(req.obs, req.seeds)
    assert not np.array_equal(b.raw, fresh.raw)  # not the factory's init
    assert local.infer_s > 0
    ray.kill(rollout)
    ray.kill(board)


def test_acting_in_the_env_worker_swaps_to_each_publish_and_honours_pause_and_stop(ray_session, spec):
    import ray

    from training.rl.acting import LocalActor

    board = _board()
    p1, w1 = _weights(spec, 1)
    p2, w2 = _weights(spec, 2)
    ray.get(board.publish.remote(1, [ray.put(w1)]))
    local = LocalActor(spec, board)
    req = _request()
    r1 = local.act(req)
    assert r1.version == 1 and np.array_equal(r1.raw, p1.act_with_logprob(req.obs, req.seeds).raw)
    ray.get(board.publish.remote(2, [ray.put(w2)]))
    local.require(2)  # what an ss round does before its first step
    r2 = local.act(req)
    assert r2.version == 2 and local.swaps == 2
    assert np.array_equal(r2.raw, p2.act_with_logprob(req.obs, req.seeds).raw) and not np.array_equal(r1.raw, r2.raw)

    ray.get(board.pause.remote(True))
    local.sync(block=True)  # the pause has arrived (seen at the worker's next check otherwise)
    out = []
    th = threading.Thread(target=lambda: out.append(local.act(req)), daemon=True)
    th.start()
    th.join(2.0)
    assert th.is_alive() and not out  # held while paused (as: the learner trains)
    ray.get(board.pause.remote(False))
    th.join(30)
    assert out and out[0].version == 2 and not out[0].stop
    ray.get(board.halt.remote())
    local.sync(block=True)  # the halt has arrived (a step may race it otherwise: it is seen at the next check)
    assert local.act(req).stop
    ray.kill(board)


def _ss(**over):
    return small_config(**{"mode": "ss", "workers.envs_per_worker": 2, "algo.batch_trajectories": 4,
                           "algo.micro_batch_trajectories": 2, "algo.epochs": 2, "algo.train_steps": 3,
                           "algo.max_staleness": 0, "env.max_episode_steps": 15, "seed": 7, **over})


@pytest.mark.slow
def test_ss_acting_in_the_env_worker_reproduces_the_rollout_path_bit_for_bit(ray_session):
    """One env worker (the sim-sized layout): the same forward passes as its rollout worker's, so the same run.
    (With several env workers the rollout worker's forward holds all their rows at once, and an elementwise op
    over a different batch shape can round one action 1 ulp differently: same semantics, not the same bits.)"""
    from training.rl import run

    old, new = run(_ss(**{"workers.env_workers": 1})), run(_ss(**{"workers.env_workers": 1, "workers.inference": "env"}))
    assert new.weights_sha256 == old.weights_sha256  # same data, same updates
    assert new.trajectories == old.trajectories  # same ids, returns, lengths, versions
    keys = ["consumed_steps", "reward_per_step", "policy_loss", "value_loss", "staleness_max"]
    assert [[h[k] for k in keys] for h in new.history] == [[h[k] for k in keys] for h in old.history]
    assert new.staleness_max == 0 and new.consumed_trajectories == 12 and new.dropped_stale == 0
    assert len({r for r, _, _ in new.trajectories.values()}) > 1  # real, varied episodes
    assert new.rollouts == () and all(w.infer_s > 0 for w in new.workers) and all(w.infer_s == 0 for w in old.workers)


@pytest.mark.slow
def test_ss_with_several_env_workers_acting_themselves_keeps_the_per_step_barrier(ray_session, tmp_path):
    from training.rl import run

    cfg = _ss(**{"workers.env_workers": 2, "workers.inference": "env", "lake.uri": str(tmp_path / "lake")})
    rep = run(cfg)
    # every step of every round had both env workers in it, one request each
    (barrier,) = rep.rollouts
    steps = [w.vector_steps for w in rep.workers]
    assert barrier.batcher.batches == sum(steps) // 2 and barrier.batcher.rows == sum(steps)
    assert barrier.batcher.max_batch_rows == 2
    # strictly synchronous: every step of a trajectory was chosen by the version its round started with
    assert rep.staleness_max == 0 and rep.consumed_trajectories == 12 and rep.dropped_stale == 0
    lk = lake.open(cfg.lake.uri)
    versions = []
    for row in _lake_rows(cfg.lake.uri).values():
        v = lk.frames(row["episode_id"], columns=["rl.policy_version"])["rl.policy_version"].to_pylist()
        assert len(set(v)) == 1
        versions.append(v[0])
    assert sorted(versions) == [0] * 4 + [1] * 4 + [2] * 4


def _lake_rows(uri):
    rows = lake.open(uri).episodes(filter="source = 'rl'").to_pylist()
    return {json.loads(r["attrs"])["traj_id"]: r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["aa", "as"])
def test_async_acting_in_the_env_workers_lands_exactly_the_produced_trajectories(ray_session, tmp_path, mode):
    from training.rl import run

    cfg = small_config(**{"mode": mode, "workers.inference": "env", "algo.train_steps": 5, "algo.max_staleness": 1,
                          "lake.uri": str(tmp_path / "lake"), "lake.commit_every": 4})
    rep = run(cfg)
    assert rep.versions == 5 and rep.rollouts == ()  # no rollout actor
    led = rep.ledger
    assert led.problems() == [] and len(led.consumed) == 5 * cfg.algo.batch_trajectories
    assert sorted(t for w in rep.workers for t in w.produced) == sorted(led.received)
    assert max(led.staleness) <= cfg.algo.max_staleness
    rows = _lake_rows(cfg.lake.uri)
    assert set(rows) == set(rep.trajectories) and len(rows) == rep.produced == rep.lake.episodes_added
    lk = lake.open(cfg.lake.uri)
    seen = set()
    for tid, row in rows.items():
        v = np.asarray(lk.frames(row["episode_id"], columns=["rl.policy_version"])["rl.policy_version"].to_pylist())
        assert np.all(np.diff(v) >= 0), tid  # swaps between steps: versions only go up in an episode
        assert row["policy_version"] == v.min() == rep.trajectories[tid][2]
        assert rows[tid]["length"] == rep.trajectories[tid][1]
        seen.update(v.tolist())
    assert len(seen) >= 3  # the env workers picked up new versions mid-run


@pytest.mark.slow
def test_a_killed_env_worker_acting_itself_restarts_with_the_newest_weights(ray_session):
    """The new process has no weights and no long poll: it reads the board (newest version) at its first step."""
    from training.rl import run

    cfg = small_config(**{"mode": "aa", "workers.env_workers": 1, "workers.inference": "env", "algo.train_steps": 3,
                          "fault.worker": 0, "fault.after_steps": 30})
    rep = run(cfg)
    assert rep.restarts == 1 and rep.versions == 3
    assert any(t.startswith("w0.i1.") for t in rep.ledger.consumed)  # after the restart
    rep.ledger.check()
    before = max(v for t, (_, _, v) in rep.trajectories.items() if t.startswith("w0.i0."))
    after = min(v for t, (_, _, v) in rep.trajectories.items() if t.startswith("w0.i1."))
    assert after >= before  # not version 0 again: the restarted worker started from the newest it was given
