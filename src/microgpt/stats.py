"""Statistics over seeds: a configuration's mean, sd and confidence interval, and how two configurations compare.

Every interval and test comes from scipy.stats (Student's t, Welch's t-test); nothing here is a hand-typed table.
scipy.stats takes ~0.7 s to import, so it is imported inside the functions that need it, not by `microgpt train`.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

LEVEL = 0.95   # confidence level of every interval in the report
ALPHA = 0.05   # significance level of every test (two-sided)
NO_STATS = "statistics not available (n < 2)"


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (ddof 1) of one figure over the seeds of a configuration."""

    n: int
    mean: float | None   # None when n = 0
    sd: float | None     # None when n < 2


def spread(values: list[float]) -> Spread:
    """n, mean and sample sd of the finite values given."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return Spread(0, None, None)
    return Spread(len(xs), statistics.fmean(xs), statistics.stdev(xs) if len(xs) >= 2 else None)


def mean_ci(values: list[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The t-distribution confidence interval of the mean; None with fewer than 2 values."""
    from scipy import stats

    s = spread(values)
    if s.n < 2:
        return None
    if s.sd == 0:
        return (s.mean, s.mean)
    lo, hi = stats.t.interval(level, df=s.n - 1, loc=s.mean, scale=s.sd / math.sqrt(s.n))
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Comparison:
    """A configuration against the baseline, on one figure; `diff` = baseline mean - other mean (positive: other lower)."""

    diff: float
    ci: tuple[float, float]   # LEVEL interval of diff, Welch-Satterthwaite degrees of freedom
    p: float | None           # Welch's two-sided p-value; None when both samples have zero variance
    hedges_g: float | None    # diff / pooled sd, small-sample corrected; None when the pooled sd is 0


def compare(baseline: list[float], other: list[float], level: float = LEVEL) -> Comparison | None:
    """Welch's t-test and Hedges' g of other against baseline; None when either side has fewer than 2 values."""
    from scipy import stats

    a, b = spread(baseline), spread(other)
    if a.n < 2 or b.n < 2:
        return None
    diff = a.mean - b.mean
    xs = [v for v in baseline if v is not None and math.isfinite(v)]
    ys = [v for v in other if v is not None and math.isfinite(v)]
    if a.sd == 0 and b.sd == 0:  # the t statistic is 0/0 or x/0: no test, the difference is exact
        return Comparison(diff, (diff, diff), None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on near-identical samples; the numbers stand
        result = stats.ttest_ind(xs, ys, equal_var=False)
        lo, hi = result.confidence_interval(confidence_level=level)
    return Comparison(diff, (float(lo), float(hi)), float(result.pvalue), hedges_g(xs, ys))


def hedges_g(baseline: list[float], other: list[float]) -> float | None:
    """(mean baseline - mean other) / pooled sd, times the exact small-sample correction J(df) (Hedges 1981)."""
    n1, n2 = len(baseline), len(other)
    df = n1 + n2 - 2
    if df < 1:
        return None
    pooled = math.sqrt(((n1 - 1) * statistics.variance(baseline) + (n2 - 1) * statistics.variance(other)) / df)
    if pooled == 0:
        return None
    d = (statistics.fmean(baseline) - statistics.fmean(other)) / pooled  # Cohen's d
    j = math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)
    return d * j


def relative(comparison: Comparison, baseline_mean: float) -> tuple[float, tuple[float, float]]:
    """The comparison as a relative reduction of the baseline mean: (diff / mean, its interval / mean).

    The baseline mean is treated as a constant here; with 3 seeds its own sd is well under 1% of a loss near 2,
    so the interval it would add is small beside the one of the difference."""
    lo, hi = comparison.ci
    return comparison.diff / baseline_mean, (lo / baseline_mean, hi / baseline_mean)


def verdict(predicted: float, comparison: Comparison | None, baseline_mean: float) -> str:
    """Whether a measured relative reduction bears out a predicted one; the rules, in order:

    1. either side has fewer than 2 seeds                  -> "statistics not available (n < 2)"
    2. no p-value (both sides zero variance), or p >= ALPHA -> "not significant at 5%"
    3. significant and the measured reduction has the other sign than the predicted one -> "opposite"
    4. the predicted reduction lies inside the measured reduction's 95% interval -> "confirmed"
    5. the whole interval lies below the prediction -> "smaller"; above it -> "larger"
    Welch's test and its interval agree: p < ALPHA exactly when the 95% interval excludes 0, so rule 3 is well defined.
    """
    if comparison is None:
        return NO_STATS
    if comparison.p is None or not comparison.p < ALPHA:
        return "not significant at 5%"
    measured, (lo, hi) = relative(comparison, baseline_mean)
    if (measured > 0) != (predicted > 0):
        return "opposite"
    if lo <= predicted <= hi:
        return "confirmed"
    return "smaller" if hi < predicted else "larger"
