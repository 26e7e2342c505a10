"""Closed-loop evaluation: run a checkpoint's ``Policy`` in the simulator, record the episodes and a summary
row in the lake as ONE lake version.

    from training.evaluate import evaluate
    rep = evaluate("ckpt.pt", "gym_pusht/PushT-v0", episodes=10, lake_uri="./lake")
    rep.success_rate, rep.mean_return, rep.lake_version

    lake eval ckpt.pt --env gym_pusht/PushT-v0 --episodes 10 --lake ./lake

Episodes are lake episodes (source ``eval/<env id>``, split ``eval``, camera frames as video when
``record_video``), and the ``evals`` table gets one row (schema ``EVALS``) naming the checkpoint, its step and
its lineage: the lake version / tag / recipe hash it was trained on. Episode ids are content ids, so an
evaluation whose episodes are all already in the lake (same checkpoint, same seeds) adds nothing: the report
says so (``lake_version`` None, ``already_recorded`` True) and the earlier version holds its row.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

import lake

EVALS = pa.schema([
    pa.field("eval_id", pa.string(), nullable=False),
    pa.field("checkpoint", pa.string()),
    pa.field("checkpoint_step", pa.int64()),
    # lineage: the data the checkpoint was trained on
    pa.field("lake_uri", pa.string()),
    pa.field("lake_version", pa.int64()),
    pa.field("lake_tag", pa.string()),
    pa.field("recipe_hash", pa.string()),
    pa.field("env_id", pa.string()),
    pa.field("episodes", pa.int64()),
    pa.field("success_rate", pa.float64()),
    pa.field("mean_return", pa.float64()),
    pa.field("mean_length", pa.float64()),
    pa.field("seed", pa.int64()),
    pa.field("episode_ids", pa.list_(pa.string())),
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
])


@dataclass(frozen=True)
class EvalEpisode:
    index: int
    env_seed: int
    length: int
    episode_return: float
    success: bool
    episode_id: str


@dataclass(frozen=True)
class EvalReport:
    eval_id: str
    checkpoint: str
    checkpoint_step: int
    env_id: str
    episodes: int
    success_rate: float
    mean_return: float
    mean_length: float
    rows: tuple[EvalEpisode, ...]
    lineage: dict = field(default_factory=dict)
    lake_uri: str | None = None
    lake_version: int | None = None  # the one version holding these episodes + the evals row
    already_recorded: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"eval {self.checkpoint} (step {self.checkpoint_step}) on {self.env_id}: {self.episodes} episodes, "
                 f"success rate {self.success_rate:.1%}, mean return {self.mean_return:.3f}, "
                 f"mean length {self.mean_length:.1f} ({self.seconds:.1f} s)"]
        if self.lake_uri is None:
            lines.append("not recorded (no lake given)")
        elif self.already_recorded:
            lines.append(f"lake {self.lake_uri}: these exact episodes are already recorded; nothing new written")
        else:
            lines.append(f"lake {self.lake_uri}: version {self.lake_version} ({self.episodes} episodes + evals row "
                         f"{self.eval_id})")
        return "\n".join(lines)


def _env_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, i, 11]).generate_state(1)[0] % (2**31 - 1))


def _policy_seed(seed: int, start: int) -> int:
    return int(np.random.SeedSequence([seed, start, 13]).generate_state(1)[0])


def _wants_image(policy, family) -> bool:
    wants = list(getattr(policy, "input_features", None) or [])
    if not wants:  # a policy that does not say what it reads gets everything the env can show
        return True
    return any(n == family.camera or n.startswith("observation.image") for n in wants)


def _roll_wave(policy, envs, obs, eps, task, fam, record_video) -> None:
    """Step one wave of envs until every episode in it is done (fills ``eps`` in place)."""
    from training.rl.envs import render_frame, to_features

    while not all(e["done"] for e in eps):
        batch = {n: np.stack([o[n] for o in obs]) for n in obs[0]}
        actions = np.asarray(policy.act(batch, [task] * len(eps)), np.float32)
        if actions.shape[0] != len(eps):
            raise ValueError(f"policy returned {actions.shape[0]} actions for a batch of {len(eps)}")
        for j, e in enumerate(eps):
            if e["done"]:
                continue
            if record_video:
                frame = obs[j].get(fam.camera)
                e["images"].append(frame if frame is not None else render_frame(envs[j]))
            e["frames"].append({n: x for n, x in obs[j].items() if not (x.dtype == np.uint8 and x.ndim == 3)})
            o, r, term, trunc, info = envs[j].step(actions[j])
            e["actions"].append(actions[j])
            e["rewards"].append(float(r))
            e["success"] = e["success"] or bool(info.get("is_success", False))
            e["done"] = bool(term or trunc)
            obs[j] = to_features(o, fam)


def run_episodes(policy, env_id: str, episodes: int, *, seed: int = 0, record_video: bool = True,
                 max_steps: int | None = None, batch_size: int = 8, task: str | None = None,
                 env_kwargs: dict | None = None, env_seeds=None) -> list[dict]:
    """Roll ``policy`` out for ``episodes`` episodes, ``batch_size`` envs at a time (each wave starts with
    ``policy.reset``); ``env_kwargs`` go to the env's constructor. Episode i resets with ``env_seeds[i]`` when
    given (e.g. LIBERO's recorded init states 0..49, each once), else a seed derived from (seed, i). Returns one
    dict per episode: frames, images, return, success, seed. A policy that samples from torch's global RNG is
    seeded per wave from ``seed``: the same call gives the same episodes."""
    import torch

    from training.rl.envs import env_fps, get_family, make_env, to_features

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if env_seeds is not None and len(env_seeds) < episodes:
        raise ValueError(f"{len(env_seeds)} env seeds for {episodes} episodes")
    fam = get_family(env_id)
    task = task if task is not None else fam.default_task
    image = _wants_image(policy, fam)
    n_env = max(1, min(batch_size, episodes))
    envs = [make_env(env_id, image=image, max_episode_steps=max_steps, render=record_video, kwargs=env_kwargs)
            for _ in range(n_env)]
    fps = env_fps(envs[0])
    out = []
    try:
        for start in range(0, episodes, n_env):
            wave = list(range(start, min(start + n_env, episodes)))
            seeds = [int(env_seeds[i]) if env_seeds is not None else _env_seed(seed, i) for i in wave]
            obs = [to_features(envs[j].reset(seed=s)[0], fam) for j, s in enumerate(seeds)]
            eps = [{"frames": [], "images": [], "actions": [], "rewards": [], "success": False, "done": False}
                   for _ in wave]
            policy.reset(len(wave))
            # a sampling policy (the VLA's flow noise) draws from torch's global RNG: seeded per wave from (seed,
            # wave), so re-running an evaluation reproduces it; the caller's RNG state is restored afterwards
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_policy_seed(seed, start))
                _roll_wave(policy, envs, obs, eps, task, fam, record_video)
            for i, s, e in zip(wave, seeds, eps):
                imgs = [x for x in e["images"] if x is not None]
                out.append({
                    "index": i, "env_seed": s, "task": task, "fps": fps,
                    "frames": {n: np.stack([f[n] for f in e["frames"]]) for n in e["frames"][0]},
                    "actions": np.stack(e["actions"]), "rewards": np.asarray(e["rewards"], np.float32),
                    "success": e["success"], "images": np.stack(imgs) if imgs and len(imgs) == len(e["actions"]) else None,
                })
    finally:
        for env in envs:
            env.close()
    return out


def _new_episode(ep: dict, camera: str, attrs: dict):
    t = len(ep["rewards"])
    done, success = np.zeros(t, bool), np.zeros(t, bool)
    done[-1], success[-1] = True, ep["success"]
    frames = {**{n: np.asarray(x, np.float32) for n, x in ep["frames"].items()}, "action": ep["actions"],
              "next.reward": ep["rewards"], "next.done": done, "next.success": success}
    images = {camera: ep["images"]} if ep["images"] is not None else {}
    return lake.NewEpisode(frames=frames, task=ep["task"], images=images, policy_version=attrs["checkpoint_step"],
                           episode_return=float(ep["rewards"].sum()), success=bool(ep["success"]), attrs=attrs)


def summary_table(report: EvalReport, seed: int) -> pa.Table:
    """The one ``evals`` row of an evaluation (schema ``EVALS``)."""
    lin = report.lineage
    return pa.Table.from_pylist([{
        "eval_id": report.eval_id, "checkpoint": report.checkpoint, "checkpoint_step": report.checkpoint_step,
        "lake_uri": lin.get("lake_uri"), "lake_version": lin.get("lake_version"), "lake_tag": lin.get("lake_tag"),
        "recipe_hash": lin.get("recipe_hash"), "env_id": report.env_id, "episodes": report.episodes,
        "success_rate": report.success_rate, "mean_return": report.mean_return, "mean_length": report.mean_length,
        "seed": seed, "episode_ids": [r.episode_id for r in report.rows], "timestamp": datetime.now(timezone.utc),
    }], schema=EVALS)


def evaluate(checkpoint_path, env_id: str | None = None, episodes: int = 10, lake_uri=None, seed: int = 0,
             record_video: bool = True, *, max_steps: int | None = None, batch_size: int = 8, task: str | None = None,
             storage_options: dict | None = None, env_kwargs: dict | None = None, env_seeds=None) -> EvalReport:
    """Evaluate a checkpoint in closed loop; with ``lake_uri``, record episodes + summary in one lake version.

    ``env_kwargs``: options of the env's constructor (e.g. LIBERO's ``{"objects": True}``); None: the ones the
    checkpoint records for that env, if any. ``env_seeds``: explicit reset seed per episode (``run_episodes``).

    ``env_id`` None: the env the checkpoint says it was trained in (RL checkpoints record it, and their time
    limit, which ``max_steps`` None then uses; otherwise the env's own limit applies). Raises
    FileNotFoundError for a missing checkpoint, TypeError if it does not build a ``Policy``, ValueError for
    an unknown env or one without Box actions.
    """
    import dataclasses

    from training.checkpoint import load_policy
    from training.rl.envs import get_family

    t0 = time.perf_counter()
    path = os.fspath(checkpoint_path)
    if "://" not in path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path}")
        path = os.path.abspath(path)
    policy, ckpt = load_policy(path)
    lineage = dict(ckpt.get("lineage") or {})
    extra = lineage.get("extra") or {}
    env_id = env_id or extra.get("env_id")
    if not env_id:
        raise ValueError(f"{path}: the checkpoint does not name its env; pass env_id (--env)")
    fam = get_family(env_id)
    if max_steps is None and env_id == extra.get("env_id"):
        max_steps = extra.get("max_episode_steps")  # the time limit the policy was trained under, if it says
    if env_kwargs is None and env_id == extra.get("env_id"):
        env_kwargs = extra.get("env_kwargs")  # the observations the policy reads (e.g. object positions)
    eps = run_episodes(policy, env_id, int(episodes), seed=seed, record_video=record_video, max_steps=max_steps,
                       batch_size=batch_size, task=task if task is not None else extra.get("task"),
                       env_kwargs=env_kwargs, env_seeds=env_seeds)
    eval_id = uuid.uuid4().hex[:12]
    step = int(ckpt.get("step") or 0)
    new = [_new_episode(e, fam.camera, {"eval_id": eval_id, "checkpoint": path, "checkpoint_step": step,
                                        "env_id": env_id, "seed": seed, "episode_index": e["index"],
                                        "env_seed": e["env_seed"]}) for e in eps]
    fps = eps[0]["fps"]
    rows = tuple(EvalEpisode(e["index"], e["env_seed"], len(e["rewards"]), float(e["rewards"].sum()), bool(e["success"]),
                             lake.episode_id(ep, fps)) for e, ep in zip(eps, new))
    report = EvalReport(eval_id, path, step, env_id, len(rows), float(np.mean([r.success for r in rows])),
                        float(np.mean([r.episode_return for r in rows])), float(np.mean([r.length for r in rows])),
                        rows, lineage={k: lineage.get(k) for k in ("lake_uri", "lake_version", "lake_tag", "recipe_hash")})
    if lake_uri is not None:
        lk = lake.open(lake_uri, storage_options=storage_options)
        rep = lk.append_episodes(new, source=f"eval/{env_id}", fps=fps, robot_type=fam.robot_type, split="eval",
                                 message=f"eval {os.path.basename(path)} (step {step}) on {env_id}: "
                                         f"{report.episodes} episodes, success {report.success_rate:.0%}",
                                 extra={"evals": summary_table(report, seed)})
        report = dataclasses.replace(report, lake_uri=lk.uri, lake_version=rep.version,
                                     already_recorded=rep.version is None)
    return dataclasses.replace(report, seconds=time.perf_counter() - t0)


def cli(args) -> int:
    """``lake eval CHECKPOINT --env ENV_ID --episodes N --lake URI`` (called by ``lake.cli``)."""
    from lake._store import storage_options_from_env

    uri = getattr(args, "lake", None) or os.environ.get("LAKE_URI")
    rep = evaluate(args.checkpoint, args.env, args.episodes if args.episodes is not None else 10, lake_uri=uri,
                   seed=args.seed, record_video=not args.no_video, max_steps=args.max_steps,
                   batch_size=args.batch_size, task=args.task,
                   storage_options=storage_options_from_env(uri) if uri else None,
                   env_kwargs=_json_object(getattr(args, "env_kwargs", None)))
    print(rep.summary())
    return 0


def _json_object(text: str | None) -> dict | None:
    """``--env-kwargs`` text -> dict (None stays None); ValueError naming the option otherwise."""
    import json

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--env-kwargs {text!r} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--env-kwargs {text!r} is not a JSON object")
    return value


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for z = 1.96) of a success rate ``k / n``; (0, 1) when n is 0."""
    import math

    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))
