"""The trainer in-process, fed synthetic trajectories: strict batches, the staleness bound, GRPO groups,
conservation, and an update that actually improves the policy."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from training.rl import PolicySpec, Trajectory, policy_config
from training.rl.policy import FACTORY
from training.rl.trainer import Trainer

from rl_configs import small_config

ENV = "gym_pusht/PushT-v0"


@pytest.fixture(scope="module")
def pcfg():
    return PolicySpec(FACTORY, policy_config(ENV))


def _traj(i, version, group=None, T=3, rewards=None, raw=None, logp=None):
    obs = {"observation.state": np.full((T, 2), 256.0, np.float32),
           "observation.environment_state": np.full((T, 16), 256.0, np.float32)}
    return Trajectory(f"w0.i0.e0.n{i}", 0, 0, 0, i, group or f"g{i}", i, "push", obs,
                      {k: v[0] for k, v in obs.items()}, np.zeros((T, 2), np.float32),
                      np.zeros((T, 2), np.float32) if raw is None else raw,
                      np.zeros(T, np.float32) if logp is None else logp, np.zeros(T, np.float32),
                      np.ones(T, np.float32) if rewards is None else rewards, np.full(T, version, np.int64),
                      False, True, False)


def _start(trainer):
    th = threading.Thread(target=trainer.run, daemon=True)
    th.start()
    return th


def test_stale_trajectories_are_dropped_and_counted_and_every_batch_is_exact(ray_session, pcfg):
    cfg = small_config(**{"algo.batch_trajectories": 4, "algo.micro_batch_trajectories": 2, "algo.max_staleness": 1,
                          "algo.train_steps": 3})
    tr = Trainer(cfg, pcfg, rollouts=[])
    th = _start(tr)
    n = 0
    for version, count in ((0, 4), (1, 4)):
        for _ in range(count):
            tr.submit(_traj(n, version))
            n += 1
        assert tr.wait_version(version + 1, 30) == version + 1
    stale = [_traj(n, 0), _traj(n + 1, 0)]  # 2 versions behind the trainer (max_staleness 1)
    for t in stale:
        tr.submit(t)
    tr.submit(stale[0])  # a duplicate delivery is ignored, not counted twice
    for i in range(n + 2, n + 6):
        tr.submit(_traj(i, 1))  # 1 version behind: allowed
    assert tr.wait_version(3, 30) == 3
    th.join(10)
    rep = tr.finish()
    led = rep.ledger.check()
    assert set(led.dropped_stale) == {t.traj_id for t in stale} and rep.duplicates == 1
    assert len(led.consumed) == 12 and max(led.staleness) == 1 and not led.dropped_unused
    assert [h["consumed_trajectories"] for h in rep.history] == [4, 8, 12]  # strict global batch
    assert [h["staleness_max"] for h in rep.history] == [0, 0, 1]


def test_grpo_uses_whole_groups_only_and_counts_an_incomplete_one_as_unused(ray_session, pcfg):
    cfg = small_config(**{"algo.advantage": "grpo", "algo.group_size": 2, "algo.batch_trajectories": 4,
                          "algo.micro_batch_trajectories": 2, "algo.train_steps": 1})
    tr = Trainer(cfg, pcfg, rollouts=[])
    th = _start(tr)
    order = [("a", 0), ("b", 1), ("c", 2), ("a", 3), ("b", 4)]  # groups a and b complete, c is not
    for g, i in order:
        tr.submit(_traj(i, 0, group=g, rewards=np.full(3, float(i), np.float32)))
    assert tr.wait_version(1, 30) == 1
    th.join(10)
    led = tr.finish().ledger.check()
    assert sorted(led.consumed) == sorted(f"w0.i0.e0.n{i}" for i in (0, 1, 3, 4))
    assert led.dropped_unused == ("w0.i0.e0.n2",)


def test_updates_move_the_policy_towards_rewarded_actions(ray_session, pcfg):
    """A one-step bandit: reward 1 when the first action coordinate is above the centre. On-policy batches from
    the trainer's own weights; after a few versions the mean action has moved that way."""
    cfg = small_config(**{"algo.batch_trajectories": 16, "algo.micro_batch_trajectories": 8, "algo.epochs": 4,
                          "algo.lr": 0.01, "algo.train_steps": 6, "algo.max_staleness": 0})
    tr = Trainer(cfg, pcfg, rollouts=[])
    obs = {k: v[:1] for k, v in _traj(0, 0, T=1).obs.items()}
    before = float(tr.policy.act(obs, ["t"])[0, 0])
    th = _start(tr)
    rng, n = np.random.default_rng(0), 0
    for version in range(6):
        batch = {k: np.repeat(v, 16, axis=0) for k, v in obs.items()}
        s = tr.policy.act_with_logprob(batch, rng.integers(0, 2**62, 16))
        for j in range(16):
            r = np.array([1.0 if s.raw[j, 0] > 0 else 0.0], np.float32)
            tr.submit(_traj(n, version, T=1, rewards=r, raw=s.raw[j:j + 1], logp=s.logprob[j:j + 1]))
            n += 1
        assert tr.wait_version(version + 1, 30) == version + 1
    th.join(10)
    tr.finish().ledger.check()
    after = float(tr.policy.act(obs, ["t"])[0, 0])
    assert after > before + 20, (before, after)  # env units: the box is 0..512, the start ~256


