"""The Gaussian actor-critic implements Policy and RLPolicy; sampling does not depend on batch composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoint import Policy, load_policy, save
from training.rl import RLPolicy, build_policy, make_env, policy_config, to_features
from training.rl.envs import get_family
from training.rl.policy import FACTORY

ENV = "gym_pusht/PushT-v0"


@pytest.fixture(scope="module")
def state_config():
    return policy_config(ENV)


def _obs(n, image=False, seed=0):
    env = make_env(ENV, image=image)
    rows = [to_features(env.reset(seed=seed + i)[0], get_family(ENV)) for i in range(n)]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def test_it_is_a_policy_and_an_rl_policy(state_config):
    p = build_policy(**state_config)
    assert isinstance(p, Policy) and isinstance(p, RLPolicy)
    assert sorted(p.input_features) == ["observation.environment_state", "observation.state"]


def test_a_rows_sample_depends_on_its_seed_not_on_its_batch(state_config):
    p = build_policy(**state_config)
    obs, seeds = _obs(5), np.arange(100, 105)
    full = p.act_with_logprob(obs, seeds)
    one = p.act_with_logprob({k: v[3:4] for k, v in obs.items()}, seeds[3:4])
    np.testing.assert_allclose(one.raw[0], full.raw[3], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(one.logprob[0], full.logprob[3], rtol=1e-5, atol=1e-5)
    again = p.act_with_logprob(obs, seeds)
    assert np.array_equal(again.raw, full.raw)
    other = p.act_with_logprob(obs, seeds + 1)
    assert not np.allclose(other.raw, full.raw)


def test_behaviour_logprobs_equal_the_rescored_ones_and_actions_stay_in_the_box(state_config):
    p = build_policy(**state_config)
    obs = _obs(6)
    s = p.act_with_logprob(obs, np.arange(6))
    logp, entropy, value = p.evaluate_actions(p.tensors(obs), torch.as_tensor(s.raw))
    np.testing.assert_allclose(logp.detach().numpy(), s.logprob, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value.detach().numpy(), s.value, rtol=1e-5, atol=1e-5)
    assert s.actions.shape == (6, 2) and s.actions.min() >= 0 and s.actions.max() <= 512
    assert p.act(obs, ["t"] * 6).shape == (6, 2)


def test_weights_round_trip_and_change_the_actions(state_config):
    a, b = build_policy(**state_config), build_policy(**state_config)
    obs = _obs(3)
    with torch.no_grad():
        for prm in b.parameters():
            prm.add_(0.5)
    assert not np.allclose(a.act(obs, []), b.act(obs, []))
    a.set_weights(b.get_weights())
    np.testing.assert_array_equal(a.act(obs, []), b.act(obs, []))


def test_the_image_policy_reads_the_top_camera_and_survives_a_checkpoint(tmp_path):
    cfg = policy_config(ENV, image=True)
    p = build_policy(**cfg)
    assert "observation.images.top" in p.input_features
    obs = _obs(2, image=True)
    assert obs["observation.images.top"].shape == (2, 96, 96, 3)
    path = save(tmp_path / "p.pt", p, factory=FACTORY, config=cfg, step=3)
    q, ckpt = load_policy(path)
    assert ckpt["step"] == 3
    np.testing.assert_array_equal(q.act(obs, ["t", "t"]), p.act(obs, ["t", "t"]))
    with pytest.raises(KeyError, match="lacks"):
        p.act({"observation.state": obs["observation.state"]}, ["t", "t"])


def test_rl_can_start_from_any_checkpointed_rl_policy_and_rejects_modules_that_cannot_act(tmp_path, state_config):
    from training.rl import RLConfig, policy_spec, with_overrides

    p = build_policy(**state_config)
    with torch.no_grad():
        p.log_std.fill_(-2.0)  # something a fresh build would not have
    path = save(tmp_path / "sft.pt", p, factory=FACTORY, config=state_config, step=100)
    spec = policy_spec(with_overrides(RLConfig(), {"policy.init_checkpoint": str(path)}))
    assert spec.factory == FACTORY and spec.config == state_config
    q = spec.build()
    assert torch.equal(q.log_std, p.log_std)
    linear = {"policy.factory": "linear", "policy.kwargs": {"in_features": 2, "out_features": 2}}
    with pytest.raises(ValueError, match="policy.factory: model factory 'linear' is not registered"):
        policy_spec(with_overrides(RLConfig(), linear))
    with pytest.raises(ValueError, match="'torch.nn:Linear' is not registered"):  # a module path chooses no code
        policy_spec(with_overrides(RLConfig(), {**linear, "policy.factory": "torch.nn:Linear"}))
    from training.factories import FACTORIES, register_factory

    try:
        register_factory("linear", torch.nn.Linear)
        with pytest.raises(TypeError, match="not an RLPolicy"):
            policy_spec(with_overrides(RLConfig(), linear)).build()
    finally:
        FACTORIES.pop("linear", None)


def test_acting_without_the_critic_gives_the_same_actions_and_reads_only_the_acting_weights(state_config):
    from training.rl.policy import acting_keys

    p = build_policy(**state_config)
    obs, seeds = _obs(4), np.arange(10, 14)
    full, lean = p.act_with_logprob(obs, seeds), p.act_with_logprob(obs, seeds, value=False)
    for name in ("actions", "raw", "logprob"):
        assert np.array_equal(getattr(full, name), getattr(lean, name)), name
    assert np.isnan(lean.value).all() and np.isfinite(full.value).all()
    keys = acting_keys(p)
    assert keys and not any(k.startswith("critic.") for k in keys)
    assert set(p.state_dict()) - set(keys) == {k for k in p.state_dict() if k.startswith("critic.")}
    # a policy given only another's acting weights acts exactly like it; its own critic is untouched
    q = build_policy(**state_config)
    with torch.no_grad():
        for prm in p.parameters():
            prm.add_(0.25)
    critic_before = {k: v.clone() for k, v in q.state_dict().items() if k.startswith("critic.")}
    q.set_weights(p.get_weights(keys))
    a, b = p.act_with_logprob(obs, seeds, value=False), q.act_with_logprob(obs, seeds, value=False)
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.logprob, b.logprob)
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in critic_before.items())
    with pytest.raises(KeyError, match="acting"):
        q.set_weights({k: v for k, v in p.get_weights().items() if k.startswith("critic.")})
    with pytest.raises(KeyError, match="acting"):
        q.set_weights(p.get_weights(keys[1:]))
