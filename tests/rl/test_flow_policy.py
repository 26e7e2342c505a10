"""The VLA as an RL policy (``training.rl.flow_policy``): the noisy Euler chain's log-prob is exact and re-scores to
the same value, zero noise is ``VLA.sample``, sampling is a pure function of (weights, row, seed), and clipped
policy-gradient steps on it move the policy towards rewarded actions."""

import math

import numpy as np
import pytest
import torch

from training.rl.flow_policy import FlowPolicy

LAYOUT = {
    "cameras": [], "image_size": [8, 8], "patch_size": 4, "image_encoder": "patches", "token_dim": 48, "encoder": None,
    "observation_offsets": [0], "action_offsets": [0, 1, 2], "state_features": ["observation.state"],
    "state_dims": [3], "state_dim": 3, "action_features": ["action"], "action_dims": [2], "action_dim": 2,
    "tokenizer": "byte", "vocab_size": 260,
    "norm": {"observation.state": {"shift": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0]},
             "action": {"shift": [0.5, -0.2], "scale": [2.0, 0.5]}},
}
CONFIG = {"layout": LAYOUT, "width": 32, "depth": 2, "heads": 2, "head_dim": 16, "denoise_steps": 4,
          "exec_steps": 1, "state_in_suffix": True, "rl_sigma": 0.2, "task": "reach"}


def _policy(seed: int = 0, **kw) -> FlowPolicy:
    torch.manual_seed(seed)
    return FlowPolicy(**{**CONFIG, **kw}).eval()


def _obs(n: int, seed: int = 1) -> dict:
    return {"observation.state": np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)}


def _reference_logp(p: FlowPolicy, state: np.ndarray, chain: np.ndarray, sigma: float) -> float:
    """One row's chain log-prob, independently: torch's Normal around x_k - v(x_k, t_k) / N, step by step."""
    prefix, cu, cond = p._inputs({"observation.state": state[None]})
    n, ref = p.denoise_steps, 0.0
    with torch.no_grad():
        for k in range(n):
            x = torch.from_numpy(chain[None, k])
            v = p.velocity(prefix, cu, x, torch.tensor([1.0 - k / n]), cond=cond)
            ref += float(torch.distributions.Normal(x - v / n, sigma).log_prob(torch.from_numpy(chain[None, k + 1])).sum())
    return ref


@pytest.mark.parametrize("exec_steps", [1, 2])
def test_sampled_logprob_equals_rescore_and_a_per_row_reference(exec_steps):
    """The executed actions are the final chunk's first ``exec_steps`` entries (flattened, un-normalized); the
    log-prob covers the whole chain of the whole chunk, whatever is executed."""
    p = _policy(exec_steps=exec_steps)
    obs, seeds = _obs(5), np.arange(5) * 7919 + 3
    s = p.act_with_logprob(obs, seeds)
    n, h, a = p.denoise_steps, p.horizon, 2
    assert s.raw.shape == (5, n + 1, h, a) and s.actions.shape == (5, exec_steps * a) and s.logprob.shape == (5,)
    # x_0 is row i's own noise; the executed actions are the final chunk's first entries, un-normalized
    np.testing.assert_array_equal(s.raw[2, 0], np.random.default_rng(int(seeds[2])).standard_normal((n + 1, h, a))[0]
                                  .astype(np.float32))
    want = (s.raw[:, -1, :exec_steps] * [2.0, 0.5] + [0.5, -0.2]).reshape(5, exec_steps * a)
    np.testing.assert_allclose(s.actions, want, rtol=1e-6)
    logp, ent, value = p.evaluate_actions({k: torch.from_numpy(v) for k, v in obs.items()}, torch.from_numpy(s.raw))
    assert logp.requires_grad and torch.equal(value, torch.zeros(5))
    np.testing.assert_allclose(logp.detach().numpy(), s.logprob, rtol=1e-5, atol=1e-3)
    for i in range(5):  # independent: one row at a time
        ref = _reference_logp(p, obs["observation.state"][i], s.raw[i], 0.2)
        assert s.logprob[i] == pytest.approx(ref, rel=1e-5, abs=1e-3)
    # the chain's entropy: N * horizon * A Gaussian dims of std sigma
    assert float(ent[0]) == pytest.approx(n * h * a * (0.5 * math.log(2 * math.pi * math.e) + math.log(0.2)))


