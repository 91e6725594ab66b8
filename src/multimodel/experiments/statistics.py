"""Seed statistics of the experiments: mean ± std per cell, paired intervals for differences.

Every question of the paper is a difference between two arms trained with the same seeds
(joint − single, ablated − full, with-other-tasks − alone). Seed index ``i`` of both arms shares
the data seed and initialisation seed, so the differences are *paired*: ``d_i = a_i − b_i``.
Two 95 % intervals for the mean of ``d`` are computed:

* **Student t** (primary): ``mean ± t_{n−1, 0.975} · s / √n``. Exact when the per-seed
  differences are normal, and close to its nominal coverage for symmetric, light-tailed ones
  even at n = 3. With few seeds it is wide (t_{2, 0.975} = 4.30): it says honestly how little
  three seeds establish. A difference is **established** when this interval excludes 0.
* **Percentile bootstrap** over seeds (reported beside it): resample the n differences with
  replacement, take the 2.5 % and 97.5 % percentiles of the resampled means. It needs no
  normality but cannot reach beyond the observed values: with n = 3 it misses the true mean
  whenever all three differences fall on one side of it, a chance of 1/4 for a symmetric
  distribution, so its real coverage is at most 75 %. It is shown to let a reader see the
  spread of the seeds, never to call a difference established.

Lower-is-better metrics (WER, log-perplexity) are handled by :func:`better`: a difference is
reported in the metric's own units and its sign is read in the metric's direction.
The module is pure (numpy and math only), so its tests need no training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

#: Confidence level of every interval in the reports.
LEVEL = 0.95

#: Metrics (and measures) for which a lower value is better.
LOWER_IS_BETTER = frozenset({"wer", "log_perplexity"})


def higher_is_better(metric: str) -> bool:
    """False for WER and log-perplexity (and their ``blind_`` versions), True otherwise."""
    return metric.removeprefix("blind_") not in LOWER_IS_BETTER


def better(a: float, b: float, metric: str) -> bool:
    """Whether value ``a`` is strictly better than ``b`` on ``metric``."""
    return a > b if higher_is_better(metric) else a < b


# ----------------------------------------------------------------------------------------
# Student's t distribution (no scipy: numpy is the only numeric dependency of the package).


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 ≤ x ≤ 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------------
# Intervals.


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def describe(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof 1; 0 for one value), count, the values."""
    arr = _finite(values)
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "values": [float(v) for v in values]}
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": [float(v) for v in values]}


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The two-sided ``level`` Student-t interval for the mean of ``values`` (NaNs with n < 2)."""
    arr = _finite(values)
    if arr.size < 2:
        return math.nan, math.nan
    mean, sem = float(arr.mean()), float(arr.std(ddof=1)) / math.sqrt(arr.size)
    half = t_quantile(0.5 + level / 2.0, arr.size - 1) * sem
    return mean - half, mean + half


def bootstrap_interval(values: Sequence[float], level: float = LEVEL, *, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap ``level`` interval for the mean of ``values`` (NaNs with n < 2).

    Deterministic: the resampling uses its own generator seeded with ``seed``.
    """
    arr = _finite(values)
    if arr.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)  # (resamples,)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def seeds_to_establish(mean: float, std: float, level: float = LEVEL, limit: int = 100) -> int | None:
    """Fewest seeds whose t-interval would exclude 0 if the mean and std stayed as observed.

    None when the mean is 0 (or not finite) or more than ``limit`` seeds would be needed.
    """
    if not (math.isfinite(mean) and math.isfinite(std)) or mean == 0.0:
        return None
    if std == 0.0:
        return 2
    for n in range(2, limit + 1):
        if t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n) < abs(mean):
            return n
    return None


@dataclass
class Difference:
    """A paired difference ``a − b`` over seeds, in the metric's units.

    Args:
        metric: what was compared (``accuracy``, ``wer``, ``log_perplexity`` ...).
        seeds: the seed indices present in both arms, in order.
        values: the per-seed differences.
        mean: their mean; ``std``: their sample standard deviation.
        t_low, t_high: the Student-t interval (primary); ``boot_low``, ``boot_high``: the
            percentile bootstrap (shown beside it).
        established: the t-interval excludes 0.
        verdict: ``better`` / ``worse`` (``a`` than ``b``, in the metric's direction, established),
            ``no established difference``, or ``one seed`` (no interval).
        same_sign: every seed's difference has the sign of the mean.
        seeds_needed: seeds that would establish it at the observed mean and spread (None: over
            100, or no difference at all); only for differences not yet established.
    """

    metric: str
    seeds: list[int]
    values: list[float]
    mean: float
    std: float
    t_low: float
    t_high: float
    boot_low: float
    boot_high: float
    established: bool
    verdict: str
    same_sign: bool
    seeds_needed: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], metric: str, *,
                      level: float = LEVEL) -> Difference:
    """The difference ``a − b`` paired by seed (keys: seed indices); seeds missing or NaN in
    either arm are left out."""
    seeds = sorted(s for s in set(a) & set(b)
                   if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s]))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    stats = describe(diffs)
    mean, std = stats["mean"], stats["std"]
    t_low, t_high = t_interval(diffs, level)
    boot_low, boot_high = bootstrap_interval(diffs, level)
    established = len(diffs) >= 2 and (t_low > 0 or t_high < 0)
    if len(diffs) < 2:
        verdict = "one seed" if diffs else "no data"
    elif established:
        verdict = "better" if (mean > 0) == higher_is_better(metric) else "worse"
    else:
        verdict = "no established difference"
    same_sign = bool(diffs) and all((d > 0) == (mean > 0) and d != 0 for d in diffs)
    needed = None if established or len(diffs) < 2 else seeds_to_establish(mean, std, level)
    return Difference(metric, seeds, diffs, mean, std, t_low, t_high, boot_low, boot_high, established, verdict,
                      same_sign, needed)


def fmt_interval(low: float, high: float, digits: int = 1) -> str:
    """``[low, high]`` or ``—`` when not computed."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


__all__ = ["LEVEL", "LOWER_IS_BETTER", "Difference", "better", "bootstrap_interval", "describe", "fmt_interval",
           "higher_is_better", "paired_difference", "seeds_to_establish", "t_cdf", "t_interval", "t_quantile"]
