"""Confidence intervals for per-sample scores and paired differences: a seeded bootstrap-t over images (one training
seed), or a t interval over the training seeds' means (two or more)."""

from __future__ import annotations

import functools
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


def studentized_mean(values, *, seed: int = 0, n_boot: int = N_BOOT, alpha: float = ALPHA, groups=None) -> Interval:
    """Studentised (bootstrap-t) CI of the mean: it covers at the small, skewed samples graded here, where the
    percentile and BCa intervals fall short (tests/test_stats.py: 16 exponential scores, nominal 95%).

    A sample with no spread gives a zero-width interval at its value. Where resamples with no spread (t* = +-inf)
    reach a tail quantile, the bootstrap-t bound is unbounded and the percentile interval stands in. With ``groups``
    naming two or more training seeds, the interval is :func:`hierarchical_mean`'s instead.

    Reference: Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 12 (the bootstrap-t interval).
    """
    v = _checked(values)
    m = float(v.mean())
    if _nested(groups, v):
        return hierarchical_mean(v, groups, seed=seed, n_boot=n_boot, alpha=alpha)
    if v.size < 3 or np.all(v == v[0]):
        return Interval(m, float(v.min()), float(v.max()), int(v.size))
    boot = _bootstrap_t(v, seed, n_boot)
    quantiles = boot.t_quantiles(alpha)
    if quantiles is None:
        low, high = np.quantile(boot.means, [alpha / 2, 1 - alpha / 2])
        return Interval(m, float(low), float(high), int(v.size))
    t_low, t_high = quantiles
    return Interval(m, float(m - t_high * boot.se), float(m - t_low * boot.se), int(v.size))


def _checked(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no samples to bootstrap")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{int((~np.isfinite(v)).sum())} of {v.size} values are NaN or infinite")
    return v


@functools.lru_cache(maxsize=8)  # a run has a few image counts per seed; 8 matrices of 2000 x 360 are 46 MB
def _resample_indices(seed: int, n: int, n_boot: int) -> np.ndarray:
    # The draws depend only on (seed, n, n_boot): a cell's up to 27 bootstraps of the same images share one matrix
    # (read-only, so no caller can change what the next one gets). Byte-identical to drawing each time.
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    idx.setflags(write=False)
    return idx


@dataclass(frozen=True)
class _Bootstrap:
    """One sample's bootstrap draws: its standard error, each resample's mean and t statistic."""

    se: float
    means: np.ndarray
    t: np.ndarray

    def t_quantiles(self, alpha: float) -> tuple[float, float] | None:
        """The t* quantiles at ``alpha / 2`` and ``1 - alpha / 2``; None when either is infinite (the percentile
        interval then stands in)."""
        # A resample with no spread has t = +-inf, its limit. When such resamples reach a tail quantile the t bound
        # is unbounded: 180 scores of 1.014 and three zeros left 5% of resamples all 1.014, and the lower bound -9.9e12.
        with np.errstate(invalid="ignore"):  # inf - inf interpolates to NaN: no bound either way
            low, high = np.quantile(self.t, [alpha / 2, 1 - alpha / 2])
        return (float(low), float(high)) if np.isfinite(low) and np.isfinite(high) else None


def _bootstrap_t(v: np.ndarray, seed: int, n_boot: int) -> _Bootstrap:
    # A cell bootstraps the same values several times: a control's difference for its CI, its p-value and (negated)
    # whether the control wins; the pass level's three questions likewise. Negating the values negates every t* and
    # mean* exactly (IEEE rounding is symmetric) and keeps se, so v and -v share one draw: half the bootstraps.
    flip = bool(v.size and v[0] < 0)
    boot = _bootstrap_t_memo((-v if flip else v).tobytes(), seed, n_boot)
    return _Bootstrap(boot.se, -boot.means, -boot.t) if flip else boot


# The controls' and anchors' arrays recur in every method's cells of a metric, and other cells' arrays come between
# two such cells: 32 entries had evicted them by then. 512 entries of 2000 t* and mean* (32 kB each) are 16 MB.
@functools.lru_cache(maxsize=512)
def _bootstrap_t_memo(data: bytes, seed: int, n_boot: int) -> _Bootstrap:
    boot = _bootstrap_t_of(np.frombuffer(data, dtype=np.float64), seed, n_boot)
    boot.t.setflags(write=False)
    boot.means.setflags(write=False)
    return boot


def _bootstrap_t_of(v: np.ndarray, seed: int, n_boot: int) -> _Bootstrap:
    # The sample's standard error and the bootstrap distribution of the t statistic (mean* - mean) / se*.
    se = float(v.std(ddof=1)) / np.sqrt(v.size)
    resampled = v[_resample_indices(seed, v.size, n_boot)]
    means = resampled.mean(axis=1)
    se_b = resampled.std(axis=1, ddof=1) / np.sqrt(v.size)
    # "No spread" is a tolerance at rounding level, not == 0: the std of 180 copies of 1.014 is 1e-16, not 0, and
    # dividing by it gave t* of 1e14. Such a resample's t* is its limit, +-inf, or 0 when its mean is the sample's.
    tol = 16 * v.size * np.finfo(np.float64).eps * float(np.max(np.abs(v)))
    diff = means - v.mean()
    spread = se_b > tol
    flat = np.where(np.abs(diff) <= tol, 0.0, np.where(diff > 0, np.inf, -np.inf))
    t = np.where(spread, diff / np.where(spread, se_b, 1.0), flat)
    return _Bootstrap(se, means, t)


