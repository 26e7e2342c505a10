"""Scripted-expert demonstrations: Meta-World's experts or the LIBERO pick-place expert (with action noise) -> a
LeRobot v3.0 dataset -> the lake.

    rep = record_expert_demos("./lake", "metaworld/reach-v3", episodes=20, noise=0.1, out="demos/reach")
    rep.dataset, rep.kept, rep.success_rate, rep.ingest.version

    python -m training.sims.demos metaworld/push-v3 --episodes 20 --noise 0.1 --out demos/push --lake ./lake

Each episode is a rollout of ``ScriptedExpert`` from a seeded goal (episode i: the env seed ``lake eval`` would
use for (seed, i); LIBERO: a fresh scene sampled from that seed, see ``experts.demo_env_kwargs``), recorded with
the env's camera (``observation.images.corner2``), ``observation.state``,
``action`` and the reward / done / success columns, and the task text. The dataset is a genuine LeRobot v3.0
folder (``lake._lerobot_writer``), so it is ingested like any other source and LeRobot can read it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DemoReport:
    dataset: str  # the LeRobot v3.0 folder
    env_id: str
    rolled_out: int  # episodes simulated
    kept: int  # episodes written (all, or the successful ones with only_success)
    frames: int
    success_rate: float  # over the rolled-out episodes
    noise: float
    seed: int
    ingest: object | None = None  # lake.IngestReport when ingested


def _frames(ep: dict) -> dict:
    t = len(ep["rewards"])
    done, success = np.zeros(t, bool), np.zeros(t, bool)
    done[-1], success[-1] = True, ep["success"]
    return {**{n: np.asarray(x, np.float32) for n, x in ep["frames"].items()}, "action": ep["actions"],
            "next.reward": ep["rewards"], "next.done": done, "next.success": success}


def write_expert_demos(out, env_id: str, *, episodes: int = 10, noise: float = 0.1, seed: int = 0,
                       max_steps: int | None = None, only_success: bool = True, batch_size: int = 4,
                       camera: bool = True, env_kwargs: dict | None = None) -> DemoReport:
    """Roll out the scripted expert for ``env_id`` ``episodes`` times and write a LeRobot v3.0 dataset at
    ``out``. ``noise``: Gaussian action noise std (actions are in [-1, 1]). ``only_success``: drop failed
    episodes (raises ValueError if none succeeded). ``camera`` False: state, action and task only (nothing is
    rendered: the lean input set of state-only policies). ``env_kwargs``: env options (None: the expert's
    ``demo_env_kwargs``). Raises FileExistsError if ``out`` is not empty."""
    from lake._lerobot_writer import write_lerobot_v30
    from training.evaluate import run_episodes
    from training.rl.envs import get_family

    from .experts import build_expert, demo_env_kwargs

    fam = get_family(env_id)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f"{out} is not empty")
    expert = build_expert(env_id, noise=noise, seed=seed)
    eps = run_episodes(expert, env_id, episodes, seed=seed, record_video=camera, max_steps=max_steps,
                       batch_size=batch_size, env_kwargs=demo_env_kwargs(env_id) if env_kwargs is None else env_kwargs)
    keep = [e for e in eps if e["success"] or not only_success]
    if not keep:
        raise ValueError(f"{env_id}: none of {episodes} expert episodes (noise {noise}) succeeded; nothing to write")
    missing = [e["index"] for e in keep if camera and e["images"] is None]
    if missing:
        raise ValueError(f"{env_id}: no camera frames for episodes {missing} (the env cannot render)")
    write_lerobot_v30(out, [{"frames": _frames(e), "images": {fam.camera: e["images"]} if camera else {},
                             "task": e["task"]}
                            for e in keep], fps=int(round(eps[0]["fps"])), robot_type=fam.robot_type)
    return DemoReport(os.fspath(out), env_id, len(eps), len(keep), int(sum(len(e["rewards"]) for e in keep)),
                      float(np.mean([e["success"] for e in eps])), float(noise), int(seed))


def record_expert_demos(lake_uri, env_id: str, *, out, split_ratios: dict[str, float] | None = None,
                        message: str | None = None, storage_options: dict | None = None, **kw) -> DemoReport:
    """``write_expert_demos`` then ingest the dataset into the lake at ``lake_uri`` (created if needed) as one
    version; ``kw`` go to ``write_expert_demos``."""
    import dataclasses

    import lake

    rep = write_expert_demos(out, env_id, **kw)
    lk = lake.open(lake_uri, create=True, storage_options=storage_options)
    ing = lk.ingest(rep.dataset, split_ratios=split_ratios or {"train": 1.0},
                    message=message or f"expert demos: {env_id}, {rep.kept} episodes, noise {rep.noise}")
    return dataclasses.replace(rep, ingest=ing)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.sims.demos", description=__doc__.splitlines()[0])
    p.add_argument("env", help="e.g. metaworld/reach-v3")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.1, help="Gaussian action noise std (actions in [-1, 1])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--keep-failures", action="store_true", help="also write the episodes that did not succeed")
    p.add_argument("--no-camera", action="store_true", help="state, action and task only (no rendering)")
    p.add_argument("--out", required=True, help="the LeRobot v3.0 folder to write (must be empty)")
    p.add_argument("--lake", default=None, help="ingest into this lake (default $LAKE_URI; none: only write)")
    args = p.parse_args(argv)
    kw = dict(episodes=args.episodes, noise=args.noise, seed=args.seed, max_steps=args.max_steps,
              only_success=not args.keep_failures, camera=not args.no_camera)
    uri = args.lake or os.environ.get("LAKE_URI")
    rep = record_expert_demos(uri, args.env, out=args.out, **kw) if uri else write_expert_demos(args.out, args.env, **kw)
    print(f"{rep.env_id}: {rep.rolled_out} expert episodes (noise {rep.noise}), success {rep.success_rate:.0%}; "
          f"{rep.kept} episodes / {rep.frames} frames written to {rep.dataset}")
    if rep.ingest is not None:
        print(f"ingested into {uri}: version {rep.ingest.version} ({rep.ingest.episodes_added} episodes added)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
