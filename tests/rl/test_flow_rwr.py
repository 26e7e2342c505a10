"""Advantage-weighted flow matching (``algo.loss: flow_rwr``, ``training.rl.losses.flow_rwr``): with every weight 1
it is the plain SFT flow-matching loss on the rollouts' executed chunks, rows of weight 0 give exactly no gradient,
and its steps move a flow policy towards the rewarded actions, in the trainer too."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from training.rl import PolicySpec, Trajectory, get_objective, with_overrides
from training.rl.advantages import group_relative
from training.rl.flow_policy import FACTORY as FLOW
from training.rl.losses import flow_rwr
from training.rl.policy import FACTORY as GAUSSIAN, policy_config
from training.rl.trainer import Trainer

from rl_configs import small_config
from test_flow_policy import CONFIG, _obs, _policy


def _algo(**kw):
    from training.rl import RLConfig

    return with_overrides(RLConfig(), {"algo.loss": "flow_rwr", **{f"algo.{k}": v for k, v in kw.items()}}).algo


def _batch(p, n: int, seed: int = 0) -> dict:
    obs = _obs(n, seed=seed + 1)
    s = p.act_with_logprob(obs, np.arange(n) + 1000 * seed)
    return {"obs": {k: torch.from_numpy(v) for k, v in obs.items()}, "raw": torch.from_numpy(s.raw)}


def _draws(n: int, p, seed: int):
    """The noise and times ``flow_matching_loss`` draws from a generator seeded ``seed`` (VLA.loss's order)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, p.horizon, 2), generator=g)
    return noise, torch.rand(n, generator=g).pow(1 / 1.5) * 0.999 + 0.001


def _reference_fm(p, obs: dict, raw: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The flow-matching loss written out independently, row by row through ``VLA.velocity`` (the packed path):
    x_t = t noise + (1 - t) a, target noise - a, a = the chain's final (executed) chunk; the mean over rows."""
    out = []
    for i in range(len(raw)):
        prefix, cu, cond = p._inputs({k: v[i:i + 1] for k, v in obs.items()})
        a, e, ti = raw[i:i + 1, -1], noise[i:i + 1], t[i:i + 1]
        v = p.velocity(prefix, cu, ti * e + (1 - ti) * a, ti, cond=cond)
        out.append((v - (e - a)).pow(2).mean())
    return torch.stack(out).mean()


def _same_grads(grads, ref_grads, p, atol: float) -> None:
    """Equal gradients, parameter by parameter (a parameter one path leaves out of the graph counts as 0); at least
    one nonzero."""
    nonzero = 0
    for g, r, w in zip(grads, ref_grads, p.parameters()):
        g, r = (torch.zeros_like(w) if x is None else x for x in (g, r))
        torch.testing.assert_close(g, r, rtol=1e-4, atol=atol)
        nonzero += int(g.abs().sum() > 0)
    assert nonzero > 10


def test_unit_weights_give_the_plain_flow_matching_loss():
    """exp weights at A = 0 are all 1: the objective is the SFT loss on the executed chunks, same noise and
    times, equal to a row-by-row reference through the packed attention path (value and gradient)."""
    p = _policy(2)
    mb = _batch(p, 6)
    mb["adv"] = torch.zeros(6)
    loss, info = flow_rwr(p, mb, _algo(rwr_weight="exp"), generator=torch.Generator().manual_seed(5))
    assert info["rwr_weight"] == 1.0 and info["rwr_kept"] == 1.0
    grads = torch.autograd.grad(loss, list(p.parameters()), allow_unused=True)
    ref = _reference_fm(p, mb["obs"], mb["raw"], *_draws(6, p, 5))
    ref_grads = torch.autograd.grad(ref, list(p.parameters()), allow_unused=True)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    _same_grads(grads, ref_grads, p, atol=1e-6)
    # the same through the registry the trainer dispatches on
    loss2, _ = get_objective("flow_rwr").fn(p, mb, _algo(rwr_weight="exp"), correction=None, first=True,
                                            generator=torch.Generator().manual_seed(5))
    assert float(loss2.detach()) == float(loss.detach())


def test_positive_weights_exclude_zero_and_negative_advantages_exactly():
    """Filtering: the gradient is that of the kept rows alone (divided by the whole micro-batch's rows), whatever
    the excluded rows hold; A = 0 (a group whose returns are all equal) is excluded too."""
    p = _policy(4)
    mb = _batch(p, 6, seed=1)
    mb["adv"] = torch.tensor([1.5, -0.5, 0.0, 0.2, -2.0, 0.0])
    kept = torch.tensor([0, 3])
    algo = _algo(rwr_weight="positive")
    loss, info = flow_rwr(p, mb, algo, generator=torch.Generator().manual_seed(9))
    assert info["rwr_kept"] == pytest.approx(2 / 6) and info["adv_positive"] == pytest.approx(2 / 6)
    grads = torch.autograd.grad(loss, list(p.parameters()), allow_unused=True)
    noise, t = _draws(6, p, 9)
    per_row = p.flow_matching_loss({k: v[kept] for k, v in mb["obs"].items()}, mb["raw"][kept], noise=noise[kept],
                                   t=t[kept])
    ref = per_row.sum() / 6
    ref_grads = torch.autograd.grad(ref, list(p.parameters()), allow_unused=True)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    _same_grads(grads, ref_grads, p, atol=1e-7)
    # garbage in the excluded rows changes nothing
    junk = {**mb, "raw": mb["raw"].clone()}
    junk["raw"][[1, 2, 4, 5]] = 50.0
    loss_j, _ = flow_rwr(p, junk, algo, generator=torch.Generator().manual_seed(9))
    assert float(loss_j.detach()) == pytest.approx(float(loss.detach()), rel=1e-6)
    # return filtering (ReST-style) keeps rows by their episode's return, whatever the group: rows 2 and 5 have
    # A = 0 (a group that all succeeded) but a positive return; row 0 has A > 0 but return 0 (a dense-reward case)
    mb["episode_return"] = torch.tensor([0.0, 0.0, 1.0, 1.0, -1.0, 1.0])
    _, info = flow_rwr(p, mb, _algo(rwr_weight="return"), generator=torch.Generator().manual_seed(9))
    assert info["rwr_kept"] == pytest.approx(3 / 6)
    noise, t = _draws(6, p, 9)
    kept = torch.tensor([2, 3, 5])
    ref = p.flow_matching_loss({k: v[kept] for k, v in mb["obs"].items()}, mb["raw"][kept], noise=noise[kept],
                               t=t[kept]).sum() / 6
    loss_r, _ = flow_rwr(p, mb, _algo(rwr_weight="return"), generator=torch.Generator().manual_seed(9))
    assert float(loss_r.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    _, info = flow_rwr(p, mb, _algo(rwr_weight="return", rwr_min_return=-2.0),
                       generator=torch.Generator().manual_seed(9))
    assert info["rwr_kept"] == 1.0
    # exp weights: exp(A / beta) capped
    _, info = flow_rwr(p, mb, _algo(rwr_weight="exp", rwr_beta=0.5, rwr_max_weight=4.0),
                       generator=torch.Generator().manual_seed(9))
    want = np.minimum(np.exp(mb["adv"].numpy() / 0.5), 4.0).mean()
    assert info["rwr_weight"] == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("weight", ["positive", "exp", "return"])
def test_weighted_flow_matching_moves_the_action_towards_the_reward(weight):
    """Reward = the executed action's first dim: rounds of sample -> group-relative advantages -> flow_rwr steps
    raise the policy's mean first action (noise-free ``act``; a sign error or a no-op would not)."""
    p = _policy(3)
    obs = {"observation.state": np.repeat(_obs(1, seed=4)["observation.state"], 32, 0)}
    obs_t = {k: torch.from_numpy(v) for k, v in obs.items()}

    def mean_first_action():
        torch.manual_seed(0)  # act draws x_0 from torch's generator: the same draws before and after
        p.reset(64)
        return float(p.act({k: v.repeat(2, 0) for k, v in obs.items()}, ["reach"] * 64)[:, 0].mean())

    before = mean_first_action()
    algo, gen = _algo(rwr_weight=weight), torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    for it in range(4):
        s = p.act_with_logprob(obs, np.arange(32) + 100 * it)
        first = torch.from_numpy(s.actions[:, 0])
        mb = {"obs": obs_t, "raw": torch.from_numpy(s.raw), "episode_return": first - first.median(),
              "adv": torch.from_numpy(group_relative(s.actions[:, 0], ["g"] * 32))}
        for _ in range(3):
            loss, _ = flow_rwr(p, mb, algo, generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = mean_first_action()
    assert after > before + 0.2, (before, after)


def _flow_traj(i: int, group: str, state: np.ndarray, raw: np.ndarray, reward: float, version: int) -> Trajectory:
    obs = {"observation.state": state[None]}
    return Trajectory(f"w0.i0.e0.n{i}", 0, 0, 0, i, group, i, "reach", obs, {"observation.state": state},
                      np.zeros((1, 2), np.float32), raw[None], np.zeros(1, np.float32), np.zeros(1, np.float32),
                      np.array([reward], np.float32), np.full(1, version, np.int64), True, False, reward > 0)


@pytest.mark.parametrize("weight", ["positive", "return"])
def test_the_trainer_runs_flow_rwr_on_a_flow_policy_and_refuses_other_policies(ray_session, weight):
    """``algo.loss: flow_rwr`` selected through the config: a version trained on GRPO groups of a one-step bandit
    (reward 1 when the executed first action is above the group's median) raises the mean first action; its
    history rows carry the weighting's metrics and no KL (no log-probs involved). A policy without a
    flow-matching loss is refused at construction."""
    overrides = {"algo.loss": "flow_rwr", "algo.rwr_weight": weight, "algo.advantage": "grpo",
                 "algo.group_size": 4, "algo.batch_trajectories": 16, "algo.micro_batch_trajectories": 4,
                 "algo.epochs": 3, "algo.lr": 3e-3, "algo.max_grad_norm": 1.0, "algo.train_steps": 3,
                 "algo.max_staleness": 0}
    cfg = small_config(**overrides)
    tr = Trainer(cfg, PolicySpec(FLOW, dict(CONFIG)), rollouts=[])
    p = tr.policy
    state = _obs(1, seed=4)["observation.state"][0]
    batch = {"observation.state": np.repeat(state[None], 64, 0)}

    def mean_first_action():
        torch.manual_seed(0)
        p.reset(64)
        with torch.no_grad():
            return float(p.act(batch, ["reach"] * 64)[:, 0].mean())

    before = mean_first_action()
    th = threading.Thread(target=tr.run, daemon=True)
    th.start()
    n = 0
    for version in range(3):
        with torch.no_grad():
            s = p.act_with_logprob({"observation.state": batch["observation.state"][:16]}, np.arange(16) + 97 * version)
        for g in range(4):
            first = s.actions[4 * g:4 * g + 4, 0]
            for j in range(4):
                r = float(first[j] > np.median(first))
                tr.submit(_flow_traj(n, f"v{version}g{g}", state, s.raw[4 * g + j], r, version))
                n += 1
        assert tr.wait_version(version + 1, 60) == version + 1
    th.join(10)
    rep = tr.finish()
    assert [h["consumed_trajectories"] for h in rep.history] == [16, 32, 48]
    assert all(h["rwr_kept"] == 0.5 and "update_kl" not in h and h["fm_loss"] > 0 for h in rep.history)
    assert mean_first_action() > before + 0.1
    with pytest.raises(ValueError, match="flow_matching_loss"):
        Trainer(cfg, PolicySpec(GAUSSIAN, policy_config("gym_pusht/PushT-v0")), rollouts=[])


def test_config_names_the_objective_and_its_weighting():
    with pytest.raises(ValueError, match="algo.loss"):
        small_config(**{"algo.loss": "rwr"})
    with pytest.raises(ValueError, match="algo.rwr_weight"):
        small_config(**{"algo.loss": "flow_rwr", "algo.rwr_weight": "softmax"})
    assert small_config(**{"algo.rwr_weight": "return"}).algo.rwr_min_return == 0.0
    with pytest.raises(ValueError, match="algo.rwr_beta"):
        small_config(**{"algo.rwr_beta": 0.0})
    assert small_config().algo.loss == "pg"
