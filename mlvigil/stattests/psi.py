"""Population Stability Index.

Convention (the numbers users compare with other tools):
    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)
over the reference bins, where e_i is the reference (expected) proportion of bin i and a_i the
window's (actual) proportion. A proportion that is exactly 0 is replaced by EPSILON = 1e-4
before the sum (the same rule as Evidently's psi test); no renormalisation. Numeric bins come
from the reference profile: inner edges at reference quantiles (duplicates removed), outer
edges -inf/+inf, bin i = [edge_{i-1}, edge_i) (a value equal to an edge goes to the upper bin,
Python's bisect_right). Categorical bins are the reference categories plus one "other" bin.

Rule of thumb (the seed article): PSI > 0.2 is significant drift, 0.1-0.2 moderate.
Noise floor: two samples of one distribution give about (B - 1) * (1/n + 1/N) on average with
B bins, n window and N reference values, so small windows need a minimum count before alerting.
"""

import numpy as np

from mlvigil.stattests.registry import StatTest, register

EPSILON = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = EPSILON) -> float:
    """PSI between two proportion vectors over the same bins."""
    e = np.asarray(expected, dtype=np.float64).copy()
    a = np.asarray(actual, dtype=np.float64).copy()
    if e.shape != a.shape:
        raise ValueError(f"bins differ: expected {e.shape}, actual {a.shape}")
    e[e == 0] = epsilon
    a[a == 0] = epsilon
    return float(np.sum((a - e) * np.log(a / e)))


def psi_from_counts(expected: np.ndarray, counts: np.ndarray, epsilon: float = EPSILON) -> float | None:
    """PSI of a window given its bin counts; None for an empty window."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return None
    return psi(expected, counts / total, epsilon)


register(
    StatTest(
        name="psi",
        description="Population Stability Index over the reference bins",
        default_threshold=0.2,
        func=psi,
    )
)
