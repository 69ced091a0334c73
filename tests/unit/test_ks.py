"""KS: the direct statistic and the streaming cell form both equal scipy's ks_2samp."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from mlvigil.profile import numeric_column
from mlvigil.stattests import get_stattest, registered
from mlvigil.stattests.ks import ks_from_cells, ks_two_sample, reference_cdf

LEVELS = np.linspace(0.0, 1.0, 101)


def cells(window, unique_points):
    """The streaming job's cell counts, built another way: membership with np.isin, and the
    cell of a non-member = how many points lie below it (np.searchsorted, side='left')."""
    window = np.asarray(window, dtype=np.float64)
    unique_points = np.asarray(unique_points, dtype=np.float64)
    m = unique_points.size
    hit = np.isin(window, unique_points)
    equal = np.bincount(np.searchsorted(unique_points, window[hit]), minlength=m)
    between = np.bincount(np.searchsorted(unique_points, window[~hit], side="left"), minlength=m + 1)
    assert equal.size == m and between.size == m + 1
    assert equal.sum() + between.sum() == window.size
    return between, equal


def scipy_ks(a, b):
    return float(ks_2samp(a, b).statistic)


def samples(kind, rng):
    """(training values, window values) of one kind of data."""
    if kind == "continuous":
        return rng.normal(0, 1, 3000), rng.normal(0, 1, 400)
    if kind == "shifted":
        return rng.normal(0, 1, 3000), rng.normal(0.4, 1.3, 500)
    if kind == "discrete":  # many ties; quantile points repeat
        return rng.poisson(3, 2000).astype(float), rng.poisson(3.5, 300).astype(float)
    if kind == "binary":
        return (rng.random(1000) < 0.2).astype(float), (rng.random(200) < 0.4).astype(float)
    if kind == "lognormal":
        return rng.lognormal(2, 0.5, 5000), rng.lognormal(1.5, 0.5, 250)
    if kind == "below_all":
        return rng.uniform(10, 20, 500), rng.uniform(0, 5, 50)
    if kind == "above_all":
        return rng.uniform(10, 20, 500), rng.uniform(30, 40, 50)
    if kind == "on_points":  # the window is made of the reference's own quantile points
        train = rng.normal(5, 2, 800)
        return train, rng.choice(np.quantile(train, LEVELS), 120)
    if kind == "single":
        return rng.normal(0, 1, 500), rng.normal(0, 1, 1)
    if kind == "constant":
        return np.full(300, 7.0), np.array([6.0, 7.0, 7.0, 8.0])
    raise AssertionError(kind)


KINDS = ["continuous", "shifted", "discrete", "binary", "lognormal", "below_all", "above_all", "on_points",
         "single", "constant"]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", KINDS)
def test_two_sample_matches_scipy(kind, seed):
    a, b = samples(kind, np.random.default_rng(seed))
    assert ks_two_sample(a, b) == pytest.approx(scipy_ks(a, b), abs=1e-12)
    assert ks_two_sample(b, a) == pytest.approx(scipy_ks(a, b), abs=1e-12)


def test_two_sample_extremes():
    x = np.arange(10.0)
    assert ks_two_sample(x, x) == 0.0
    assert ks_two_sample(x, x + 100) == 1.0
    # F_a - F_b reaches 1/2 between 1 and 2: a = {0, 1}, b = {1, 2} -> F_a(1) = 1, F_b(1) = 1/2.
    assert ks_two_sample([0.0, 1.0], [1.0, 2.0]) == 0.5


def test_reference_cdf_of_repeated_points():
    unique, cdf = reference_cdf([3.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    assert unique.tolist() == [1.0, 2.0, 3.0]
    assert cdf.tolist() == pytest.approx([2 / 6, 3 / 6, 1.0], abs=1e-15)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", KINDS)
def test_cells_match_scipy(kind, seed):
    train, window = samples(kind, np.random.default_rng(1000 + seed))
    points = np.quantile(train, LEVELS)
    unique, cdf = reference_cdf(points)
    between, equal = cells(window, unique)
    assert ks_from_cells(cdf, between, equal) == pytest.approx(scipy_ks(window, points), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", KINDS)
def test_profile_points_match_scipy(kind, seed):
    """The path the job takes: the profile's ks_points/ks_cdf, cells counted over ks_points."""
    train, window = samples(kind, np.random.default_rng(2000 + seed))
    col = numeric_column("x", train.tolist())
    between, equal = cells(window, col["ks_points"])
    expected = scipy_ks(window, np.quantile(train, LEVELS))
    assert ks_from_cells(np.asarray(col["ks_cdf"]), between, equal) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("q", [1, 4, 20, 250])
def test_profile_points_with_other_resolution(q):
    rng = np.random.default_rng(q)
    train, window = rng.poisson(6, 1500).astype(float), rng.normal(6, 3, 200).round(1)
    col = numeric_column("x", train.tolist(), ks_quantiles=q)
    between, equal = cells(window, col["ks_points"])
    expected = scipy_ks(window, np.quantile(train, np.linspace(0, 1, q + 1)))
    assert ks_from_cells(np.asarray(col["ks_cdf"]), between, equal) == pytest.approx(expected, abs=1e-12)


def test_cells_hand_made():
    # points 1, 2, 3 (F = 1/3, 2/3, 1); window {0.5, 2, 2, 5}:
    # at 0.5: F_w = 1/4, F_p = 0; at 1: 1/4 vs 1/3; at 2: 3/4 vs 2/3; at 3: 3/4 vs 1; at 5: 1 vs 1.
    # D = 1/4.
    between, equal = [1, 0, 0, 1], [0, 2, 0]
    assert ks_from_cells(np.array([1 / 3, 2 / 3, 1.0]), between, equal) == pytest.approx(0.25, abs=1e-15)


def test_empty_window_is_none():
    assert ks_from_cells(np.array([0.5, 1.0]), [0, 0, 0], [0, 0]) is None


def test_registered():
    assert "ks" in registered()
    test = get_stattest("ks")
    assert test.default_threshold == 0.1
    a, b = samples("shifted", np.random.default_rng(9))
    assert test.func(a, b) == pytest.approx(scipy_ks(a, b), abs=1e-12)
