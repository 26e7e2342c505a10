"""Simulators by Gymnasium id, with observations renamed to the lake's feature names.

Policies (RL and SFT alike) see ``{"observation.state": (B, D), "observation.images.top": (B, H, W, 3) uint8,
...}``, the names the lake stores, so a policy trained on lake data runs in the simulator unchanged. An env
*family* says how to build the env for the features a policy wants and how to rename its observation keys;
any registered id with a Box action space works (generic family: a Box observation is ``observation.state``,
dict keys follow LeRobot's ``agent_pos`` / ``environment_state`` / ``pixels`` convention).

Env ids choose code only through registries that code declares: Gymnasium's own (ids registered by packages
this process imported) and ``ENV_NAMESPACES`` (namespace -> a function that registers its ids, e.g. by
importing ``gym_pusht``). An id never names a module to import: Gymnasium's ``module:Env-v0`` form is refused,
since an env id may come from a checkpoint file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# LeRobot's names for gym-style observation keys (lerobot.envs.utils.preprocess_observation)
_LEROBOT_KEYS = {"agent_pos": "observation.state", "environment_state": "observation.environment_state",
                 "pixels": "observation.image"}


@dataclass(frozen=True)
class EnvFamily:
    """How to make and read one kind of env. ``make_kwargs(image)`` -> extra ``gymnasium.make`` kwargs."""

    name: str
    default_task: str
    key_map: dict = field(default_factory=lambda: dict(_LEROBOT_KEYS))
    camera: str = "observation.image"  # feature name of the camera (recorded video, image policies)
    robot_type: str = "unknown"
    make_kwargs: Callable[[bool], dict] = lambda image: {}
    # simulators outside Gymnasium's registry (training.sims): make(env_id, image=, max_episode_steps=,
    # render=, **kwargs) -> env, and describe(env_id) -> the task text (then default_task is per id)
    make: Callable[..., object] | None = None
    describe: Callable[[str], str] | None = None


def _pusht_kwargs(image: bool) -> dict:
    # keypoints of the block are a far better state than pixels for a tiny MLP, and 3x cheaper to simulate;
    # with a camera, obs["pixels"] is the 96x96 frame the lake's PushT recordings call observation.images.top
    return {"obs_type": "pixels_agent_pos" if image else "environment_state_agent_pos",
            "visualization_width": 96, "visualization_height": 96, "render_mode": "rgb_array"}


PUSHT = EnvFamily("pusht", "push the T into the target",
                  {**_LEROBOT_KEYS, "pixels": "observation.images.top"}, "observation.images.top", "pusht",
                  _pusht_kwargs)
GENERIC = EnvFamily("gymnasium", "")


def _metaworld(env_id: str, **kw):
    from training.sims import metaworld

    return metaworld.make(env_id, **kw)


def _metaworld_task(env_id: str) -> str:
    from training.sims import metaworld

    return metaworld.describe(env_id)


def _libero(env_id: str, **kw):
    from training.sims import libero

    return libero.make(env_id, **kw)


def _libero_task(env_id: str) -> str:
    from training.sims import libero

    return libero.describe(env_id)


# 3-D simulators (the ``sims`` extra): ids metaworld/push-v3, libero/libero_object/3
METAWORLD = EnvFamily("metaworld", "", {"agent_pos": "observation.state", "pixels": "observation.images.corner2"},
                      "observation.images.corner2", "sawyer", make=_metaworld, describe=_metaworld_task)
LIBERO = EnvFamily("libero", "", {"agent_pos": "observation.state", "agentview": "observation.images.agentview",
                                  "wrist": "observation.images.wrist"},
                   "observation.images.agentview", "panda", make=_libero, describe=_libero_task)

FAMILIES: dict[str, EnvFamily] = {"gym_pusht/": PUSHT, "metaworld/": METAWORLD, "libero/": LIBERO}


def _register_gym_pusht() -> None:
    import gym_pusht  # noqa: F401 - registers gym_pusht/PushT-v0 with Gymnasium


def _register_gym_aloha() -> None:
    import gym_aloha  # noqa: F401 - LeRobot's sim envs, when installed


def _register_gym_xarm() -> None:
    import gym_xarm  # noqa: F401


# namespace -> registers its ids; these run in every process (RL actors too), so a user's own namespace
# registered in the driver reaches Ray actors only if their code registers it there as well
ENV_NAMESPACES: dict[str, Callable[[], None]] = {"gym_pusht": _register_gym_pusht, "gym_aloha": _register_gym_aloha,
                                                  "gym_xarm": _register_gym_xarm}


def register_env_namespace(namespace: str, register: Callable[[], None]) -> None:
    """Make ids ``namespace/...`` available: ``register()`` runs before the first such env is made (typically an
    import of the package that registers them with Gymnasium, e.g. ``lambda: __import__("metaworld")`` written
    in your own code)."""
    ENV_NAMESPACES[namespace] = register


def get_family(env_id: str) -> EnvFamily:
    """The family whose prefix ``env_id`` starts with (its ``default_task`` that id's task text when the family
    describes its ids); the generic family otherwise."""
    from dataclasses import replace

    for prefix, fam in FAMILIES.items():
        if env_id.startswith(prefix):
            return replace(fam, default_task=fam.describe(env_id)) if fam.describe else fam
    return GENERIC


def make_env(env_id: str, *, image: bool = False, max_episode_steps: int | None = None, kwargs: dict | None = None,
             render: bool = False):
    """One Gymnasium env. Raises ValueError if the id is unknown, names a module, or its actions are not a Box.
    ``kwargs["action_chunk"] = k`` (> 1): wrapped in ``ChunkedActions`` (one step executes k actions)."""
    if not isinstance(env_id, str) or ":" in env_id:
        raise ValueError(f"env id {env_id!r}: 'module:Env' ids are refused (an id never names code to import); "
                         f"register the namespace with training.rl.register_env_namespace")
    kwargs = dict(kwargs or {})
    chunk = int(kwargs.pop("action_chunk", 1))
    env = _make_env(env_id, image=image, max_episode_steps=max_episode_steps, kwargs=kwargs, render=render)
    return ChunkedActions(env, chunk) if chunk > 1 else env


def _make_env(env_id: str, *, image: bool, max_episode_steps: int | None, kwargs: dict, render: bool):
    import gymnasium as gym

    fam = get_family(env_id)
    if fam.make is not None:
        return fam.make(env_id, image=image, max_episode_steps=max_episode_steps, render=render, **kwargs)
    ns = env_id.split("/")[0] if "/" in env_id else None
    if ns in ENV_NAMESPACES:  # namespaced ids register on import (gym_pusht/PushT-v0 needs ``import gym_pusht``)
        try:
            ENV_NAMESPACES[ns]()
        except ImportError as e:
            raise ValueError(f"env {env_id!r}: its package is not installed ({e})") from None
    kw = {**fam.make_kwargs(image), **kwargs}
    if render:
        kw.setdefault("render_mode", "rgb_array")
    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **kw)
    except gym.error.Error as e:
        hint = (f" (namespace {ns!r} is not registered: training.rl.register_env_namespace)"
                if ns and ns not in ENV_NAMESPACES else "")
        raise ValueError(f"cannot make env {env_id!r}: {e}{hint}") from None
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"env {env_id!r}: actions are {env.action_space}; the Gaussian policies need a Box")
    return env


class ChunkedActions:
    """An env whose one step executes ``k`` actions in turn (an action chunk as a macro-action, as a VLA executes
    its chunks): action ``(k * A,)`` = k actions of the inner env, flattened. Stops early when the inner episode
    ends; the reward is the sum over the executed actions, ``info["is_success"]`` true if any executed step
    succeeded, ``info["chunk_steps"]`` the inner steps taken. Time limits count inner steps (the inner env's).
    Env option ``action_chunk = k`` (``make_env``); RL with ``FlowPolicy`` at ``exec_steps = k``."""

    def __init__(self, env, k: int):
        import gymnasium as gym

        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"action_chunk needs flat Box actions, got {space}")
        self.env, self.k, self._a = env, int(k), space.shape[0]
        self.action_space = gym.spaces.Box(np.tile(space.low, self.k), np.tile(space.high, self.k),
                                           (self.k * self._a,), space.dtype)
        self.observation_space = env.observation_space
        self.metadata = getattr(env, "metadata", {})

    def __getattr__(self, name):  # everything else (render, np_random, spec ...) is the inner env's
        return getattr(self.env, name)

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        acts = np.asarray(action).reshape(self.k, self._a)
        total, success = 0.0, False
        for j in range(self.k):
            obs, reward, term, trunc, info = self.env.step(acts[j])
            total += float(reward)
            success = success or bool(info.get("is_success", False))
            if term or trunc:
                break
        return obs, total, term, trunc, {**info, "is_success": success, "chunk_steps": j + 1}

    def close(self):
        self.env.close()


def make_vector_env(env_id: str, num_envs: int, *, image: bool = False, max_episode_steps: int | None = None,
                    kwargs: dict | None = None):
    """A ``SyncVectorEnv`` of ``num_envs`` copies, autoreset off: the caller resets each env with its seed."""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    fns = [lambda: make_env(env_id, image=image, max_episode_steps=max_episode_steps, kwargs=kwargs)] * num_envs
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)


def to_features(obs, family: EnvFamily) -> dict[str, np.ndarray]:
    """Gym observation (single or batched) -> {lake feature name: array}; float64 states become float32."""
    if not isinstance(obs, dict):
        return {"observation.state": np.asarray(obs, np.float32)}
    out = {}
    for key, value in obs.items():
        name = family.key_map.get(key, f"observation.{key}")
        x = np.asarray(value)
        out[name] = x if x.dtype == np.uint8 else x.astype(np.float32)
    return out


def feature_spaces(observation_space, family: EnvFamily) -> dict[str, tuple[tuple, np.ndarray, np.ndarray]]:
    """{feature name: (shape, low, high)} of one env's observations (low/high may be +-inf)."""
    import gymnasium as gym

    spaces = observation_space.spaces if isinstance(observation_space, gym.spaces.Dict) else {None: observation_space}
    out = {}
    for key, sp in spaces.items():
        if not isinstance(sp, gym.spaces.Box):
            raise ValueError(f"observation {key or 'state'}: {sp} is not a Box")
        name = "observation.state" if key is None else family.key_map.get(key, f"observation.{key}")
        out[name] = (tuple(sp.shape), np.broadcast_to(sp.low, sp.shape).astype(np.float64),
                     np.broadcast_to(sp.high, sp.shape).astype(np.float64))
    return out


def render_frame(env, max_side: int = 128) -> np.ndarray | None:
    """The env's RGB render, shrunk so its longer side is at most ``max_side``; None if it cannot render."""
    try:
        frame = env.render()
    except Exception:  # noqa: BLE001 - envs without rgb_array rendering raise several kinds of errors
        return None
    if frame is None:
        return None
    frame = np.asarray(frame, np.uint8)
    h, w = frame.shape[:2]
    if max(h, w) > max_side:
        import cv2

        s = max_side / max(h, w)
        frame = cv2.resize(frame, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)
    return frame


def env_fps(env) -> float:
    return float(env.metadata.get("render_fps") or 10)
