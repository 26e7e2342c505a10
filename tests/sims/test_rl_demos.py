"""The SFT demos' loss mixed into RL (``algo.demo_coef``, ``training.rl.demos``): each optimizer step adds exactly
``demo_coef`` x the SFT loss of the next pack of the pinned demos (a version the trainer trains with no RL row kept
equals plain Adam steps on those packs), and the stream goes on across epochs."""

import numpy as np
import torch
from sims_marks import needs_metaworld, packed_reach_demos

import lake

pytestmark = needs_metaworld
ENV = "metaworld/reach-v3"


def test_demo_loss_is_added_to_every_optimizer_step_exactly(tmp_path, ray_session):
    from training.rl import PolicySpec, RLConfig, Trajectory, with_overrides
    from training.rl.demos import DemoStream
    from training.rl.flow_policy import FACTORY
    from training.rl.trainer import Trainer
    from training.sims.metaworld_sft import METAWORLD_VLA

    uri, recipe, version = packed_reach_demos(tmp_path)
    layout = lake.open(uri).stream("train", recipe=recipe.hash).source.layout
    config = {"layout": layout, **METAWORLD_VLA, "denoise_steps": 3, "rl_sigma": 0.1, "task": "reach"}
    cfg = with_overrides(RLConfig(), {
        "algo.loss": "flow_rwr", "algo.rwr_weight": "return", "algo.rwr_min_return": 1e9,
        "algo.batch_trajectories": 4, "algo.micro_batch_trajectories": 4, "algo.epochs": 2, "algo.train_steps": 1,
        "algo.lr": 1e-3, "algo.demo_coef": 0.5, "algo.demo_lake": uri, "algo.demo_recipe": recipe.hash,
        "algo.demo_version": version, "seed": 3})
    torch.manual_seed(0)
    spec = PolicySpec(FACTORY, config, weights=None)
    tr = Trainer(cfg, spec, rollouts=[])
    init = tr.policy.get_weights()
    rng = np.random.default_rng(0)
    T = 2
    for i in range(4):  # returns 0: with rwr_min_return 1e9 no RL row is kept, the demos alone move the weights
        state = rng.standard_normal((T, 39)).astype(np.float32)
        s = tr.policy.act_with_logprob({"observation.state": state}, np.arange(T) + 10 * i)
        tr.submit(Trajectory(f"w0.i0.e0.n{i}", 0, 0, 0, i, f"g{i}", i, "reach", {"observation.state": state},
                             {"observation.state": state[-1]}, s.actions, s.raw, s.logprob, np.zeros(T, np.float32),
                             np.zeros(T, np.float32), np.zeros(T, np.int64), False, True, False))
    tr.run()
    rep = tr.finish()
    h = rep.history[0]
    assert h["rwr_kept"] == 0.0 and h["demo_loss"] > 0

    # the reference: the same weights, Adam as the trainer's, two steps on the next two demo packs (the trainer's
    # generator draws the RL rows' noise and times first: replayed, and unused since their weights are 0)
    ref = spec.build()
    ref.set_weights(init)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3, eps=1e-5)
    demos, gen = DemoStream(uri, recipe.hash, version, 3), torch.Generator().manual_seed(3)
    losses = []
    for _ in range(2):
        torch.randn((4 * T, ref.horizon, layout["action_dim"]), generator=gen)
        torch.rand(4 * T, generator=gen)
        opt.zero_grad()
        loss = ref.loss(demos.next(), gen)
        (0.5 * loss).backward()
        losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.algo.max_grad_norm)
        opt.step()
    assert h["demo_loss"] == np.mean(losses)
    got = tr.policy.get_weights()
    for k, v in ref.get_weights().items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert any(not np.array_equal(init[k], got[k]) for k in got)
    # a 2-episode pack is one batch: the stream went on into later epochs
    assert demos.epoch >= 1
