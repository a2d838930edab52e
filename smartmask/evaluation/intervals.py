"""Deterministic percentile-bootstrap confidence intervals over evaluation items.

Every function draws its resample index matrix ONCE per call, as `np.random.default_rng(seed).integers(0, n,
size=(n_boot, n))`: row r is the r-th bootstrap resample (n item indices drawn with replacement). Consequences:

- equal inputs and arguments give bit-identical intervals (no global random state is read or changed);
- two calls over the same number of items with the same `seed` and `n_boot` resample the SAME items, so intervals
  of two model versions over one item list line up resample by resample (and `paired_difference` /
  `bootstrap_statistic` resample the arrays they are given jointly, with one index row for all of them).

The interval is the percentile interval: the (1 − level)/2 and (1 + level)/2 quantiles (numpy's default linear
interpolation) of the statistic over the n_boot resamples; `value` is the statistic on the items themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_NAN = float("nan")
# Rows of the index matrix gathered at a time in `bootstrap_mean`: bounds the (rows × n) float temporary.
_CHUNK_ROWS = 256


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A statistic and its bootstrap interval. `n` = items used (after NaN/None were dropped); `level` = coverage.
    With n == 0, value/low/high are NaN; with n == 1, low == high == value (a single item has no spread)."""

    value: float
    low: float
    high: float
    n: int
    level: float = 0.95


def _as_float(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """A 1-D float64 array; None becomes NaN."""
    if isinstance(values, np.ndarray):
        arr = values.astype(np.float64, copy=False)
    else:
        arr = np.array([_NAN if v is None else float(v) for v in values], dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of values, got shape {arr.shape}")
    return arr


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The (n_boot, n) resample index matrix: the one place randomness enters."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(stats, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def bootstrap_mean(
    values: Sequence[float | None] | np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """The mean of the per-item `values` and its percentile-bootstrap interval (items resampled with replacement).

    NaN and None items are dropped first; `n` counts the items used. n == 0 → value/low/high NaN; n == 1 →
    low == high == value.
    """
    _check(n_boot, level)
    x = _as_float(values)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Interval(value=_NAN, low=_NAN, high=_NAN, n=0, level=level)
    value = float(x.mean())
    if n == 1:
        return Interval(value=value, low=value, high=value, n=1, level=level)
    idx = _indices(n, n_boot, seed)
    means = np.concatenate([x[idx[r : r + _CHUNK_ROWS]].mean(axis=1) for r in range(0, n_boot, _CHUNK_ROWS)])
    low, high = _percentiles(means, level)
    return Interval(value=value, low=low, high=high, n=n, level=level)


def paired_difference(
    a: Sequence[float | None] | np.ndarray,
    b: Sequence[float | None] | np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """mean(a − b) over items and its paired bootstrap interval.

    `a[i]` and `b[i]` are two measurements of the same item i (e.g. two model versions on one held-out target);
    items are resampled jointly, so per-item difficulty cancels. Items where either value is NaN/None are dropped;
    `n` counts the pairs used. Identical arrays give exactly 0 with low == high == 0.
    """
    xa, xb = _as_float(a), _as_float(b)
    if xa.shape != xb.shape:
        raise ValueError(f"paired_difference: a and b must be aligned per item, got {xa.size} and {xb.size} items")
    keep = ~(np.isnan(xa) | np.isnan(xb))
    return bootstrap_mean(xa[keep] - xb[keep], n_boot=n_boot, level=level, seed=seed)


def bootstrap_statistic(
    stat_fn: Callable[..., Any],
    *arrays: np.ndarray,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """A set-level statistic `stat_fn(*arrays)` and its percentile-bootstrap interval.

    All arrays share their first axis (row i of each belongs to item i); each resample takes the SAME row
    indices from every array, then applies `stat_fn(*resampled)` (a float). `value` = `stat_fn` on the full
    arrays. For paired set-level comparisons pass both versions' rows, e.g. `stat_fn = lambda r, a, b:
    fid(r, a) - fid(r, b)` over real / version-A / version-B features of the same items.

    The default n_boot is 200 (not 1000) because a statistic such as FID costs seconds per call. No rows are
    dropped: a NaN statistic on any resample makes the bounds NaN. Note that a resample repeats rows, and
    statistics biased in the number of distinct samples (FID is) are shifted on resamples; the interval of a
    paired difference of two such statistics is the meaningful use.
    """
    _check(n_boot, level)
    if not arrays:
        raise ValueError("bootstrap_statistic needs at least one array")
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError(f"bootstrap_statistic: arrays differ in length: {[len(a) for a in arrs]}")
    if n == 0:
        return Interval(value=_NAN, low=_NAN, high=_NAN, n=0, level=level)
    value = float(stat_fn(*arrs))
    if n == 1:
        return Interval(value=value, low=value, high=value, n=1, level=level)
    idx = _indices(n, n_boot, seed)
    stats = np.array([float(stat_fn(*(a[row] for a in arrs))) for row in idx])
    low, high = _percentiles(stats, level)
    return Interval(value=value, low=low, high=high, n=n, level=level)


def significant(interval: Interval) -> bool:
    """True when 0 lies outside [low, high] (the difference is significant at the interval's level).
    False for NaN bounds and for a zero-width interval at 0."""
    return bool(interval.low > 0.0 or interval.high < 0.0) and not math.isnan(interval.value)