def positive_p_value(diff, *, seed: int = 0, n_boot: int = N_BOOT, groups=None) -> float:
    """Two-sided p-value of 'mean(diff) = 0' from the same bootstrap-t draws as :func:`studentized_mean`, so that
    p < alpha exactly when the CI excludes zero on the positive side (up to the draws' resolution, 2/(n_boot+1)).

    No spread: the exact sign test, 2 * 0.5**n when every difference is positive. A mean on the wrong side: 1.
    With ``groups`` naming two or more training seeds, the t test of :func:`hierarchical_mean`'s interval.

    Reference: Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 16 (bootstrap hypothesis tests).
    """
    d = _checked(diff)
    if d.size < 3 or np.all(d == d[0]):
        return float(min(1.0, 2 * 0.5**d.size)) if np.all(d > 0) else 1.0
    if d.mean() <= 0:
        return 1.0
    if _nested(groups, d) and _seed_level(d, groups)[1] > 0:
        mu, se, k = _seed_level(d, groups)
        return float(min(1.0, 2 * _t_distribution().sf(mu / se, k - 1)))
    boot = _bootstrap_t(d, seed, n_boot)
    if boot.t_quantiles(ALPHA) is None:
        # The percentile interval's test, so that p < alpha where that interval excludes zero: how often mean* <= 0.
        return float(min(1.0, 2 * (np.count_nonzero(boot.means <= 0) + 1) / (boot.means.size + 1)))
    # Under the null the statistic d.mean()/se is as extreme as the resampled t* this often (+1: the sample itself).
    one_sided = (np.count_nonzero(boot.t >= d.mean() / boot.se) + 1) / (boot.t.size + 1)
    return float(min(1.0, 2 * one_sided))


def benjamini_hochberg(p_values: list[float], q: float = ALPHA) -> list[bool]:
    """Which hypotheses the Benjamini–Hochberg step-up rejects at false discovery rate ``q``.

    Reference: Benjamini & Hochberg 1995, Controlling the false discovery rate, JRSS B 57(1).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    k = max((rank for rank, i in enumerate(order, start=1) if p_values[i] <= rank * q / m), default=0)
    rejected = [False] * m
    for i in order[:k]:
        rejected[i] = True
    return rejected


def supports_positive(diff, *, seed: int = 0, alpha: float = ALPHA, groups=None) -> tuple[bool, Interval]:
    """Whether the data support mean(diff) > 0 at level ``alpha`` (two-sided studentised CI), with that interval.

    A sample with no spread has a CI of zero width, which is no evidence in itself; it is then judged by the
    exact sign test: all n differences positive, with probability 0.5**n < alpha/2 under no effect (n >= 6).

    Reference: Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 12.
    """
    d = np.asarray(diff, dtype=np.float64).ravel()
    iv = studentized_mean(d, seed=seed, alpha=alpha, groups=groups)
    if d.size and np.all(d == d[0]):
        return bool(d[0] > 0 and 0.5**d.size < alpha / 2), iv
    return bool(iv.low > 0), iv


def groups_of(counts: list[int]) -> np.ndarray | None:
    """Each sample's training-seed position from images per seed (None for one seed: the flat bootstrap)."""
    return None if len(counts) < 2 else np.repeat(np.arange(len(counts)), counts)


def _nested(groups, v: np.ndarray) -> bool:
    # Two or more training seeds: the t interval on the seeds' means. One seed (or none given): the flat one, unchanged.
    if groups is None:
        return False
    g = np.asarray(groups).ravel()
    if g.size != v.size:
        raise ValueError(f"{g.size} group labels for {v.size} samples")
    return np.unique(g).size > 1


def _t_distribution():
    # scipy.stats costs 0.45 s to import (measured on 2 cores), and every pytest session imports this module through
    # the plugin; only runs with two or more training seeds need it.
    from scipy.stats import t

    return t


def _seed_level(v: np.ndarray, groups) -> tuple[float, float, int]:
    # (pooled mean, its standard error from the spread of the seeds' means, seeds): the cluster-robust variance of a
    # weighted mean of K cluster means, with the K/(K-1) small-sample factor (Cameron & Miller 2015, sec. VI).
    labels, inverse = np.unique(np.asarray(groups).ravel(), return_inverse=True)
    n = np.bincount(inverse)
    means = np.bincount(inverse, weights=v) / n
    w = n / v.size
    mu = float(v.mean())
    k = labels.size
    return mu, float(np.sqrt(k / (k - 1) * np.sum(w**2 * (means - mu) ** 2))), k


def hierarchical_mean(values, groups, *, seed: int = 0, n_boot: int = N_BOOT, alpha: float = ALPHA) -> Interval:
    """CI of the pooled mean over training seeds and images: a t interval with K-1 degrees of freedom on the spread
    of the K seeds' means, which carries the seed-to-seed spread as well as each seed's image noise.

    The seed level rests on K values, so its spread is judged by Student's t, not resampled: a bootstrap over 3
    seeds covered 80% under a large seed effect, this interval 96% (3 seeds x 100 images, tests/test_stats.py).
    When every seed's mean is the same the seeds add no spread, and the images' bootstrap-t interval stands.

    Reference: Cameron & Miller 2015, A Practitioner's Guide to Cluster-Robust Inference, J. Human Resources 50(2),
    sec. VI (few clusters: the t(K-1) reference with the K/(K-1) correction).
    """
    v = _checked(values)
    g = np.asarray(groups).ravel()
    if g.size != v.size:
        raise ValueError(f"{g.size} group labels for {v.size} samples")
    mu, se, k = _seed_level(v, g)
    if se == 0:
        return studentized_mean(v, seed=seed, n_boot=n_boot, alpha=alpha)
    q = float(_t_distribution().ppf(1 - alpha / 2, k - 1))
    return Interval(mu, mu - q * se, mu + q * se, int(v.size))
