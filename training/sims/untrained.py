"""An untrained RL policy checkpoint for a simulator task: the baseline any training there is compared against,
and a checkpoint a newcomer can try ``lake eval`` with (LIBERO ships no demonstrations to train from).

Its own module, above ``training.rl``: the env adapters (``training.sims.libero``) are imported *by*
``training.rl.envs``, so they must not import ``training.rl`` back.
"""
from __future__ import annotations


def save_untrained(path, env_id: str, *, image: bool = True, max_steps: int | None = None, seed: int = 0,
                   hidden: int = 64) -> str:
    """Write a freshly initialised RL policy (``gaussian_actor_critic``: the env's state, plus its first camera
    with ``image``) for ``env_id``. The checkpoint records its env (and ``max_steps``), so ``lake eval`` needs
    no --env."""
    import torch

    from training.checkpoint import save
    from training.rl import build_policy, policy_config
    from training.rl.policy import FACTORY

    cfg = policy_config(env_id, image=image, hidden=hidden)
    torch.manual_seed(seed)
    extra = {"env_id": env_id, "untrained": True, "seed": int(seed)}
    if max_steps:
        extra["max_episode_steps"] = int(max_steps)
    return save(path, build_policy(**cfg), factory=FACTORY, config=cfg, step=0, lineage={"extra": extra})


def main(argv: list[str] | None = None) -> int:
    """``python -m training.sims.untrained ENV_ID --untrained CKPT [--max-steps N] [--state-only]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.sims.untrained", description=main.__doc__)
    p.add_argument("env_id", help="e.g. libero/<suite>/<task id>[/<init-state index>] or metaworld/<task>")
    p.add_argument("--untrained", required=True, metavar="CKPT", help="write an untrained policy checkpoint here")
    p.add_argument("--max-steps", type=int, default=None, help="episode limit recorded for lake eval")
    p.add_argument("--state-only", action="store_true", help="a policy that reads no camera (nothing rendered)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = save_untrained(args.untrained, args.env_id, image=not args.state_only, max_steps=args.max_steps,
                          seed=args.seed)
    what = ""
    if args.env_id.startswith("libero/"):
        from training.sims.libero import describe

        what = f" ({describe(args.env_id)!r})"
    print(f"wrote {path}: untrained policy for {args.env_id}{what}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
