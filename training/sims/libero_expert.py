"""A scripted pick-and-place expert for LIBERO, as a ``Policy`` that ``lake eval`` and the demo writer run.

    path = save_libero_expert("expert.pt", "libero/libero_goal/6", noise=0.1)
    # lake eval expert.pt --episodes 20 --lake ./lake          (the checkpoint records its env and env kwargs)

LIBERO ships no demonstrations here, so this writes them: a P-controller on the end-effector position over
LIBERO's OSC_POSE delta actions (one unit = 5 cm of target offset; gain ``GAIN`` per metre of error, clipped to
[-1, 1]), orientation held, and gripper phases: above the object, down, close, lift, over the container, down,
open. It reads the env's state with ``objects=True`` (end effector, gripper, then the positions of the task's
objects of interest: the thing to move, then where it goes), so it is a policy of the observation only and
runs wherever the env does. ``noise``: Gaussian noise (std, action units) on the three position actions; the
noise of episode wave ``k`` comes from ``(seed, k)``. The checkpoint holds no weights: factory name + JSON.

``TASKS`` holds the tasks it solves, each a few offsets measured in the scene (see benchmarks/RESULTS.md,
"LIBERO in the loop", for its success rate on held-out init states).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..factories import register_factory

STATE = "observation.state"
GAIN = 15.0  # action units per metre of position error: full speed beyond ~7 cm
ENV_KWARGS = {"objects": True}  # the env options the expert (and a state-only policy) needs


@dataclass(frozen=True)
class PickPlace:
    """Where to grasp and where to let go, relative to the objects' positions (metres, world frame)."""

    grasp: tuple[float, float, float] = (0.0, 0.0, 0.0)  # grasp point - object position
    hover: float = 0.10  # approach height above the grasp point
    lift: float = 0.12  # carry height above the grasp point's starting height
    place: tuple[float, float, float] = (0.0, 0.0, 0.08)  # release point - container position
    close_steps: int = 12  # gripper closing time (steps)


TASKS = {
    "libero/libero_goal/6": PickPlace(grasp=(0.0, 0.0, 0.0), place=(0.0, 0.0, 0.08)),  # cream cheese -> bowl
}

APPROACH, DESCEND, CLOSE, LIFT, CARRY, LOWER, RELEASE = range(7)


def task_spec(env_id: str) -> PickPlace:
    key = "/".join(env_id.split("/")[:3])  # an init-state index does not change the task
    if key not in TASKS:
        raise ValueError(f"no scripted LIBERO expert for {env_id!r}; there is one for {', '.join(TASKS)}")
    return TASKS[key]


class LiberoExpert(nn.Module):
    """The scripted expert for one LIBERO task, batched, one phase per env (see the module doc)."""

    def __init__(self, env_id: str, noise: float = 0.0, seed: int = 0):
        super().__init__()
        self.spec = task_spec(env_id)
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.env_id, self.noise, self.seed = env_id, float(noise), int(seed)
        self.input_features = [STATE]
        self._waves = 0
        self.reset(1)

    def reset(self, batch_size: int) -> None:
        self._rng = np.random.default_rng([self.seed, self._waves])
        self._waves += 1
        self._phase = np.zeros(batch_size, int)
        self._count = np.zeros(batch_size, int)
        self._start = np.zeros((batch_size, 3))

    def _one(self, i: int, s: np.ndarray) -> np.ndarray:
        sp, eef, obj, box = self.spec, s[:3], s[8:11], s[11:14]
        phase, gripper = self._phase[i], -1.0
        if phase == APPROACH:
            self._start[i] = obj  # where the object rests: the carry height counts from there
        grasp, release = obj + np.asarray(sp.grasp), box + np.asarray(sp.place)
        carry_z = self._start[i, 2] + sp.grasp[2] + sp.lift
        if phase == APPROACH:
            target = grasp + [0, 0, sp.hover]
            done = np.linalg.norm(target - eef) < 0.01
        elif phase == DESCEND:
            target = grasp
            done = np.linalg.norm(target - eef) < 0.008
        elif phase == CLOSE:
            target, gripper = grasp, 1.0
            self._count[i] += 1
            done = self._count[i] >= sp.close_steps
        elif phase == LIFT:
            target, gripper = np.array([eef[0], eef[1], carry_z]), 1.0
            done = eef[2] > carry_z - 0.015
        elif phase == CARRY:
            target, gripper = np.array([release[0], release[1], carry_z]), 1.0
            done = np.linalg.norm(target[:2] - eef[:2]) < 0.01
        elif phase == LOWER:
            target, gripper = release, 1.0
            done = eef[2] < release[2] + 0.01
        else:
            target, done = release, False
        if done:
            self._phase[i] = phase + 1
        return np.concatenate([np.clip(GAIN * (target - eef), -1, 1), np.zeros(3), [gripper]])

    def act(self, obs: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray:
        state = np.asarray(obs[STATE], np.float64)
        if state.shape[-1] < 14:
            raise ValueError(f"{self.env_id}: the expert reads object positions from the state (14 numbers, the env "
                             f"with objects=True), got {state.shape[-1]}")
        if len(state) != len(self._phase):
            self.reset(len(state))
        actions = np.stack([self._one(i, row) for i, row in enumerate(state)])
        if self.noise > 0:
            actions[:, :3] += self._rng.normal(0.0, self.noise, (len(state), 3))
        return np.clip(actions, -1.0, 1.0).astype(np.float32)

    def forward(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(self.act(obs, []))


def build_libero_expert(env_id: str, noise: float = 0.0, seed: int = 0) -> LiberoExpert:
    return LiberoExpert(env_id, noise=noise, seed=seed)


FACTORY = "libero_expert"  # checkpoints name it; ``import training`` registers it (no simulator loads)
register_factory(FACTORY, build_libero_expert)


def save_libero_expert(path, env_id: str, *, noise: float = 0.0, seed: int = 0) -> str:
    """Write a checkpoint of the expert for ``env_id``; it records the env and its kwargs (``lake eval`` needs no
    --env)."""
    from training.checkpoint import save

    expert = build_libero_expert(env_id, noise=noise, seed=seed)
    return save(path, expert, factory=FACTORY, config={"env_id": env_id, "noise": float(noise), "seed": int(seed)},
                lineage={"extra": {"env_id": env_id, "env_kwargs": dict(ENV_KWARGS), "expert": "scripted pick-place",
                                   "noise": float(noise)}})