def test_a_batch_cut_short_by_stop_counts_its_trajectories_as_unused_not_consumed(ray_session, pcfg):
    import time

    cfg = small_config(**{"algo.batch_trajectories": 4, "algo.micro_batch_trajectories": 2, "algo.train_steps": 1})
    tr = Trainer(cfg, pcfg, rollouts=[])
    th = _start(tr)
    for i in range(3):  # one micro-batch is taken and back-propagated, the second never fills
        tr.submit(_traj(i, 0))
    time.sleep(0.5)
    tr.stop()
    th.join(10)
    rep = tr.finish()
    led = rep.ledger.check()
    assert rep.version == 0 and not led.consumed and sorted(led.dropped_unused) == [f"w0.i0.e0.n{i}" for i in range(3)]


def test_as_batches_take_the_oldest_units_first_so_a_slower_workers_surplus_is_not_dropped(ray_session, pcfg):
    """``as`` trains on what is filed when it pauses the rollouts; its surplus (episodes that straddled the
    pause) carries over. Ordered by id alone (worker first), worker 0's newer trajectories went before worker
    1's older ones, which then fell beyond max_staleness and were dropped (the run never reached version 3)."""
    import dataclasses

    cfg = small_config(**{"mode": "as", "algo.batch_trajectories": 2, "algo.micro_batch_trajectories": 1,
                          "algo.max_staleness": 1, "algo.train_steps": 3})
    tr = Trainer(cfg, pcfg, rollouts=[])
    th = _start(tr)
    for i in range(2):
        tr.submit(_traj(i, 0))
    assert tr.wait_version(1, 30) == 1

    def w1(i, version):
        return dataclasses.replace(_traj(i, version), worker=1, traj_id=f"w1.i0.e0.n{i}")

    old = [w1(0, 0), w1(1, 0)]  # worker 1's episodes still from version 0
    new = [_traj(2, 1), _traj(3, 1)]  # worker 0 is faster: already version 1
    with tr._cv:  # all four are filed before the trainer looks (the lock is reentrant; submit takes it too)
        for t in new + old:
            tr.submit(t)
    assert tr.wait_version(3, 30) == 3
    th.join(10)
    rep = tr.finish()
    led = rep.ledger.check()
    assert not led.dropped_stale and len(led.consumed) == 6
    assert list(led.consumed[2:4]) == [t.traj_id for t in old] and list(led.staleness) == [0, 0, 1, 1, 1, 1]
    assert [h["stale_step_frac"] for h in rep.history] == [0.0, 1.0, 1.0]  # versions 1, 2 trained on v0, v1 data


def _one_version(pcfg, trajs, epochs):
    cfg = small_config(**{"algo.batch_trajectories": len(trajs), "algo.micro_batch_trajectories": 1,
                          "algo.epochs": epochs, "algo.lr": 0.01, "algo.train_steps": 1, "algo.max_staleness": 0})
    tr = Trainer(cfg, pcfg, rollouts=[])
    th = _start(tr)
    for t in trajs:
        tr.submit(t)
    assert tr.wait_version(1, 30) == 1
    th.join(10)
    return tr, tr.finish()


