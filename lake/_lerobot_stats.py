"""LeRobot 0.4.4's feature statistics (``lerobot/datasets/compute_stats.py``), reproduced value for value.

Per episode (``compute_episode_stats``):

- a numeric feature: its frames as an ``(T, d)`` array *in its own dtype* (float32 stays float32, as LeRobot
  computes it), one ``RunningQuantileStats`` update: mean, mean of squares, min, max, and per dimension a
  5,000-bin histogram over ``[min - 1e-10, max + 1e-10]`` from which q01/q10/q50/q90/q99 are read by linear
  interpolation inside the bin holding rank ``q * T``. Fewer than two rows: the quantiles are the mean.
- a camera: the frames ``sample_indices`` picks (all below 100 frames, then ``max(100, int(T**0.75))`` up to
  10,000, evenly spaced), each downsampled by ``int(long side / 150)`` when its long side is 300 px or more,
  stats per channel over every pixel, scaled to [0, 1], shape (3, 1, 1), ``count`` = frames sampled.
  One deliberate difference: LeRobot 0.4.4 squares the uint8 pixels in uint8, which wraps, so its image ``std`` is
  almost always 0 (huggingface/lerobot#3682, fixed by #3697 after 0.4.4); here the square is exact (float64), the
  std LeRobot 0.4.4 returns for the same pixels given as float64. Every other value is LeRobot 0.4.4's.

Across episodes (``aggregate_stats``): count-weighted means, the parallel-algorithm variance, min of mins, max of
maxes, and each quantile the count-weighted mean of the episodes' quantiles (an approximation LeRobot makes;
``lake._sketch`` has true quantiles). ``aggregate`` repeats LeRobot's arithmetic on the stored values, cast back
to the dtype they were computed in, so the result is LeRobot's to the last bit (checked by
benchmarks/lerobot_stats_check.py against LeRobot itself).
"""

from __future__ import annotations

import warnings

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)  # q01 q10 q50 q90 q99
STATS = ("mean", "std", "min", "max") + QUANTILE_KEYS
BINS = 5000


def sample_indices(n: int) -> np.ndarray:
    """``compute_stats.sample_indices``: which of ``n`` frames the image stats read."""
    num = max(min(100, n), min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, num)).astype(int)


def downsample(img: np.ndarray, target: int = 150, threshold: int = 300) -> np.ndarray:
    """``auto_downsample_height_width`` on an (H, W, C) frame."""
    h, w = img.shape[:2]
    if max(w, h) < threshold:
        return img
    f = int(w / target) if w > h else int(h / target)
    return img[::f, ::f]


def _quantile(hist: np.ndarray, edges: np.ndarray, target: float):
    """``RunningQuantileStats._compute_single_quantile``, the same operations in the same order."""
    cumsum = np.cumsum(hist)
    idx = np.searchsorted(cumsum, target)
    if idx == 0:
        return edges[0]
    if idx >= len(cumsum):
        return edges[-1]
    before = cumsum[idx - 1]
    in_bin = cumsum[idx] - before
    if in_bin == 0:
        return edges[idx]
    fraction = (target - before) / in_bin
    return edges[idx] + fraction * (edges[idx + 1] - edges[idx])


