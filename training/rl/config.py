"""The RL run configuration: small frozen dataclasses, loaded from YAML (``configs/rl/*.yaml``).

Every section is optional in YAML; a key the dataclass does not know is an error that names the file and the
key (a typo never silently falls back to a default). ``with_overrides(cfg, {"algo.train_steps": 3})`` makes
variants (tests, benchmarks, ``--set`` on the command line).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

MODES = ("ss", "as", "aa")
INFERENCE = ("rollout", "env")


@dataclass(frozen=True)
class EnvConfig:
    """Which simulator. ``kwargs`` go to ``gymnasium.make``; the action space must be a Box."""

    id: str = "gym_pusht/PushT-v0"
    kwargs: dict = field(default_factory=dict)
    max_episode_steps: int = 50  # time limit: a trajectory ends on termination or after this many steps
    task: str | None = None  # task string given to the policy and the lake; None = the env family's default


@dataclass(frozen=True)
class LatencyConfig:
    """Extra per-step simulator latency (one draw per vector-env step), to model slow simulators.

    ``dist``: none | constant | lognormal | pareto (see ``training.rl.latency``); ``params`` in milliseconds.
    """

    dist: str = "none"
    params: dict = field(default_factory=dict)
    cap_ms: float = 2000.0


@dataclass(frozen=True)
class WorkersConfig:
    env_workers: int = 4
    envs_per_worker: int = 4  # one Gymnasium vector env of this width per worker
    rollout_workers: int = 1
    max_restarts: int = 3  # Ray restarts a dead env worker this many times; the run goes on
    # where the acting policy runs: rollout (rollout worker actors, dynamic batching across env workers) | env
    # (inside each env worker process, no Ray call per step; rollout_workers and placement.rollout are then not
    # used, but ss with several env workers keeps its per-step barrier in a small actor: see training.rl.acting)
    inference: str = "rollout"


@dataclass(frozen=True)
class BatchingConfig:
    """The rollout workers' dynamic batcher: a forward pass per ``max_batch_size`` rows or ``batch_timeout_ms``
    (``max_batch_size`` is capped at the rows a rollout worker's env workers can send at once)."""

    max_batch_size: int = 16
    batch_timeout_ms: float = 2.0


@dataclass(frozen=True)
class AlgoConfig:
    advantage: str = "gae"  # gae (PPO) | grpo (group-relative over trajectories from one env seed)
    group_size: int = 1  # trajectories per env seed; grpo needs >= 2
    gamma: float = 0.99
    lam: float = 0.95
    loss: str = "pg"  # the objective (training.rl.losses.OBJECTIVES): pg (policy gradient) | flow_rwr (flow policies)
    correction: str = "decoupled"  # pg: importance correction vs the behaviour policy: decoupled | clip | none
    rwr_weight: str = "exp"  # flow_rwr: a row's weight: exp (exp(A / beta), capped) | positive (A > 0) | return
    #                          (its trajectory's return > rwr_min_return: ReST-style filtering)
    rwr_beta: float = 1.0  # flow_rwr, exp: the temperature (GRPO advantages are standardized within a group)
    rwr_max_weight: float = 20.0  # flow_rwr, exp: the cap on a row's weight
    rwr_min_return: float = 0.0  # flow_rwr, return: rows of trajectories with a return above this are kept
    demo_coef: float = 0.0  # > 0: each optimizer step also fits the SFT loss on one pack of demos, times this
    demo_lake: str | None = None  # demo_coef: the lake holding the demos' packed table ...
    demo_recipe: str | None = None  # ... the packing recipe's hash (the SFT run's) ...
    demo_version: int | None = None  # ... and the lake version it is read at (pinned; None: the newest)
    clip_eps: float = 0.2
    is_cap: float = 2.0  # decoupled: the behaviour weight pi_prox / pi_behaviour is truncated here
    lr: float = 3e-4
    batch_trajectories: int = 16  # strict global batch: exactly this many trajectories per optimizer step
    micro_batch_trajectories: int = 4  # consumed as they stream in; gradients accumulate over micro-batches
    epochs: int = 1  # optimizer steps over one global batch (one published version per batch)
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    max_staleness: int = 2  # trajectories more than this many versions old are dropped (and counted)
    # > 0 (objectives with log-probs): a trust region per published version, in nats of KL(proximal || current)
    # on the batch. Adam's step is set by lr, not by the gradient, so one fixed lr makes the first updates huge
    # (a sign step) and later ones vanish (noisy gradients average out in its moments). Each optimizer step is
    # halved back towards the weights before it until the batch's KL is <= target_kl (after 5 halvings: undone),
    # and lr adapts between versions: / 1.5 after a version that had to halve, x 1.5 after one that stayed
    # under target_kl / 2, within [lr / 10, lr x 10] of the configured lr.
    target_kl: float = 0.0
    train_steps: int = 10  # published versions (global batches) per run


@dataclass(frozen=True)
class PolicyConfig:
    """The policy trained. Default: the tiny Gaussian actor-critic, shaped from the env. Any module implementing
    ``training.rl.RLPolicy`` works: register its factory in your code (``training.register_factory(name, fn)``)
    and name it here with its ``kwargs``, or start from a ``training.checkpoint`` file (``init_checkpoint``:
    its factory name, config and weights; e.g. an SFT policy)."""

    hidden: int = 64
    image: bool = False  # also see a downsampled camera image (PushT: observation.images.top)
    image_size: int = 24
    init_log_std: float = -0.5
    factory: str = "gaussian_actor_critic"  # a registered name (training.factories)
    kwargs: dict = field(default_factory=dict)  # for another factory (the default one is shaped from the env)
    init_checkpoint: str | None = None


@dataclass(frozen=True)
class ActorResources:
    num_cpus: float = 0.25
    num_gpus: float = 0.0
    resources: dict = field(default_factory=dict)  # custom Ray resources, e.g. {"sim_node": 0.1}
    cpus: tuple = ()  # pin the actor's process to these CPU ids (os.sched_setaffinity); () = the OS places it


@dataclass(frozen=True)
class PlacementConfig:
    """Ray resources per actor kind (fractional CPUs: the whole pipeline fits on 2 cores)."""

    env_worker: ActorResources = ActorResources(0.2)
    rollout: ActorResources = ActorResources(0.4)
    trainer: ActorResources = ActorResources(0.5)
    lake_writer: ActorResources = ActorResources(0.2)


@dataclass(frozen=True)
class LakeConfig:
    """Where finished trajectories go: one lake episode each, ``commit_every`` per lake version."""

    uri: str | None = None  # None: no lake (the trainer still counts every trajectory)
    source: str = "rl"
    commit_every: int = 8
    compact_every: int = 8  # commits between compactions
    compact_min_fragments: int = 8
    images: bool = True  # store camera observations as video when the policy sees a camera


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection for tests: env worker ``worker`` SIGKILLs itself after ``after_steps`` vector steps."""

    worker: int | None = None
    after_steps: int = 20


@dataclass(frozen=True)
class RLConfig:
    mode: str = "aa"  # ss: synchronous baseline | as: async rollout, sync training | aa: fully async
    seed: int = 0
    env: EnvConfig = EnvConfig()
    latency: LatencyConfig = LatencyConfig()
    workers: WorkersConfig = WorkersConfig()
    batching: BatchingConfig = BatchingConfig()
    algo: AlgoConfig = AlgoConfig()
    policy: PolicyConfig = PolicyConfig()
    placement: PlacementConfig = PlacementConfig()
    lake: LakeConfig = LakeConfig()
    fault: FaultConfig = FaultConfig()
    checkpoint: str | None = None  # where the final policy is saved (a ``training.checkpoint`` file)
    timeout_s: float = 600.0  # the run raises TimeoutError past this


def validate(cfg: RLConfig, where: str = "config") -> RLConfig:
    """Raise ValueError naming the field for settings that cannot run; returns ``cfg``."""
    from .advantages import ADVANTAGES
    from .latency import LATENCIES
    from .losses import CORRECTIONS, OBJECTIVES, RWR_WEIGHTS

    a, w = cfg.algo, cfg.workers

    def bad(key, why):
        raise ValueError(f"{where}: {key}: {why}")

    if cfg.mode not in MODES:
        bad("mode", f"{cfg.mode!r} is not one of {MODES}")
    if w.inference not in INFERENCE:
        bad("workers.inference", f"{w.inference!r} is not one of {INFERENCE}")
    if a.advantage not in ADVANTAGES:
        bad("algo.advantage", f"{a.advantage!r} is not one of {sorted(ADVANTAGES)}")
    if a.correction not in CORRECTIONS:
        bad("algo.correction", f"{a.correction!r} is not one of {sorted(CORRECTIONS)}")
    if a.loss not in OBJECTIVES:
        bad("algo.loss", f"{a.loss!r} is not one of {sorted(OBJECTIVES)}")
    if a.rwr_weight not in RWR_WEIGHTS:
        bad("algo.rwr_weight", f"{a.rwr_weight!r} is not one of {sorted(RWR_WEIGHTS)}")
    if not a.rwr_beta > 0:
        bad("algo.rwr_beta", f"must be > 0, got {a.rwr_beta}")
    if not a.rwr_max_weight > 0:
        bad("algo.rwr_max_weight", f"must be > 0, got {a.rwr_max_weight}")
    if a.demo_coef < 0:
        bad("algo.demo_coef", f"must be >= 0, got {a.demo_coef}")
    if a.demo_coef > 0 and not (a.demo_lake and a.demo_recipe):
        bad("algo.demo_coef", "mixing the demos' loss needs algo.demo_lake and algo.demo_recipe")
    if cfg.latency.dist not in LATENCIES:
        bad("latency.dist", f"{cfg.latency.dist!r} is not one of {sorted(LATENCIES)}")
    for key, v in (("workers.env_workers", w.env_workers), ("workers.envs_per_worker", w.envs_per_worker),
                   ("workers.rollout_workers", w.rollout_workers), ("algo.batch_trajectories", a.batch_trajectories),
                   ("algo.micro_batch_trajectories", a.micro_batch_trajectories), ("algo.epochs", a.epochs),
                   ("algo.train_steps", a.train_steps), ("algo.group_size", a.group_size),
                   ("env.max_episode_steps", cfg.env.max_episode_steps),
                   ("batching.max_batch_size", cfg.batching.max_batch_size), ("lake.commit_every", cfg.lake.commit_every)):
        if int(v) < 1:
            bad(key, f"must be >= 1, got {v}")
    if a.target_kl < 0:
        bad("algo.target_kl", f"must be >= 0, got {a.target_kl}")
    if a.target_kl > 0 and not OBJECTIVES[a.loss].kl:
        bad("algo.target_kl", f"a KL trust region needs log-probs: algo.loss {a.loss!r} has none")
    if a.max_staleness < 0:
        bad("algo.max_staleness", f"must be >= 0, got {a.max_staleness}")
    if a.advantage == "grpo" and a.group_size < 2:
        bad("algo.group_size", "grpo compares trajectories within a group: needs >= 2")
    if a.batch_trajectories % a.group_size or a.micro_batch_trajectories % a.group_size:
        bad("algo.batch_trajectories", f"batch ({a.batch_trajectories}) and micro-batch ({a.micro_batch_trajectories}) "
                                       f"must be multiples of group_size ({a.group_size})")
    if a.micro_batch_trajectories > a.batch_trajectories:
        bad("algo.micro_batch_trajectories", "larger than the global batch")
    envs = w.env_workers * w.envs_per_worker
    if cfg.mode == "ss" and a.batch_trajectories % envs:
        bad("algo.batch_trajectories", f"ss collects whole rounds (one episode per env): the batch "
                                       f"({a.batch_trajectories}) must be a multiple of the envs ({envs})")
    if cfg.mode == "ss" and a.group_size > 1 and w.envs_per_worker % a.group_size:
        bad("algo.group_size", "ss rounds group within a worker's envs: envs_per_worker must be a multiple")
    for name in ("env_worker", "rollout", "trainer", "lake_writer"):
        if any(c < 0 for c in getattr(cfg.placement, name).cpus):
            bad(f"placement.{name}.cpus", f"CPU ids are >= 0, got {list(getattr(cfg.placement, name).cpus)}")
    if cfg.fault.worker is not None and not 0 <= cfg.fault.worker < w.env_workers:
        bad("fault.worker", f"no env worker {cfg.fault.worker}")
    return cfg


def from_dict(data: dict | None, where: str = "config") -> RLConfig:
    """Nested dict (parsed YAML) -> RLConfig; unknown keys raise ValueError naming ``where`` and the key."""
    return validate(_build(RLConfig, data or {}, where, ""), where)


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> RLConfig:
    """Read a YAML config; ``overrides`` are dotted keys (``{"mode": "ss", "algo.lr": 1e-3}``)."""
    import yaml

    path = os.fspath(path)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    cfg = _build(RLConfig, data, path, "")
    return validate(with_overrides(cfg, overrides or {}, validate_=False), path)


def with_overrides(cfg: RLConfig, overrides: dict, validate_: bool = True) -> RLConfig:
    """A copy with dotted keys replaced (``{"algo.train_steps": 3, "lake.uri": "/tmp/l"}``)."""
    for key, value in overrides.items():
        cfg = _replace(cfg, key.split("."), value, key)
    return validate(cfg, "overrides") if validate_ else cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _replace(obj, parts: list[str], value, key: str):
    names = {f.name: f for f in dataclasses.fields(obj)}
    if parts[0] not in names:
        raise ValueError(f"override {key!r}: {type(obj).__name__} has no field {parts[0]!r} (has: {sorted(names)})")
    if len(parts) == 1:
        current = getattr(obj, parts[0])
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _build(type(current), value, "override", key + ".")
        elif not dataclasses.is_dataclass(current):
            value = _coerce(current, value, "override", key)
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace(getattr(obj, parts[0]), parts[1:], value, key)})


def _build(cls, data: dict, where: str, prefix: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: {prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if dataclasses.is_dataclass(current):
            kwargs[name] = _build(type(current), value or {}, where, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(current, value, where, prefix + name)
    return cls(**kwargs)


def _coerce(default, value, where: str, key: str):
    """Numbers from YAML: ints where the default is a float are fine; strings where numbers belong are not."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {key}: expected true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: {key}: expected a number, got {value!r}")
        if isinstance(default, int) and not float(value).is_integer():
            raise ValueError(f"{where}: {key}: expected an integer, got {value!r}")
        return type(default)(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            raise ValueError(f"{where}: {key}: expected a list of integers, got {value!r}")
        return tuple(value)
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ValueError(f"{where}: {key}: expected a mapping, got {value!r}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{where}: {key}: expected a string, got {value!r}")
    return value
