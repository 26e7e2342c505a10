"""A finished trajectory: what env workers produce, the trainer consumes and the lake stores (one episode).

Identity: ``traj_id`` = ``w{worker}.i{incarnation}.e{env}.n{episode}`` is unique within a run (a restarted
env worker is a new incarnation). ``group`` names the env seed / prompt shared by the trajectories GRPO
compares. Every step carries the policy version that chose its action.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """T steps. ``obs``: feature -> (T, ...) (the observation each action was chosen from); ``final_obs``:
    feature -> (...) after the last step (critic bootstrap on truncation). ``actions`` are env units,
    ``raw_actions`` what the behaviour ``logprobs`` are densities of; ``values`` the behaviour critic's."""

    traj_id: str
    worker: int
    incarnation: int
    env_index: int
    episode: int
    group: str
    env_seed: int
    task: str
    obs: dict
    final_obs: dict
    actions: np.ndarray
    raw_actions: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    versions: np.ndarray
    terminated: bool
    truncated: bool
    success: bool
    started_at: float = 0.0  # wall clock (time.time) of the first step
    finished_at: float = 0.0

    @property
    def length(self) -> int:
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))

    @property
    def min_version(self) -> int:
        """The oldest policy version that acted in it: what staleness is measured from."""
        return int(self.versions.min())

    @property
    def max_version(self) -> int:
        return int(self.versions.max())


def staleness(traj: Trajectory, trainer_version: int) -> int:
    """Versions between the oldest step's policy and the trainer's current one."""
    return int(trainer_version) - traj.min_version


def to_new_episode(traj: Trajectory, *, env_id: str, run_id: str, images: bool = True):
    """The lake episode of a trajectory: frames in LeRobot names, camera frames as video, RL tags in attrs."""
    import lake

    frames, cams = {}, {}
    for name, x in traj.obs.items():
        x = np.asarray(x)
        if x.dtype == np.uint8 and x.ndim == 4:
            if images:
                cams[name] = x
        else:
            frames[name] = x.astype(np.float32)
    done = np.zeros(traj.length, bool)
    done[-1] = traj.terminated or traj.truncated
    success = np.zeros(traj.length, bool)
    success[-1] = traj.success
    frames.update({
        "action": np.asarray(traj.actions, np.float32),
        "next.reward": np.asarray(traj.rewards, np.float32),
        "next.done": done,
        "next.success": success,
        "rl.policy_version": np.asarray(traj.versions, np.int64),
        "rl.logprob": np.asarray(traj.logprobs, np.float32),
    })
    attrs = {"traj_id": traj.traj_id, "run_id": run_id, "env_id": env_id, "env_seed": traj.env_seed,
             "group": traj.group, "worker": traj.worker, "incarnation": traj.incarnation,
             "terminated": traj.terminated, "truncated": traj.truncated,
             "max_policy_version": traj.max_version}
    json.dumps(attrs)  # fail here, not inside a commit, if something is not JSON
    return lake.NewEpisode(frames=frames, task=traj.task, images=cams, policy_version=traj.min_version,
                           episode_return=traj.episode_return, success=traj.success, attrs=attrs)
