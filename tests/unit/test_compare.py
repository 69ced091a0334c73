"""mlvigil.compare's statistics against statsmodels, scipy and scikit-learn on the same counts.

The per-window rows handed to the pooling functions are built by mlvigil.quality (the job's own
code) from raw labels and predictions generated here; the pooled metrics are checked against
scikit-learn on the concatenated raw arrays, the tests against statsmodels and scipy.
"""

import numpy as np
import pytest
from scipy.stats import chi2_contingency
from sklearn.metrics import accuracy_score, precision_score, recall_score
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from mlvigil.compare import (
    QUALITY_COLS,
    Estimate,
    confusion_counts,
    differences,
    p_text,
    printable,
    proportion_diff_confint,
    quality_estimates,
    service_estimates,
    two_proportion_ztest,
)
from mlvigil.quality import segment_metrics


def test_z_test_and_interval_equal_statsmodels_and_scipy():
    rng = np.random.default_rng(1)
    n1, n2 = rng.integers(20, 50_000, 200), rng.integers(20, 50_000, 200)
    x1, x2 = rng.binomial(n1, rng.uniform(0.01, 0.99, 200)), rng.binomial(n2, rng.uniform(0.01, 0.99, 200))
    z, p = two_proportion_ztest(x1, n1, x2, n2)
    diff, lo, hi = proportion_diff_confint(x1, n1, x2, n2, 0.95)
    for i in range(200):
        sz, sp = proportions_ztest([x2[i], x1[i]], [n2[i], n1[i]])  # statsmodels: p2 - p1, pooled variance
        assert z[i] == pytest.approx(sz, rel=1e-9) and p[i] == pytest.approx(sp, rel=1e-9, abs=1e-300)
        # the same p-value as a chi-square test of the 2x2 table without continuity correction
        table = [[x1[i], n1[i] - x1[i]], [x2[i], n2[i] - x2[i]]]
        assert p[i] == pytest.approx(chi2_contingency(table, correction=False).pvalue, rel=1e-6, abs=1e-300)
        slo, shi = confint_proportions_2indep(x2[i], n2[i], x1[i], n1[i], method="wald", compare="diff", alpha=0.05)
        assert (lo[i], hi[i]) == (pytest.approx(slo, rel=1e-9), pytest.approx(shi, rel=1e-9))
        assert diff[i] == pytest.approx(x2[i] / n2[i] - x1[i] / n1[i], rel=1e-12)
    _, lo99, hi99 = proportion_diff_confint(x1[:5], n1[:5], x2[:5], n2[:5], 0.99)
    s99 = [confint_proportions_2indep(b, m, a, k, method="wald", alpha=0.01)
           for a, k, b, m in zip(x1[:5], n1[:5], x2[:5], n2[:5], strict=True)]  # fmt: skip
    assert lo99.tolist() == pytest.approx([s[0] for s in s99], rel=1e-9)
    assert hi99.tolist() == pytest.approx([s[1] for s in s99], rel=1e-9)
    # no variation (both 0 % or both 100 %): no test rather than a made-up p-value
    z0, p0 = two_proportion_ztest([0, 10], [10, 10], [0, 20], [20, 20])
    assert np.isnan(z0).all() and np.isnan(p0).all()


