"""Thresholds that know their sample size: tests of a window's bin counts against the reference,
and the Benjamini-Hochberg procedure across the tests of one window. Pure numpy/math.

* ``chi2_homogeneity``: Pearson's chi-square test that the window's bin counts and the
  reference's (expected proportion x reference count N) come from one distribution, a 2 x B
  contingency table: X^2 = sum over both rows and the B bins of (O - E)^2 / E, with E from the
  margins, B - 1 degrees of freedom (B = bins with any count). Unlike a goodness-of-fit test it
  accounts for the reference being a sample too, which matters when the window is as large as N.
* ``psi_statistic``: PSI / (1/n + 1/N). PSI is the symmetric (Jeffreys) divergence, which is
  about sum (a - e)^2 / e for small differences; under no drift that is about (1/n + 1/N) times
  a chi-square with B - 1 degrees of freedom, hence the scaling (the noise floor
  (B - 1)(1/n + 1/N) of mlvigil.stattests.psi is its mean).
* ``chi2_sf``: the chi-square survival function for integer degrees of freedom, in closed form.
* ``benjamini_hochberg``: which of m p-values are discoveries at false-discovery rate q.
"""

import math

import numpy as np


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df), df a positive integer (closed form, no scipy).

    Even df: exp(-x/2) sum_{i < df/2} (x/2)^i / i!. Odd df: erfc(sqrt(x/2)) plus
    exp(-x/2) sum_{i=1}^{(df-1)/2} (x/2)^(i - 1/2) / Gamma(i + 1/2). Terms are summed in log
    space so large x and df neither overflow nor lose the tail."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, not {df!r}")
    if not x > 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    h = x / 2.0
    if df % 2 == 0:
        logs = [-h + i * math.log(h) - math.lgamma(i + 1) for i in range(df // 2)]
        base = 0.0
    else:
        logs = [-h + (i - 0.5) * math.log(h) - math.lgamma(i + 0.5) for i in range(1, (df - 1) // 2 + 1)]
        base = math.erfc(math.sqrt(h))
    top = max(logs, default=-math.inf)
    tail = 0.0 if top == -math.inf else math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, base + tail)


def chi2_homogeneity(observed: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """(X^2, degrees of freedom) of the 2 x B table [observed; reference] of counts.

    Bins empty in both rows are left out; df = (bins left) - 1, and 0 means nothing to test."""
    o = np.asarray(observed, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if o.shape != r.shape:
        raise ValueError(f"bins differ: observed {o.shape}, reference {r.shape}")
    keep = (o + r) > 0
    o, r = o[keep], r[keep]
    n, big_n = o.sum(), r.sum()
    if o.size < 2 or n <= 0 or big_n <= 0:
        return 0.0, 0
    col = o + r
    e_o = col * n / (n + big_n)
    e_r = col * big_n / (n + big_n)
    stat = float(np.sum((o - e_o) ** 2 / e_o) + np.sum((r - e_r) ** 2 / e_r))
    return stat, int(o.size - 1)


def psi_statistic(psi: float, n: float, reference_n: float) -> float:
    """PSI / (1/n + 1/N): about chi-square with B - 1 degrees of freedom under no drift."""
    return float(psi) / (1.0 / float(n) + 1.0 / float(reference_n))


def benjamini_hochberg(pvalues: np.ndarray, q: float) -> np.ndarray:
    """Boolean mask of the discoveries among m p-values at false-discovery rate q: reject the k
    smallest, k the largest rank with p_(k) <= k q / m (Benjamini & Hochberg 1995)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    reject = np.zeros(m, dtype=bool)
    if m == 0:
        return reject
    order = np.argsort(p, kind="stable")
    below = p[order] <= q * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.nonzero(below)[0].max())
        reject[order[: k + 1]] = True
    return reject


def counts_from_proportions(proportions: list[float] | np.ndarray, total: float) -> np.ndarray:
    """Bin counts back from proportions of a total (the metric rows keep proportions)."""
    return np.rint(np.asarray(proportions, dtype=np.float64) * float(total))
