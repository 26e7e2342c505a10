"""Starting (or joining) Ray for the lake's batch jobs: embedded by default, a cluster via its address."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process. ``address`` joins a running cluster (``ray start --head``)."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("LAKE_RAY_ADDRESS")
        if address:
            # Ray >= 2.60 turns on token auth for clusters; both sides must agree on the mode.
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            ray.init(address=address, log_to_driver=False)
        else:
            # the log monitor (which forwards workers' output, unused with log_to_driver=False) re-globs the log
            # folder every 0.1 s while it holds < 1000 files; every 5 s is plenty (measured: its CPU 0.08 -> 0.03
            # s per 10 s of a 4-actor session; Ray's CPU beside the work is what asynchronous RL competes with)
            os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")
            os.environ.setdefault("LOG_NAME_UPDATE_INTERVAL_S", "5")
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines drown the lake's own output
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the lake shows its own progress, in frames
    ctx.print_on_execution_start = False


def map_units(fn, n: int, progress, tasks_per_cpu: int = 4, **kwargs):
    """Run ``fn({"unit": i}, **kwargs)`` for i in 0..n-1 as a Ray Data job, yielding the result rows as they
    finish and calling ``progress(row)`` on each.

    Units are spread over about ``tasks_per_cpu`` tasks per cluster CPU (not one task per unit): a task costs
    ~20 ms of scheduling and serialization, more than a small unit's work, and a few tasks per CPU still
    balance uneven units.
    """
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    ds = ray.data.from_items([{"unit": i} for i in range(n)], override_num_blocks=max(1, min(n, tasks_per_cpu * cpus)))
    for row in ds.map(fn, fn_kwargs=kwargs).iter_rows():
        progress(row)
        yield row
