"""Real 3-D simulators behind the lake's env interface (the ``sims`` extra: ``make sims``).

    lake eval expert.pt --env metaworld/push-v3 --episodes 10 --lake ./lake
    lake eval ckpt.pt --env libero/libero_object/3 --episodes 5 --lake ./lake

``training.rl.envs.make_env`` builds them by id (``metaworld/<task>``, ``libero/<suite>/<task id>[/<init>]``), so
evaluation, RL env workers and the demo writer all use the same adapters: ``metaworld`` and ``libero`` (the
Gymnasium envs), ``experts`` (Meta-World's scripted policies as a checkpointable ``Policy``), ``libero_expert``
(a scripted LIBERO pick-and-place expert), ``demos`` (expert rollouts -> a LeRobot v3.0 dataset -> the lake).
Importing this package imports no simulator; a missing one
raises ``SimulatorUnavailable`` naming what to install.
"""

from ._setup import DEBIAN_PACKAGES, SimulatorUnavailable, available, configure_libero, configure_rendering

__all__ = ["DEBIAN_PACKAGES", "SimulatorUnavailable", "available", "configure_libero", "configure_rendering"]