def test_update_kl_is_the_kl_from_the_proximal_policy_after_all_but_the_last_optimizer_step(ray_session, pcfg):
    """``update_kl`` of a version trained with 3 epochs equals KL(initial || policy after 2 optimizer steps) on
    the batch's actions, computed here from a second trainer that ran exactly 2 epochs over the same batch
    (same seed: same initial weights, same Adam steps); one epoch gives 0."""
    import torch

    rng = np.random.default_rng(1)
    init = Trainer(small_config(), pcfg, rollouts=[]).policy  # the weights every trainer below starts from
    trajs = []
    for i in range(2):
        raw = rng.normal(0, 0.5, (3, 2)).astype(np.float32)
        obs = _traj(i, 0).obs
        with torch.no_grad():
            logp = init.evaluate_actions({k: torch.as_tensor(v) for k, v in obs.items()}, torch.as_tensor(raw))[0]
        trajs.append(_traj(i, 0, rewards=rng.normal(0, 1, 3).astype(np.float32), raw=raw, logp=logp.numpy()))
    _, rep3 = _one_version(pcfg, trajs, epochs=3)
    tr2, _ = _one_version(pcfg, trajs, epochs=2)
    kls = []
    for t in trajs:
        obs, raw = {k: torch.as_tensor(v) for k, v in t.obs.items()}, torch.as_tensor(t.raw_actions)
        with torch.no_grad():
            log_r = tr2.policy.evaluate_actions(obs, raw)[0] - init.evaluate_actions(obs, raw)[0]
        kls.append(float((log_r.exp() - 1 - log_r).mean()))
    assert np.mean(kls) > 1e-4  # the check below is not 0 == 0
    assert rep3.history[0]["update_kl"] == pytest.approx(np.mean(kls), rel=1e-4)
    assert _one_version(pcfg, trajs, epochs=1)[1].history[0]["update_kl"] == 0.0


def _kl_batch(pcfg, trajs, **over):
    """A batch whose behaviour log-probs are the initial policy's, and the trainer config for it."""
    import torch

    rng = np.random.default_rng(2)
    init = Trainer(small_config(), pcfg, rollouts=[]).policy
    out = []
    for i in range(trajs):
        raw = rng.normal(0, 0.5, (3, 2)).astype(np.float32)
        obs = _traj(i, 0).obs
        with torch.no_grad():
            logp = init.evaluate_actions({k: torch.as_tensor(v) for k, v in obs.items()}, torch.as_tensor(raw))[0]
        out.append(_traj(i, 0, rewards=rng.normal(0, 1, 3).astype(np.float32), raw=raw, logp=logp.numpy()))
    cfg = small_config(**{"algo.batch_trajectories": trajs, "algo.micro_batch_trajectories": 1, "algo.epochs": 2,
                          "algo.lr": 0.05, "algo.train_steps": 2, "algo.max_staleness": 2, **over})
    return init, out, cfg


def _run_versions(cfg, pcfg, trajs, versions):
    """Feed the same batch once per version (stamped with the version it is fed at: never stale)."""
    import dataclasses

    tr = Trainer(cfg, pcfg, rollouts=[])
    th = _start(tr)
    for v in range(versions):
        for t in trajs:
            tr.submit(dataclasses.replace(t, traj_id=f"{t.traj_id}.v{v}", versions=np.full_like(t.versions, v)))
        assert tr.wait_version(v + 1, 30) == v + 1
    th.join(10)
    return tr, tr.finish()


