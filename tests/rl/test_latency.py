"""Long-tail latency: the distributions have the medians / floors / tails their parameters say."""

from __future__ import annotations

import numpy as np
import pytest

from training.rl.latency import LatencyWrapper, get_latency, make_sampler, mean_ms


def test_lognormal_median_and_tail():
    s = make_sampler("lognormal", {"median_ms": 10, "sigma": 1.0}, seed=0, cap_ms=1e9)
    x = np.array([s() for _ in range(20000)])
    assert abs(np.median(x) * 1000 - 10) < 0.5
    assert abs(x.mean() * 1000 - mean_ms("lognormal", {"median_ms": 10, "sigma": 1.0})) < 1.0
    assert np.quantile(x, 0.99) > 8 * np.median(x)  # long tail: p99 ~ 10x the median


def test_pareto_floor_tail_and_cap():
    s = make_sampler("pareto", {"scale_ms": 5, "alpha": 2.0}, seed=1, cap_ms=40)
    x = np.array([s() for _ in range(20000)]) * 1000
    assert x.min() >= 5 and x.max() <= 40
    assert abs((x > 10).mean() - 0.25) < 0.02  # P(X > 2 scale) = 2^-alpha


def test_samplers_are_reproducible_and_bad_parameters_are_reported():
    a = make_sampler("lognormal", {"median_ms": 3}, seed=[0, 1])
    b = make_sampler("lognormal", {"median_ms": 3}, seed=[0, 1])
    assert [a() for _ in range(5)] == [b() for _ in range(5)]
    with pytest.raises(ValueError, match="bad params"):
        make_sampler("pareto", {"shape": 2}, seed=0)
    with pytest.raises(KeyError, match="known"):
        get_latency("weibull")


def test_the_wrapper_sleeps_before_each_step():
    import time

    from training.rl import make_vector_env

    env = LatencyWrapper(make_vector_env("gym_pusht/PushT-v0", 2, max_episode_steps=10), lambda: 0.02)
    env.reset(seed=[0, 1])
    t = time.perf_counter()
    for _ in range(5):
        env.step(np.full((2, 2), 256.0, np.float32))
    assert time.perf_counter() - t >= 0.1 and abs(env.slept_s - 0.1) < 1e-9
