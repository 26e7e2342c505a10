"""Asynchronous RL on Ray: env workers -> rollout workers (dynamic batching) -> trainer, trajectories into the lake.

    from training.rl import load_config, run
    rep = run(load_config("configs/rl/pusht_aa.yaml"))      # or: python -m training.rl configs/rl/pusht_aa.yaml
    rep.steps_per_s, rep.staleness_max, rep.ledger.check()

Modes ``ss`` / ``as`` / ``aa`` (see ``pipeline``); policies implement ``RLPolicy`` (``policy``); strategies are
registries with one dispatcher each: ``get_advantage`` (gae, grpo), ``get_correction`` (decoupled, clip,
none), ``get_objective`` (pg, flow_rwr: what the trainer minimizes), ``get_latency`` (none, constant, lognormal,
pareto). ``import training.rl`` does not start Ray.
"""

from .advantages import ADVANTAGES, gae, get_advantage, group_relative
from .batcher import ActReply, ActRequest, DynamicBatcher
from .config import (AlgoConfig, BatchingConfig, EnvConfig, LakeConfig, LatencyConfig, PlacementConfig, PolicyConfig,
                     RLConfig, WorkersConfig, from_dict, load_config, validate, with_overrides)
from .envs import ENV_NAMESPACES, get_family, make_env, make_vector_env, register_env_namespace, to_features
from .latency import LATENCIES, get_latency
from .ledger import Ledger
from .losses import CORRECTIONS, OBJECTIVES, get_correction, get_objective
from .pipeline import RunReport, required_cpus, run, summary
from .policy import ActionSample, GaussianActorCritic, PolicySpec, RLPolicy, build_policy, policy_config, policy_spec
from .trajectory import Trajectory, staleness, to_new_episode

__all__ = [
    "ADVANTAGES", "CORRECTIONS", "ENV_NAMESPACES", "LATENCIES", "ActReply", "ActRequest", "ActionSample", "AlgoConfig", "BatchingConfig",
    "DynamicBatcher", "EnvConfig", "OBJECTIVES", "get_objective", "GaussianActorCritic", "LakeConfig",
    "LatencyConfig", "Ledger", "PlacementConfig",
    "PolicyConfig", "PolicySpec", "RLConfig", "RLPolicy", "RunReport", "Trajectory", "WorkersConfig", "build_policy", "from_dict",
    "gae", "get_advantage", "get_correction", "get_family", "get_latency", "group_relative", "load_config",
    "make_env", "make_vector_env", "policy_config", "policy_spec", "register_env_namespace", "required_cpus", "run", "staleness", "summary", "to_features",
    "to_new_episode", "validate", "with_overrides",
]
