"""Long-tail simulator latency: a registry of step-time distributions and a vector-env wrapper that sleeps.

A slow simulator (physics at high fidelity, a renderer, a remote robot) makes some steps much slower than the
median; a synchronous pipeline waits for the slowest env at every step, an asynchronous one does not. The
wrapper draws one delay per ``step()`` of the vector env (one simulator process stepping its envs together).
Parameters are in milliseconds.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
from gymnasium.vector import VectorWrapper


def _none(rng: np.random.Generator) -> float:
    return 0.0


def _constant(rng: np.random.Generator, ms: float = 0.0) -> float:
    return ms


def _lognormal(rng: np.random.Generator, median_ms: float = 10.0, sigma: float = 1.0) -> float:
    return median_ms * math.exp(sigma * rng.standard_normal())


def _pareto(rng: np.random.Generator, scale_ms: float = 5.0, alpha: float = 2.0) -> float:
    """Pareto type I: at least ``scale_ms``, tail P(X > x) = (scale / x) ** alpha."""
    return scale_ms * (1.0 + rng.pareto(alpha))


LATENCIES: dict[str, Callable[..., float]] = {
    "none": _none, "constant": _constant, "lognormal": _lognormal, "pareto": _pareto,
}


def get_latency(name: str) -> Callable[..., float]:
    """The sampler ``fn(rng, **params) -> milliseconds``; KeyError names the known distributions."""
    try:
        return LATENCIES[name]
    except KeyError:
        raise KeyError(f"unknown latency distribution {name!r} (known: {sorted(LATENCIES)})") from None


def mean_ms(name: str, params: dict) -> float:
    """Analytic mean of a distribution (before the cap), for reports."""
    if name == "none":
        return 0.0
    if name == "constant":
        return float(params.get("ms", 0.0))
    if name == "lognormal":
        return params.get("median_ms", 10.0) * math.exp(params.get("sigma", 1.0) ** 2 / 2)
    if name == "pareto":
        a = params.get("alpha", 2.0)
        return math.inf if a <= 1 else params.get("scale_ms", 5.0) * a / (a - 1)
    raise KeyError(name)


def make_sampler(dist: str, params: dict, seed, cap_ms: float = 2000.0) -> Callable[[], float]:
    """A zero-argument function returning one delay in seconds; its own RNG, seeded by ``seed``."""
    fn = get_latency(dist)
    rng = np.random.default_rng(seed)
    try:
        fn(np.random.default_rng(0), **params)
    except TypeError as e:
        raise ValueError(f"latency {dist}: bad params {params}: {e}") from None
    return lambda: min(fn(rng, **params), cap_ms) / 1000.0


class LatencyWrapper(VectorWrapper):
    """A Gymnasium vector env whose every ``step`` first sleeps one draw of ``sampler`` (seconds).

    Time slept accumulates in ``slept_s`` so reports can separate modelled simulator time from overhead.
    """

    def __init__(self, env, sampler: Callable[[], float]):
        super().__init__(env)
        self.sampler, self.slept_s = sampler, 0.0

    def step(self, actions):
        delay = self.sampler()
        if delay > 0:
            time.sleep(delay)
            self.slept_s += delay
        return self.env.step(actions)
