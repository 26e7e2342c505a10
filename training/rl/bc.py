"""Supervised warm start of the RL actor-critic from lake episodes (behaviour cloning), saved as a checkpoint
that ``PolicyConfig.init_checkpoint`` starts RL from.

    ckpt = behaviour_clone("./lake", "metaworld/reach-v3", out="bc.pt", steps=1500)
    run(with_overrides(cfg, {"policy.init_checkpoint": ckpt}))

Why not the VLA: RL here needs a policy with tractable log-probs of its actions (``RLPolicy``); the reference
VLA samples actions by flow matching, whose density is not available in closed form. The actor-critic is
fitted by Gaussian log-likelihood of the recorded actions (mean and std), the critic by regression on the
discounted return-to-go of the same episodes (``next.reward``), so PPO starts with a critic that matches the
policy instead of a random one. Raises ValueError when the lake has no episodes in ``split``.
"""

from __future__ import annotations

import numpy as np
import torch


def _episodes(lk, names: list[str], split: str | None, gamma: float, limit: int | None):
    cols = [*names, "action", "next.reward"]
    eps = lk.episodes(split=split).sort_by([("source", "ascending"), ("source_episode_index", "ascending")])
    ids = eps["episode_id"].to_pylist()[:limit]
    if not ids:
        raise ValueError(f"{lk.uri}: no episodes in split {split!r} to clone")
    obs = {n: [] for n in names}
    acts, rets = [], []
    for eid in ids:
        fr = lk.frames(eid, columns=cols)
        for n in names:
            obs[n].append(np.asarray(fr[n].to_pylist(), np.float32))
        acts.append(np.asarray(fr["action"].to_pylist(), np.float32))
        r = np.asarray(fr["next.reward"].to_pylist(), np.float64)
        g, out = 0.0, np.zeros(len(r))
        for t in range(len(r) - 1, -1, -1):  # the return-to-go the critic should predict
            g = r[t] + gamma * g
            out[t] = g
        rets.append(out.astype(np.float32))
    return {n: np.concatenate(v) for n, v in obs.items()}, np.concatenate(acts), np.concatenate(rets), ids


def behaviour_clone(lake_uri: str, env_id: str, *, out: str, steps: int = 1500, batch_size: int = 256,
                    lr: float = 1e-3, hidden: int = 64, gamma: float = 0.99, split: str | None = "train",
                    seed: int = 0, episodes: int | None = None, reward_scale: float = 1.0,
                    storage_options: dict | None = None) -> dict:
    """Fit the ``gaussian_actor_critic`` for ``env_id`` to the lake's episodes (``episodes``: only the first
    that many, in source order; ``reward_scale``: as the RL env will scale rewards). Steps are minibatches of
    ``batch_size`` frames. Returns {"checkpoint", "loss", "frames", "episodes", "lake_version"}."""
    import lake
    from training.checkpoint import save

    from .policy import FACTORY, build_policy, policy_config

    torch.manual_seed(seed)
    lk = lake.open(lake_uri, storage_options=storage_options)
    config = policy_config(env_id, hidden=hidden)
    policy = build_policy(**config)
    obs, actions, returns, ids = _episodes(lk, policy.state_names, split, gamma, episodes)
    # env units -> the pre-clip Gaussian's space (to_env's inverse), kept inside the box tanh can reach
    low, high = policy.act_low.numpy(), policy.act_high.numpy()
    u = np.clip((actions - low) / (high - low) * 2 - 1, -0.999, 0.999)
    obs_t = {n: torch.from_numpy(v) for n, v in obs.items()}
    u_t, ret_t = torch.from_numpy(u), torch.from_numpy(returns * np.float32(reward_scale))
    scale = float(ret_t.abs().mean().clamp_min(1e-6))
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(u_t), (batch_size,), generator=gen)
        dist, value = policy.distribution({n: v[idx] for n, v in obs_t.items()})
        nll = -dist.log_prob(u_t[idx]).sum(-1).mean()
        vloss = ((value - ret_t[idx]) / scale).pow(2).mean()
        loss = nll + vloss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(nll.item())
    lineage = {"lake_uri": lk.uri, "lake_version": lk.version, "lake_tag": None, "recipe_hash": None,
               "packed_table": None, "extra": {"env_id": env_id, "source": "behaviour_clone", "episodes": len(ids),
                                               "frames": int(len(u)), "steps": steps}}
    path = save(out, policy, factory=FACTORY, config=config, step=steps, lineage=lineage, losses=losses)
    return {"checkpoint": path, "loss": float(np.mean(losses[-50:])), "frames": int(len(u)), "episodes": len(ids),
            "lake_version": lk.version}
