"""Kolmogorov-Smirnov statistic against the reference.

Convention: the reference keeps Q + 1 quantile points of its training values (default Q = 100:
the 0 %, 1 %, ..., 100 % quantiles, numpy's linear interpolation). The window's statistic is the
two-sample KS statistic D = sup_x |F_window(x) - F_points(x)| between the window's values and
those points, i.e. exactly `scipy.stats.ks_2samp(window, points).statistic`. Its resolution is
about 1/Q: a window from the reference distribution itself scores up to about 0.01 plus sampling
noise.

The streaming job never keeps the window's values: it counts them per cell of the sorted unique
points (strictly between two points, or equal to one), which is enough to evaluate both
empirical CDFs at every point where the supremum can be reached.
"""

import numpy as np

from mlvigil.stattests.registry import StatTest, register


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic of raw samples (a direct evaluation, for backtests)."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def reference_cdf(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique points and F_points at each: the fraction of the points <= it."""
    points = np.sort(np.asarray(points, dtype=np.float64) + 0.0)
    unique = np.unique(points)
    cdf = np.searchsorted(points, unique, side="right") / points.size
    return unique, cdf


def ks_from_cells(cdf: np.ndarray, between: np.ndarray, equal: np.ndarray) -> float | None:
    """KS statistic from cell counts over the unique reference points u_0 < ... < u_{m-1}.

    between[k] counts window values strictly between u_{k-1} and u_k (k = 0: below u_0,
    k = m: above u_{m-1}); equal[j] counts values equal to u_j; cdf[j] = F_points(u_j).
    F_points is a step function, constant between points, so the supremum is reached either at
    a point (F_window(u_j) against cdf[j]) or just before one (F_window(u_j-) against cdf[j-1]).
    """
    between = np.asarray(between, dtype=np.float64)
    equal = np.asarray(equal, dtype=np.float64)
    n = between.sum() + equal.sum()
    if n == 0:
        return None
    m = equal.size
    # Values < u_j: everything below u_0 plus, for each earlier point, its equal and next cell.
    below = np.cumsum(between[:m]) + np.concatenate([[0.0], np.cumsum(equal[:-1])])
    at_or_below = below + equal
    cdf_before = np.concatenate([[0.0], cdf[:-1]])
    d_at = np.abs(at_or_below / n - cdf)
    d_before = np.abs(below / n - cdf_before)
    return float(max(d_at.max(), d_before.max()))


register(
    StatTest(
        name="ks",
        description="two-sample Kolmogorov-Smirnov statistic against the reference quantile points",
        default_threshold=0.1,
        func=ks_two_sample,
    )
)