def test_target_kl_holds_every_version_within_its_trust_region_and_lowers_lr_after_halving(ray_session, pcfg):
    """With lr 0.05 an unconstrained version moves the policy far (checked); with target_kl each version ends
    within target_kl of its proximal policy on its batch (recomputed here from the weights of a trainer stopped
    after version 1), it had to halve, and the next version's lr is lr / 1.5."""
    import torch

    init, trajs, cfg = _kl_batch(pcfg, 2, **{"algo.train_steps": 1})
    free, _ = _run_versions(cfg, pcfg, trajs, 1)
    target = 1e-3

    def kl_from_init(policy):
        kls = []
        for t in trajs:
            obs, raw = {k: torch.as_tensor(v) for k, v in t.obs.items()}, torch.as_tensor(t.raw_actions)
            with torch.no_grad():
                log_r = policy.evaluate_actions(obs, raw)[0] - init.evaluate_actions(obs, raw)[0]
            kls.append(float((log_r.exp() - 1 - log_r).mean()))
        return float(np.mean(kls))

    assert kl_from_init(free.policy) > 10 * target  # without the trust region this batch moves it far
    one, rep1 = _run_versions(small_config(**{**_flat(cfg), "algo.target_kl": target}), pcfg, trajs, 1)
    h = rep1.history[0]
    assert h["kl_halvings"] > 0 and h["lr"] == 0.05
    assert h["version_kl"] == pytest.approx(kl_from_init(one.policy), rel=1e-4) and h["version_kl"] <= target
    _, rep2 = _run_versions(small_config(**{**_flat(cfg), "algo.target_kl": target, "algo.train_steps": 2}),
                            pcfg, trajs, 2)
    assert rep2.history[1]["lr"] == pytest.approx(0.05 / 1.5) and rep2.history[1]["version_kl"] <= target


def test_target_kl_far_above_the_steps_changes_no_weights_and_raises_lr(ray_session, pcfg):
    """A trust region the steps never reach: version 1's weights are bit-identical to the run without one, and
    the next version's lr is x 1.5 (its KL stayed under target_kl / 2), capped at 10x the configured lr."""
    _, trajs, cfg = _kl_batch(pcfg, 2, **{"algo.lr": 1e-3, "algo.train_steps": 1})
    free, _ = _run_versions(cfg, pcfg, trajs, 1)
    big, rep = _run_versions(small_config(**{**_flat(cfg), "algo.target_kl": 1e6}), pcfg, trajs, 1)
    assert rep.history[0]["kl_halvings"] == 0 and big.weights_sha256() == free.weights_sha256()
    _, rep6 = _run_versions(small_config(**{**_flat(cfg), "algo.target_kl": 1e6, "algo.train_steps": 7}),
                            pcfg, trajs, 7)
    lrs = [r["lr"] for r in rep6.history]
    assert lrs[:3] == pytest.approx([1e-3, 1.5e-3, 2.25e-3]) and lrs[-1] == pytest.approx(1e-2)


def test_target_kl_needs_an_objective_with_log_probs():
    with pytest.raises(ValueError, match="algo.target_kl"):
        small_config(**{"algo.target_kl": 0.1, "algo.loss": "flow_rwr"})
    with pytest.raises(ValueError, match="algo.target_kl"):
        small_config(**{"algo.target_kl": -1.0})


def _flat(cfg) -> dict:
    """The algo overrides of ``cfg`` as with_overrides keys (to vary one setting of a test's config)."""
    import dataclasses

    return {f"algo.{k}": v for k, v in dataclasses.asdict(cfg.algo).items()}


def test_publish_delivers_exactly_the_learners_acting_weights_to_the_rollout_workers(ray_session, pcfg):
    """What a rollout worker acts with after a publish is the trainer's policy, bit for bit (same actions and
    log-probs for the same rows and seeds), though only the acting weights travel; the critic is not run there."""
    import ray
    import torch

    from training.rl.batcher import ActRequest
    from training.rl.rollout import RolloutWorker

    cfg = small_config(**{"algo.train_steps": 1})
    rollout = ray.remote(RolloutWorker).remote(pcfg, 4, 2.0)
    tr = Trainer(cfg, pcfg, rollouts=[rollout])
    tr.publish()  # version 0
    with torch.no_grad():  # a later version whose weights differ from version 0's everywhere
        for prm in tr.policy.parameters():
            prm.add_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    tr.version = 1
    tr.publish()
    obs = {k: v[:2] for k, v in _traj(0, 0, T=2).obs.items()}
    obs["observation.state"] = np.array([[100.0, 300.0], [400.0, 50.0]], np.float32)
    seeds = np.array([5, 6])
    reply = ray.get(rollout.act.remote(ActRequest(0, obs, seeds)))
    want = tr.policy.act_with_logprob(obs, seeds)
    assert reply.version == 1
    assert np.array_equal(reply.raw, want.raw) and np.array_equal(reply.logprob, want.logprob)
    assert np.array_equal(reply.actions, want.actions) and np.isnan(reply.value).all()
    ray.kill(rollout)
