"""Sample-size aware drift thresholds: the math against scipy, and the false-alarm rate of the
rules on synthetic no-drift windows of 50 to 50,000 events (profile from real build_profile)."""

import math

import numpy as np
import pytest
from scipy import stats

from mlvigil.alerting import AlertEngine, Rule
from mlvigil.alerting.rules import fdr_decisions
from mlvigil.alerting.significance import benjamini_hochberg, chi2_homogeneity, chi2_sf, psi_statistic
from mlvigil.profile import numeric_column
from mlvigil.stattests.psi import psi_from_counts

from .conftest import MODEL, VERSION, feature_row


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 10, 49, 50, 99])
def test_chi2_sf_matches_scipy(df):
    for x in [0.0, 1e-6, 0.3, 1.0, df * 0.5, float(df), df + 3 * math.sqrt(2 * df), 4.0 * df + 30, 300.0, 1500.0]:
        assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


def test_chi2_homogeneity_matches_scipy_contingency():
    rng = np.random.default_rng(3)
    for _ in range(50):
        b = int(rng.integers(2, 12))
        obs = rng.integers(0, 60, b).astype(float)
        ref = rng.integers(1, 900, b).astype(float)
        obs[rng.integers(0, b)] += 1  # never an empty window
        stat, df = chi2_homogeneity(obs, ref)
        keep = obs + ref > 0
        want = stats.chi2_contingency(np.vstack([obs[keep], ref[keep]]), correction=False)
        assert stat == pytest.approx(want.statistic, rel=1e-10)
        assert df == want.dof
        assert chi2_sf(stat, df) == pytest.approx(want.pvalue, rel=1e-8, abs=1e-300)
    # A bin empty in both rows is no bin; nothing to compare is df 0.
    assert chi2_homogeneity(np.array([3.0, 0.0, 5.0]), np.array([10.0, 0.0, 10.0]))[1] == 1
    assert chi2_homogeneity(np.array([0.0, 0.0]), np.array([1.0, 1.0])) == (0.0, 0)


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(5)
    for m in [1, 2, 7, 40, 200]:
        for _ in range(20):
            p = np.concatenate([rng.uniform(size=m // 2 + 1), rng.uniform(0, 0.01, size=m // 2)])[:m]
            if m > 3:
                p[1] = p[2]  # ties
            for q in (0.01, 0.05, 0.2):
                want = stats.false_discovery_control(p, method="bh") <= q
                assert benjamini_hochberg(p, q).tolist() == want.tolist()
    assert benjamini_hochberg(np.array([]), 0.05).tolist() == []


def test_psi_statistic_is_chi_square_under_no_drift():
    # Mean of PSI / (1/n + 1/N) over no-drift windows is about B - 1 (chi-square's mean).
    rng = np.random.default_rng(9)
    e = np.full(10, 0.1)
    n, big_n = 2000, 10_000
    vals = [psi_statistic(psi_from_counts(rng.multinomial(big_n, e) / big_n, rng.multinomial(n, e)), n, big_n)
            for _ in range(3000)]  # fmt: skip
    assert np.mean(vals) == pytest.approx(9.0, rel=0.05)


def reference_columns(rng, windows: int, big_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window a fresh reference sample of big_n U(0, 1) values, profiled as numeric_column
    does (decile edges by numpy's quantile, expected = share of values per bin, bin i =
    [edge_{i-1}, edge_i)): (edges with 0 and 1 added, expected, count), vectorized."""
    ref = rng.uniform(size=(windows, big_n))
    inner = np.quantile(ref, np.arange(1, 10) / 10, axis=1).T
    expected = np.stack(
        [np.bincount(np.searchsorted(e, r, side="right"), minlength=10) for e, r in zip(inner, ref, strict=True)]
    )
    edges = np.hstack([np.zeros((windows, 1)), inner, np.ones((windows, 1))])
    return edges, expected / big_n, ref


def test_vectorized_reference_is_numeric_column():
    edges, expected, ref = reference_columns(np.random.default_rng(1), 2, 3000)
    for e, x, r in zip(edges, expected, ref, strict=True):
        col = numeric_column("x", r.tolist())
        assert col["edges"] == e[1:-1].tolist() and col["count"] == r.size
        np.testing.assert_allclose(col["expected"], x, rtol=0, atol=1e-15)


def no_drift_rows(rng, n: int, windows: int, big_n: int = 10_000, features: int = 1) -> list[list[dict]]:
    """`windows` windows of `features` feature rows each, no drift: each row its own reference
    (reference_columns) and a window of n values of the same U(0, 1), binned on the reference's
    edges: the true bin probabilities are the gaps between the edges, so the window's counts are
    one multinomial draw. Rows carry what the job's rows carry for the tests (psi, present,
    bin_proportions, and AlertInput's reference_expected, reference_count)."""
    edges, expected, _ = reference_columns(rng, windows * features, big_n)
    out = []
    for w in range(windows):
        rows = []
        for f in range(features):
            k = w * features + f
            counts = rng.multinomial(n, np.diff(edges[k]))
            rows.append({
                "layer": "data", "model_id": MODEL, "model_version": VERSION, "segment": "*", "feature": f"f{f:02d}",
                "events": n, "present": n, "psi": psi_from_counts(expected[k], counts),
                "bin_proportions": (counts / n).tolist(), "reference_expected": expected[k].tolist(),
                "reference_count": big_n,
            })  # fmt: skip
        out.append(rows)
    return out


def binomial_band(p: float, k: int, z: float = 4.0) -> float:
    return z * math.sqrt(p * (1 - p) / k)


@pytest.mark.parametrize(("test", "n"), [("chi2", 50), ("chi2", 100), ("chi2", 1000), ("chi2", 50_000),
                                         ("psi", 500), ("psi", 5000), ("psi", 50_000)])  # fmt: skip
def test_false_alarm_rate_per_feature_window_is_alpha(n, test):
    """Significance alone (threshold 0): a no-drift feature-window alarms with probability alpha,
    whatever the window size from the test's minimum on, within 4 binomial standard deviations."""
    alpha, windows = 0.05, 1500
    rng = np.random.default_rng(n + len(test))
    rule = Rule("drift", "data", "psi", test=test, alpha=alpha, threshold=0.0, op=">=", min_samples=50)
    hits = [rule.observe(rows[0]).hit for rows in no_drift_rows(rng, n, windows)]
    assert np.mean(hits) == pytest.approx(alpha, abs=binomial_band(alpha, windows))


def test_fixed_threshold_false_alarms_depend_on_n_and_minimum_samples():
    # The fixed PSI > 0.1 fires on noise in small windows (noise floor 9 x (1/n + 1/N)), never in
    # large ones; a test rule refuses windows under its minimum (100 by default).
    rng = np.random.default_rng(2)
    fixed = Rule("fixed", "data", "psi", threshold=0.1)
    small = [fixed.observe(r[0]).hit for r in no_drift_rows(rng, 50, 400)]
    large = [fixed.observe(r[0]).hit for r in no_drift_rows(rng, 5000, 100)]
    assert np.mean(small) > 0.2 and not any(large)
    tested = Rule("t", "data", "psi", test="chi2")
    assert (tested.min_samples, Rule("p", "data", "psi", test="psi").min_samples) == (100, 500)
    assert tested.observe(no_drift_rows(rng, 99, 1)[0][0]).reason == "too few samples"


def test_benjamini_hochberg_error_rates():
    """Independent p-values: with every null true the chance of any discovery is q; with 20 of
    100 false the expected share of false discoveries among them is q m0 / m (the FDR)."""
    rng = np.random.default_rng(4)
    families, m, q = 20_000, 100, 0.05
    p = rng.uniform(size=(families, m))
    any_null = np.mean([benjamini_hochberg(row, q).any() for row in p])
    assert any_null == pytest.approx(q, abs=binomial_band(q, families))
    p[:, :20] = rng.uniform(0, 1e-4, size=(families, 20))
    fdp = []
    for row in p:
        r = benjamini_hochberg(row, q)
        fdp.append(r[20:].sum() / max(r.sum(), 1))
    assert np.mean(fdp) == pytest.approx(q * 80 / 100, abs=4 * np.std(fdp) / math.sqrt(families))


def test_benjamini_hochberg_across_features_and_segments_of_a_window():
    """20 features x 5 segments, no drift, through the rules: unadjusted tests at 0.05 alarm in
    nearly every window; with BH at q = 0.05 in about q of them (measured over 400 windows: 0.06)."""
    windows, q = 150, 0.05
    rng = np.random.default_rng(11)
    plain = Rule("plain", "data", "psi", test="chi2", alpha=q, threshold=0.0, op=">=", segment="**")
    bh = Rule("bh", "data", "psi", test="chi2", alpha=q, fdr=True, threshold=0.0, op=">=", segment="**")
    eng = AlertEngine([plain, bh])
    any_plain = any_bh = rejected = 0
    for rows in no_drift_rows(rng, 500, windows, big_n=2000, features=100):
        for i, r in enumerate(rows):
            r["feature"], r["segment"] = f"f{i % 20:02d}", "*" if i < 20 else f"seg=s{i // 20}"
        decisions = fdr_decisions(eng.rules, rows)
        assert {k[1] for k in decisions if k[0] == "bh"} == set(range(100)), "one family: every row"
        hits_bh = [bh.observe(r, None, decisions[("bh", i)]).hit for i, r in enumerate(rows)]
        any_plain += any(plain.observe(r).hit for r in rows)
        any_bh += any(hits_bh)
        rejected += sum(hits_bh)
    assert any_plain / windows > 0.95  # 1 - 0.95^100 = 0.994
    assert any_bh / windows <= q + binomial_band(q, windows)
    assert rejected / (windows * 100) <= 3 * q / 100  # per feature-window about q / m


def test_families_are_per_model_version():
    rows = [feature_row("a", 0.3), {**feature_row("a", 0.3), "model_version": "v3"}]
    rule = Rule("bh", "data", "psi", test="chi2", fdr=True)
    assert set(fdr_decisions([rule], rows)) == {("bh", 0), ("bh", 1)}
    assert rows[0]["model_id"] == MODEL and rows[0]["model_version"] == VERSION


def test_rule_validation_of_the_options():
    with pytest.raises(ValueError, match="test must be one of"):
        Rule("r", "data", "psi", test="ks")
    with pytest.raises(ValueError, match="fdr needs a test"):
        Rule("r", "data", "psi", fdr=True)
    with pytest.raises(ValueError, match="no baseline/change"):
        Rule("r", "data", "psi", test="chi2", baseline="trailing:3", change="rise")
    with pytest.raises(ValueError, match="fallback"):
        Rule("r", "model", "accuracy", baseline="trailing:3", change="drop", fallback="trailing:2")
    with pytest.raises(ValueError, match="alpha"):
        Rule("r", "data", "psi", test="chi2", alpha=1.5)
    # Without counts (no profile bins) a test rule cannot evaluate, and says why.
    row = {k: v for k, v in feature_row("a", 0.3).items() if k != "reference_count"}
    assert Rule("r", "data", "psi", test="chi2").observe(row).reason == "no counts"