def _window(rng, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw labels and predictions of one window; kinds force the degenerate confusion matrices."""
    y = (rng.random(n) < 0.4).astype(int)
    yh = np.where(rng.random(n) < 0.75, y, 1 - y)
    if kind == "perfect":
        yh = y.copy()
    elif kind == "no_predicted_positive":
        yh[:] = 0
    elif kind == "no_actual_positive":
        y[:] = 0
    elif kind == "no_hit":  # precision = recall = 0
        yh = 1 - y
    return y, yh


def _stats(y: np.ndarray, yh: np.ndarray, scored_only: int = 0) -> dict:
    """The aggregate's per-segment statistics of a binary window, counted from the raw arrays (as
    the Java aggregate does); scored_only rows have a predicted label but no score."""
    tp, fp = int(((y == 1) & (yh == 1)).sum()), int(((y == 0) & (yh == 1)).sum())
    fn, tn = int(((y == 1) & (yh == 0)).sum()), int(((y == 0) & (yh == 0)).sum())
    cal = np.arange(len(y)) >= scored_only
    score = np.where(yh == 1, 0.7, 0.3)
    bins = np.minimum(np.floor(score[cal] * 10).astype(int), 9)
    return {
        "segment": "*", "predictions": len(y) + 3, "labelled": len(y), "scored": len(y), "correct": tp + tn,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "cal_n": np.bincount(bins, minlength=10).tolist(),
        "cal_sum": np.bincount(bins, weights=score[cal], minlength=10).tolist(),
        "cal_pos": np.bincount(bins, weights=y[cal], minlength=10).tolist(),
        "clicked": int((y == 1).sum()), "clicked_n": len(y), "converted": int(tp), "converted_n": len(y),
        "revenue": 1.5 * tp, "revenue_n": len(y),
    }  # fmt: skip


def _row(m: dict) -> tuple:
    return tuple(m[c] for c in QUALITY_COLS)


def test_confusion_counts_are_recovered_exactly_from_the_stored_ratios():
    rng = np.random.default_rng(2)
    kinds = ["random"] * 300 + ["perfect", "no_predicted_positive", "no_actual_positive", "no_hit"] * 10
    windows = [_window(rng, int(rng.integers(1, 3000)), k) for k in kinds]
    truth = np.array([[((y == 1) & (yh == 1)).sum(), ((y == 0) & (yh == 1)).sum(), ((y == 1) & (yh == 0)).sum()]
                      for y, yh in windows])  # fmt: skip
    rows = [_row(segment_metrics(_stats(y, yh), "binary")) for y, yh in windows]
    cols = {c: np.array([np.nan if r[i] is None else r[i] for r in rows], float) for i, c in enumerate(QUALITY_COLS)
            if c != "task"}  # fmt: skip
    tp, fp, fn, ok = confusion_counts(cols["scored"], cols["accuracy"], cols["precision"], cols["recall"],
                                      cols["calibrated"], cols["mean_observed"])  # fmt: skip
    assert ok.all()
    assert np.column_stack([tp, fp, fn]).tolist() == truth.tolist()
    # degenerate windows whose positives are unknown (not every scored row had a score): flagged, not guessed
    degenerate = [_window(rng, 50, "perfect"), _window(rng, 50, "no_hit"), _window(rng, 50, "random")]
    rows = [_row(segment_metrics(_stats(y, yh, scored_only=5), "binary")) for y, yh in degenerate]
    cols = {c: np.array([np.nan if r[i] is None else r[i] for r in rows], float) for i, c in enumerate(QUALITY_COLS)
            if c != "task"}  # fmt: skip
    *_, ok = confusion_counts(cols["scored"], cols["accuracy"], cols["precision"], cols["recall"],
                              cols["calibrated"], cols["mean_observed"])  # fmt: skip
    assert ok.tolist() == [False, False, True]


def test_pooled_quality_equals_sklearn_on_the_raw_arrays():
    rng = np.random.default_rng(3)
    kinds = ["random"] * 40 + ["perfect", "no_predicted_positive", "no_actual_positive", "no_hit"]
    windows = [_window(rng, int(rng.integers(1, 200)), k) for k in kinds]
    rows = [_row(segment_metrics(_stats(y, yh), "binary")) for y, yh in windows]
    est, notes = quality_estimates(rows)
    y, yh = np.concatenate([w[0] for w in windows]), np.concatenate([w[1] for w in windows])
    assert notes == []
    assert est["accuracy"].value == pytest.approx(accuracy_score(y, yh), rel=1e-12)
    assert (est["accuracy"].n, est["accuracy"].count) == (len(y), int((y == yh).sum()))
    assert est["precision"].value == pytest.approx(precision_score(y, yh), rel=1e-12)
    assert (est["precision"].n, est["precision"].count) == (int(yh.sum()), int(((y == 1) & (yh == 1)).sum()))
    assert est["recall"].value == pytest.approx(recall_score(y, yh), rel=1e-12)
    assert est["recall"].n == int(y.sum())
    assert (est["ctr"].value, est["ctr"].n, est["ctr"].count) == (pytest.approx(y.mean(), rel=1e-12), len(y), y.sum())
    tp = int(((y == 1) & (yh == 1)).sum())
    assert est["conversion_rate"].value == pytest.approx(tp / len(y), rel=1e-12)
    assert est["revenue_per_request"].value == pytest.approx(1.5 * tp / len(y), rel=1e-12)
    assert est["revenue_per_request"].count is None  # a mean of unknown variance: never tested

    # a window whose counts are unknown: precision and recall fall back to weighted means, said so
    odd = _row(segment_metrics(_stats(*_window(rng, 30, "perfect"), scored_only=3), "binary"))
    est, notes = quality_estimates([*rows, odd])
    assert est["precision"].count is None and "not recoverable in 1 window" in est["precision"].note
    assert len(notes) == 1 and "weighted means" in notes[0]
    values = [r[QUALITY_COLS.index("precision")] for r in [*rows, odd]]
    weights = [r[QUALITY_COLS.index("scored")] for r in [*rows, odd]]
    expected = sum(v * w for v, w in zip(values, weights, strict=True) if v is not None) / sum(
        w for v, w in zip(values, weights, strict=True) if v is not None
    )
    assert est["precision"].value == pytest.approx(expected, rel=1e-12)
    assert est["accuracy"].count == int((y == yh).sum()) + 30  # accuracy stays exact


def test_service_estimates_and_differences():
    rows = [(100, 2, 50.0, 0.01), (300, 3, 70.0, 0.03), (0, 0, None, None)]
    est = service_estimates(rows)
    assert (est["error_rate"].value, est["error_rate"].n, est["error_rate"].count) == (5 / 400, 400, 5)
    assert est["latency_p95"].value == pytest.approx((100 * 50 + 300 * 70) / 400)
    assert est["latency_p95_max"].value == 70.0 and est["score_psi"].value == pytest.approx(0.02)
    base = {"accuracy": Estimate(0.70, 1000, 700), "revenue_per_request": Estimate(2.0, 1000, note="no sums")}
    other = {"accuracy": Estimate(0.75, 2000, 1500), "revenue_per_request": Estimate(2.5, 2000, note="no sums")}
    ds = {d.metric: d for d in differences({"a": base, "b": other}, ["a", "b"], 0.95)}
    z, p = proportions_ztest([1500, 700], [2000, 1000])
    acc = ds["accuracy"]
    assert (acc.difference, acc.z, acc.p_value) == (pytest.approx(0.05), pytest.approx(z), pytest.approx(p))
    assert acc.relative == pytest.approx(0.05 / 0.7) and acc.test == "two-proportion z-test"
    rev = ds["revenue_per_request"]
    assert rev.difference == pytest.approx(0.5) and rev.p_value is None and rev.ci_low is None
    assert rev.note == "no sums"
    assert ds["precision"].difference is None  # missing on both sides: no made-up zero
    few = {"a": {"accuracy": Estimate(0.01, 300, 3)}, "b": {"accuracy": Estimate(0.05, 300, 15)}}
    (d,) = [d for d in differences(few, ["a", "b"], 0.95) if d.metric == "accuracy"]
    assert d.p_value == pytest.approx(proportions_ztest([15, 3], [300, 300])[1]) and "rough" in d.note


def test_wording_helpers():
    assert p_text(0.0004) == "p < 0.001" and p_text(0.0213) == "p = 0.021" and p_text(0.5) == "p = 0.5"
    assert printable("v1\x1b[31m\x07\x9b\u202e") == "v1\\x1b[31m\\x07\\x9b\\u202e"
    assert printable("user_type=new é") == "user_type=new é"