def _quantiles(hists, edges, count: int) -> dict[str, np.ndarray]:
    return {k: np.array([_quantile(h, e, q * count) for h, e in zip(hists, edges)])
            for k, q in zip(QUANTILE_KEYS, QUANTILES)}


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's stats of one episode's numeric feature ``x`` (T, d), in ``x``'s dtype: count, mean, std, min,
    max, q01..q99, each (d,)."""
    x = np.ascontiguousarray(x).reshape(len(x), -1)
    if len(x) < 2:  # _compute_basic_stats
        mean = np.mean(x, axis=0)
        return {"count": np.array([len(x)]), "mean": mean, "std": np.std(x, axis=0), "min": np.min(x, axis=0),
                "max": np.max(x, axis=0), **{k: mean.copy() for k in QUANTILE_KEYS}}
    mean, mean_sq = np.mean(x, axis=0), np.mean(x**2, axis=0)
    lo, hi = np.min(x, axis=0), np.max(x, axis=0)
    edges = [np.linspace(lo[i] - 1e-10, hi[i] + 1e-10, BINS + 1) for i in range(x.shape[1])]
    with warnings.catch_warnings():  # numpy converts bool to uint8 for the histogram (LeRobot warns too)
        warnings.simplefilter("ignore", RuntimeWarning)
        hists = [np.zeros(BINS) + np.histogram(x[:, i], bins=edges[i])[0] for i in range(x.shape[1])]
    return {"count": np.array([len(x)]), "mean": mean, "std": np.sqrt(np.maximum(0, mean_sq - mean**2)),
            "min": lo, "max": hi, **_quantiles(hists, edges, len(x))}


def image_stats(frames) -> dict[str, np.ndarray]:
    """LeRobot's stats of one episode's camera from its decoded uint8 (H, W, 3) frames (all of them: the
    sampling is done here), per channel in [0, 1], shape (3, 1, 1). Computed from per-channel histograms of
    the 256 levels: the same sums, bins and interpolation as LeRobot's per-pixel arrays."""
    idx = sample_indices(len(frames))
    imgs = np.stack([downsample(np.asarray(frames[i])) for i in idx])  # (N, h, w, 3) uint8
    px = imgs.reshape(-1, imgs.shape[-1])
    n_px = px.shape[0]
    levels = np.arange(256, dtype=np.float64)
    counts = np.stack([np.bincount(px[:, c], minlength=256) for c in range(px.shape[1])]).astype(np.float64)
    if n_px < 2:
        raise ValueError("image stats need at least two pixels")
    mean = counts @ levels / n_px  # integer sums: exact whatever the order, as numpy's over the pixels
    mean_sq = counts @ levels**2 / n_px
    seen = counts > 0
    lo = seen.argmax(1).astype(np.float64)
    hi = (255 - seen[:, ::-1].argmax(1)).astype(np.float64)
    edges = [np.linspace(lo[c] - 1e-10, hi[c] + 1e-10, BINS + 1) for c in range(len(lo))]
    hists = [np.zeros(BINS) + np.histogram(levels, bins=edges[c], weights=counts[c])[0] for c in range(len(lo))]
    out = {"mean": mean, "std": np.sqrt(np.maximum(0, mean_sq - mean**2)), "min": lo, "max": hi,
           **_quantiles(hists, edges, n_px)}
    return {"count": np.array([len(idx)]), **{k: (v / 255.0).reshape(-1, 1, 1) for k, v in out.items()}}


def aggregate(per_episode: list[dict[str, np.ndarray]], dtype=None) -> dict[str, np.ndarray]:
    """``aggregate_feature_stats`` over one feature's per-episode stats (arrays of one shape; ``count`` (1,)).
    ``dtype``: the dtype mean/std were computed in (they are squared in it, as LeRobot does); default float64.
    Quantile keys present in every episode are aggregated, others left out (as LeRobot)."""
    qs = {k: np.stack([np.asarray(s[k]) for s in per_episode]) for k in QUANTILE_KEYS
          if all(k in s for s in per_episode)}
    return aggregate_stacked(np.array([int(np.asarray(s["count"]).ravel()[0]) for s in per_episode]),
                             *(np.stack([np.asarray(s[k]) for s in per_episode]) for k in ("mean", "std", "min", "max")),
                             qs, dtype)


def aggregate_stacked(counts, means, stds, mins, maxs, quantiles: dict, dtype=None) -> dict[str, np.ndarray]:
    """``aggregate`` on stacked arrays: ``counts`` (E,), the others (E, *shape), C order."""
    cast = (lambda v: np.ascontiguousarray(v, dtype)) if dtype is not None else np.ascontiguousarray  # noqa: E731
    means = cast(means)
    variances = cast(stds) ** 2
    counts = np.asarray(counts, np.int64).reshape(-1, 1)
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    mean = (means * counts).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
    out = {"min": np.min(cast(mins), axis=0), "max": np.max(cast(maxs), axis=0), "mean": mean,
           "std": np.sqrt(variance), "count": total}
    for k, v in quantiles.items():
        out[k] = (np.ascontiguousarray(v) * counts).sum(axis=0) / total
    return out