def test_zero_noise_chain_is_exactly_vla_sample():
    """One denoising loop: ``VLA.sample`` from the same x_0 is the zero-noise chain's end, bit for bit."""
    p = _policy()
    prefix, cu, cond = p._inputs(_obs(4))
    ref = p.sample(prefix, cu, generator=torch.Generator().manual_seed(11), cond=cond)
    x0 = torch.randn(4, p.horizon, 2, generator=torch.Generator().manual_seed(11))
    noise = torch.cat([x0[:, None], torch.randn(4, p.denoise_steps, p.horizon, 2)], 1)  # step noise ignored at 0
    chain, logp = p.sample_chain(prefix, cu, noise, 0.0, cond)
    assert torch.equal(chain[:, -1], ref) and torch.equal(chain[:, 0], x0) and torch.equal(logp, torch.zeros(4))
    assert torch.equal(p.sample(prefix, cu, cond=cond, noise=noise), ref)
    noisy, _ = p.sample_chain(prefix, cu, noise, 0.2, cond)
    assert not torch.allclose(noisy[:, -1], ref, atol=1e-3)
    with pytest.raises(ValueError, match="step noise"):
        p.sample(prefix, cu, cond=cond, sigma=0.2)


def test_same_seed_same_sample_whatever_the_batch():
    p = _policy()
    obs = _obs(6)
    seeds = np.array([5, 17, 2**40 + 1, 99, 123456789, 7])
    full = p.act_with_logprob(obs, seeds)
    pick = [4, 0, 2]
    sub = p.act_with_logprob({k: v[pick] for k, v in obs.items()}, seeds[pick])
    np.testing.assert_allclose(sub.raw, full.raw[pick], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sub.logprob, full.logprob[pick], rtol=1e-6, atol=1e-4)
    # another seed, another chain
    other = p.act_with_logprob({k: v[:1] for k, v in obs.items()}, np.array([6]))
    assert not np.allclose(other.raw[0, 0], full.raw[0, 0])


def test_weights_round_trip_and_a_non_vla_chain_is_refused():
    p, q = _policy(0), _policy(1)
    obs, seeds = _obs(3), np.array([1, 2, 3])
    assert not np.allclose(p.act_with_logprob(obs, seeds).actions, q.act_with_logprob(obs, seeds).actions)
    q.set_weights(p.get_weights())
    np.testing.assert_array_equal(p.act_with_logprob(obs, seeds).actions, q.act_with_logprob(obs, seeds).actions)
    with pytest.raises(ValueError, match="denoise steps"):
        p.evaluate_actions({k: torch.from_numpy(v) for k, v in obs.items()}, torch.zeros(3, 2, 3, 2))
    with pytest.raises(ValueError, match="rl_sigma"):
        FlowPolicy(**{**CONFIG, "rl_sigma": 0.0})


def test_grpo_ppo_steps_move_the_first_action_towards_the_reward():
    """Reward = the executed action's first dim: a few rounds of sample -> group-relative advantages -> clipped
    (decoupled) PPO steps on ``evaluate_actions`` raise the policy's mean action there (a sign error would lower it)."""
    from training.rl.advantages import group_relative
    from training.rl.losses import decoupled

    p = _policy(3)
    obs = {"observation.state": np.repeat(_obs(1, seed=4)["observation.state"], 32, 0)}
    obs_t = {k: torch.from_numpy(v) for k, v in obs.items()}
    probe = np.arange(1000, 1064)

    def mean_first_action():
        return float(p.act_with_logprob({k: v.repeat(2, 0) for k, v in obs.items()}, probe).actions[:, 0].mean())

    before = mean_first_action()
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    for it in range(4):
        s = p.act_with_logprob(obs, np.arange(32) + 100 * it)
        adv = torch.from_numpy(group_relative(s.actions[:, 0], ["g"] * 32))
        behav, raw = torch.from_numpy(s.logprob), torch.from_numpy(s.raw)
        prox = None
        for _ in range(3):
            logp, _, _ = p.evaluate_actions(obs_t, raw)
            prox = logp.detach() if prox is None else prox
            loss, _ = decoupled(logp, prox, behav, adv, 0.2, 2.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = mean_first_action()
    assert after > before + 0.2, (before, after)


def test_x0_zero_starts_every_chain_at_zero_in_rl_and_in_act():
    """``x0_zero``: RL's chains start at 0 (the log-prob is unchanged: it never held x_0), and ``act`` is then
    deterministic: the noise-free chain from 0."""
    p = _policy(x0_zero=True)
    obs = _obs(3)
    s = p.act_with_logprob(obs, np.array([1, 2, 3]))
    assert np.all(s.raw[:, 0] == 0)
    logp, _, _ = p.evaluate_actions({k: torch.from_numpy(v) for k, v in obs.items()}, torch.from_numpy(s.raw))
    np.testing.assert_allclose(logp.detach().numpy(), s.logprob, rtol=1e-5, atol=1e-3)
    prefix, cu, cond = p._inputs(obs)
    ref = p.sample(prefix, cu, cond=cond, noise=torch.zeros(3, p.denoise_steps + 1, p.horizon, 2))
    a1 = p.act(obs, ["reach"] * 3)
    p.reset(3)
    np.testing.assert_array_equal(a1, p.act(obs, ["reach"] * 3))
    np.testing.assert_allclose(a1, p.unnormalize(ref[:, 0].numpy()), rtol=1e-6)
