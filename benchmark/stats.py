"""Seeded bootstrap confidence intervals for per-sample scores and paired differences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        """JSON-able form."""
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}

    def fmt(self, digits: int = 3) -> str:
        """'0.412 [0.380, 0.447]'."""
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def studentized_mean(values, *, seed: int = 0, n_boot: int = N_BOOT, alpha: float = ALPHA) -> Interval:
    """Studentised (bootstrap-t) CI of the mean: it covers at the small, skewed samples graded here, where the
    percentile and BCa intervals fall short (tests/test_stats.py: 16 exponential scores, nominal 95%).

    A sample with no spread gives a zero-width interval at its value.

    Reference: Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 12 (the bootstrap-t interval).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no samples to bootstrap")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{int((~np.isfinite(v)).sum())} of {v.size} values are NaN or infinite")
    m = float(v.mean())
    if v.size < 3 or np.all(v == v[0]):
        return Interval(m, float(v.min()), float(v.max()), int(v.size))
    se = float(v.std(ddof=1)) / np.sqrt(v.size)
    rng = np.random.default_rng(seed)
    resampled = v[rng.integers(0, v.size, size=(n_boot, v.size))]
    se_b = resampled.std(axis=1, ddof=1) / np.sqrt(v.size)
    spread = se_b > 0  # a resample of one repeated value has no t statistic
    t = (resampled.mean(axis=1)[spread] - m) / se_b[spread]
    t_high, t_low = np.quantile(t, [1 - alpha / 2, alpha / 2])
    return Interval(m, float(m - t_high * se), float(m - t_low * se), int(v.size))


def supports_positive(diff, *, seed: int = 0, alpha: float = ALPHA) -> tuple[bool, Interval]:
    """Whether the data support mean(diff) > 0 at level ``alpha`` (two-sided studentised CI), with that interval.

    A sample with no spread has a CI of zero width, which is no evidence in itself; it is then judged by the
    exact sign test: all n differences positive, with probability 0.5**n < alpha/2 under no effect (n >= 6).

    Reference: Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 12.
    """
    d = np.asarray(diff, dtype=np.float64).ravel()
    iv = studentized_mean(d, seed=seed, alpha=alpha)
    if d.size and np.all(d == d[0]):
        return bool(d[0] > 0 and 0.5**d.size < alpha / 2), iv
    return bool(iv.low > 0), iv
