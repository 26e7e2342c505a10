"""Meta-World (``metaworld==3.1.1``) behind the Gymnasium interface the lake's env code expects.

    env = make("metaworld/push-v3", image=True)      # or training.rl.envs.make_env("metaworld/push-v3", ...)
    obs, _ = env.reset(seed=7)                       # the goal (and object) positions are a function of the seed

Env ids are ``metaworld/<task name>`` (the 50 MT1 names, e.g. ``reach-v3``, ``push-v3``, ``pick-place-v3``).
Observations: ``agent_pos`` is Meta-World's 39-d state with the goal visible (as in MT1/MT10), and with
``image=True`` ``pixels`` is the ``corner2`` camera (64x64 by default, shadows and multisampling off: about
10x cheaper than the defaults in software GL). The lake calls them ``observation.state`` and
``observation.images.corner2``. An episode terminates on success (``info["is_success"]``) and is truncated
at ``max_episode_steps`` (default Meta-World's 500). For RL, ``terminate_on_success=False`` keeps the episode
running to its time limit (Meta-World's own protocol: ending on success would forfeit the dense reward of
staying at the goal, which teaches a policy to avoid success) and ``reward_scale`` shrinks Meta-World's
0-10 per-step reward so returns stay O(1) for the critic; ``success_reward=True`` replaces the shaped reward
with 1 on success (what group-relative RL on the success metric uses).

Seeding: Meta-World's ``reset`` ignores its seed. The task is set once the way MT1 sets it (``set_task`` with
``MT1(name, seed=0).train_tasks[0]``, built once per process), then each ``reset(seed=s)`` seeds the env's own
goal sampler (``SawyerXYZEnv.seed`` + ``seeded_rand_vec``), the draw MT1 uses for its 50 goals: any seed gives a
valid goal, at the cost of one reset instead of an MT1 build (about 2 s) per episode.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np

from ._setup import require

PREFIX = "metaworld/"
CAMERA = "corner2"
FPS = 80  # frame_skip 5 x timestep 2.5 ms
MAX_STEPS = 500  # Meta-World's max_path_length

# Task text for the most used tasks (Meta-World has no language annotations; these follow its task list).
DESCRIPTIONS = {
    "reach-v3": "reach the goal position",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "window-open-v3": "open the window",
    "window-close-v3": "close the window",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
}


def task_name(env_id: str) -> str:
    """``metaworld/push-v3`` -> ``push-v3``; ValueError for an id that does not name a Meta-World task."""
    if not env_id.startswith(PREFIX) or len(env_id) == len(PREFIX):
        raise ValueError(f"{env_id!r} is not a Meta-World env id (metaworld/<task>, e.g. metaworld/push-v3)")
    return env_id[len(PREFIX):]


def describe(env_id: str) -> str:
    name = task_name(env_id)
    return DESCRIPTIONS.get(name, name.rsplit("-v", 1)[0].replace("-", " "))


@functools.lru_cache(maxsize=None)
def _first_task(name: str):
    mw = require("metaworld", "Meta-World")
    if name not in mw.MT1.ENV_NAMES:
        raise ValueError(f"unknown Meta-World task {name!r}; tasks: {', '.join(sorted(mw.MT1.ENV_NAMES))}")
    return mw.MT1(name, seed=0).train_tasks[0]


class MetaWorldEnv(gym.Env):
    """One Meta-World task as a Gymnasium env (see the module doc). ``size``: camera height = width (pixels)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(self, name: str, *, image: bool = False, size: int = 64, max_episode_steps: int | None = None,
                 camera: str = CAMERA, render_mode: str | None = "rgb_array", terminate_on_success: bool = True,
                 reward_scale: float = 1.0, success_reward: bool = False):
        mw = require("metaworld", "Meta-World")
        task = _first_task(name)
        self.name, self.image, self.size, self.camera = name, image, int(size), camera
        self.render_mode = render_mode
        self.terminate_on_success, self.reward_scale = bool(terminate_on_success), float(reward_scale)
        self.success_reward = bool(success_reward)
        self.max_episode_steps = int(max_episode_steps or MAX_STEPS)
        raw = mw.env_dict.ALL_V3_ENVIRONMENTS[name](
            render_mode="rgb_array", camera_name=camera, width=self.size, height=self.size)
        raw.max_path_length = max(raw.max_path_length, self.max_episode_steps)
        raw.set_task(task)
        # the context is created at the first render: these take effect then (shadows and 4x MSAA cost ~10x)
        raw.model.vis.quality.shadowsize = 0
        raw.model.vis.quality.offsamples = 0
        if camera == "corner2":  # LeRobot's and Meta-World's papers' view of corner2: the whole table
            raw.model.cam_pos[raw.model.camera(camera).id] = [0.75, 0.075, 0.7]
        self._raw = raw
        self._seeded = False
        state = raw.sawyer_observation_space  # after set_task: the goal-visible bounds
        state = gym.spaces.Box(np.asarray(state.low, np.float32), np.asarray(state.high, np.float32), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        if image:
            self.observation_space = gym.spaces.Dict({
                "agent_pos": state, "pixels": gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)})
        else:
            self.observation_space = state
        self._t = 0

    @property
    def raw(self):
        """The Meta-World env (``SawyerXYZEnv``)."""
        return self._raw

    def _obs(self, state: np.ndarray):
        state = np.asarray(state, np.float32)
        return {"agent_pos": state, "pixels": self.render()} if self.image else state

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        raw = self._raw
        if seed is not None or not self._seeded:
            # Meta-World's own seeded goal sampler; without a seed, the next draw of the stream
            raw.seed(int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1)))
            raw._freeze_rand_vec, raw.seeded_rand_vec, self._seeded = False, True, True
        state, _ = raw.reset()
        self._t = 0
        return self._obs(state), {"goal": np.asarray(raw._target_pos, np.float32)}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32).reshape(4), -1.0, 1.0)
        state, reward, _, _, info = self._raw.step(a)
        self._t += 1
        success = bool(info.get("success", 0.0))
        info = {**info, "is_success": success}
        done = success and self.terminate_on_success
        if self.success_reward:  # the sparse task reward: 1 on a success step, else 0
            reward = float(success)
        return self._obs(state), float(reward) * self.reward_scale, done, self._t >= self.max_episode_steps, info

    def render(self) -> np.ndarray:
        """The camera frame, upright (MuJoCo's corner2 frame is upside down)."""
        frame = self._raw.render()
        return np.ascontiguousarray(np.asarray(frame, np.uint8)[::-1, ::-1])

    def close(self):
        if getattr(self, "_raw", None) is not None:
            self._raw.close()  # frees the GL context now, not in a finalizer at exit
            self._raw = None


def make(env_id: str, *, image: bool = False, max_episode_steps: int | None = None, render: bool = False,
         **kwargs) -> MetaWorldEnv:
    """A ``MetaWorldEnv`` for ``metaworld/<task>``; kwargs: ``size`` (pixels), ``camera``."""
    del render  # always renderable: the GL context is only made at the first frame
    kwargs.pop("render_mode", None)
    return MetaWorldEnv(task_name(env_id), image=image, max_episode_steps=max_episode_steps, **kwargs)
