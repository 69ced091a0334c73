"""PSI: the seed article's worked example, the epsilon rule, and an independent reference."""

import math

import numpy as np
import pytest
from scipy.special import rel_entr

from mlvigil.stattests import get_stattest, registered
from mlvigil.stattests.psi import EPSILON, psi, psi_from_counts
from mlvigil.synth import AGE_AFTER, AGE_BEFORE, AGE_EDGES, exact_ages

# Seed article: user ages 18-25/26-35/36-45/46+ move from 40/30/20/10 % to 20/40/30/10 %.
EXPECTED = [0.4, 0.3, 0.2, 0.1]
ACTUAL = [0.2, 0.4, 0.3, 0.1]
# sum (a - e) ln(a / e) term by term: (-0.2) ln 0.5 + 0.1 ln(4/3) + 0.1 ln 1.5 + 0.
WORKED = 0.2 * math.log(2) + 0.1 * math.log(4 / 3) + 0.1 * math.log(1.5)


def reference_psi(expected, actual, eps=1e-4):
    """PSI as a symmetrised Kullback-Leibler divergence: KL(a || e) + KL(e || a)."""
    e = np.where(np.asarray(expected, float) == 0, eps, expected)
    a = np.where(np.asarray(actual, float) == 0, eps, actual)
    return float(rel_entr(a, e).sum() + rel_entr(e, a).sum())


def test_worked_example_closed_form():
    assert psi(EXPECTED, ACTUAL) == pytest.approx(WORKED, abs=1e-12)
    assert WORKED == pytest.approx(0.207944, abs=1e-6)


def test_worked_example_rounding():
    value = psi(EXPECTED, ACTUAL)
    assert round(value, 3) == 0.208
    # An issue quoted 0.2081; to four places the exact value is 0.2079.
    assert round(value, 4) == 0.2079


def test_worked_example_from_counts():
    assert psi_from_counts(EXPECTED, [20, 40, 30, 10]) == pytest.approx(WORKED, abs=1e-12)
    assert psi_from_counts(EXPECTED, [2000, 4000, 3000, 1000]) == pytest.approx(WORKED, abs=1e-12)


def test_synthetic_ages_reproduce_worked_example():
    rng = np.random.default_rng(3)
    before = exact_ages(rng, 1000, AGE_BEFORE)
    after = exact_ages(rng, 600, AGE_AFTER)
    expected = np.bincount(np.searchsorted(AGE_EDGES, before, side="right"), minlength=4) / before.size
    counts = np.bincount(np.searchsorted(AGE_EDGES, after, side="right"), minlength=4)
    np.testing.assert_allclose(expected, EXPECTED, atol=1e-15)
    assert psi_from_counts(expected, counts) == pytest.approx(WORKED, abs=1e-12)


def test_epsilon_replaces_zero_actual():
    # actual bin 2 is empty: a = 1e-4, no renormalisation of the other bins.
    value = psi([0.5, 0.5], [1.0, 0.0])
    by_hand = (1.0 - 0.5) * math.log(1.0 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert value == pytest.approx(by_hand, abs=1e-12)
    assert value == pytest.approx(4.6043, abs=1e-4)


def test_epsilon_replaces_zero_expected():
    value = psi([0.5, 0.5, 0.0], [0.5, 0.25, 0.25])
    by_hand = 0.0 + (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - 1e-4) * math.log(0.25 / 1e-4)
    assert value == pytest.approx(by_hand, abs=1e-12)


def test_epsilon_is_1e4_and_can_be_overridden():
    assert EPSILON == 1e-4
    by_hand = 0.5 * math.log(2) + (1e-6 - 0.5) * math.log(1e-6 / 0.5)
    assert psi([0.5, 0.5], [1.0, 0.0], epsilon=1e-6) == pytest.approx(by_hand, abs=1e-12)


def test_both_zero_bin_contributes_nothing():
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0


def test_inputs_are_not_modified():
    e = np.array([0.5, 0.5, 0.0])
    a = np.array([1.0, 0.0, 0.0])
    psi(e, a)
    assert e.tolist() == [0.5, 0.5, 0.0] and a.tolist() == [1.0, 0.0, 0.0]


def test_empty_window_is_none():
    assert psi_from_counts(EXPECTED, [0, 0, 0, 0]) is None
    assert psi_from_counts([1.0], [0]) is None


def test_bins_must_match():
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError):
        psi_from_counts([0.5, 0.5], [1, 2, 3])


def random_proportions(rng, k, zeros=0):
    p = rng.dirichlet(np.full(k, 0.7))
    if zeros:
        p[rng.choice(k, min(zeros, k - 1), replace=False)] = 0.0
        p /= p.sum()
    return p


@pytest.mark.parametrize("seed", range(20))
def test_symmetric_and_nonnegative(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 30))
    e = random_proportions(rng, k, zeros=seed % 3)
    a = random_proportions(rng, k, zeros=(seed + 1) % 2)
    assert psi(e, a) == pytest.approx(psi(a, e), rel=1e-12, abs=1e-15)
    assert psi(e, a) >= 0.0
    assert psi(e, e) == 0.0


@pytest.mark.parametrize("seed", range(30))
def test_matches_symmetrised_kl(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 60))
    e = random_proportions(rng, k, zeros=seed % 4)
    a = random_proportions(rng, k, zeros=(seed // 4) % 3)
    assert psi(e, a) == pytest.approx(reference_psi(e, a), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_counts_are_normalised(seed):
    rng = np.random.default_rng(200 + seed)
    e = random_proportions(rng, 8)
    counts = rng.integers(0, 50, size=8)
    counts[0] += 1
    assert psi_from_counts(e, counts) == pytest.approx(reference_psi(e, counts / counts.sum()), rel=1e-10, abs=1e-12)


def test_registered_with_article_threshold():
    assert "psi" in registered()
    test = get_stattest("psi")
    assert test.default_threshold == 0.2
    assert test.func(EXPECTED, ACTUAL) == pytest.approx(WORKED, abs=1e-12)
    with pytest.raises(KeyError):
        get_stattest("no-such-test")
