"""mlvigil.quality against scikit-learn and plain numpy, on raw labels and predictions.

The counts handed to mlvigil.quality are built here from the raw arrays with numpy (as the Java
aggregate builds them from events); every metric is compared with scikit-learn or with a direct
per-bin computation on the raw arrays.
"""

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    root_mean_squared_error,
)

from mlvigil.catalog import compile_catalog
from mlvigil.config import category_text, parse_config
from mlvigil.quality import (
    QUALITY_COLUMNS,
    binary_metrics,
    calibration,
    macro_metrics,
    quality_rows,
    regression_metrics,
    segment_metrics,
)

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-12


def close(a, b) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return a is None and (b is None or math.isnan(b))
    return abs(a - b) <= TOL * max(1.0, abs(b))


def cal_bin(s: np.ndarray) -> np.ndarray:
    """The documented bin: min(floor(10 s), 9), negative scores in bin 0."""
    return np.clip(np.floor(s * 10), 0, 9).astype(int)


def ece_reference(score: np.ndarray, hit: np.ndarray) -> float:
    """sum over non-empty bins of n_b / N * |mean score_b - mean hit_b|, bin by bin."""
    bins, n, total = cal_bin(score), len(score), 0.0
    for b in range(10):
        m = bins == b
        if m.any():
            total += m.sum() / n * abs(score[m].mean() - hit[m].mean())
    return total


def cal_counts(score: np.ndarray, hit: np.ndarray) -> tuple[list, list, list]:
    b = cal_bin(score)
    return (
        np.bincount(b, minlength=10).tolist(),
        [float(score[b == k].sum()) for k in range(10)],
        np.bincount(b, weights=hit.astype(float), minlength=10).astype(int).tolist(),
    )


@pytest.mark.parametrize("seed", range(8))
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    y = rng.random(n) < rng.uniform(0.05, 0.6)
    y_hat = rng.random(n) < rng.uniform(0.0, 0.6)
    tp, fp = int(np.sum(y & y_hat)), int(np.sum(~y & y_hat))
    fn, tn = int(np.sum(y & ~y_hat)), int(np.sum(~y & ~y_hat))
    m = binary_metrics(tp, fp, fn, tn)
    assert close(m["accuracy"], accuracy_score(y, y_hat))
    assert close(m["precision"], precision_score(y, y_hat, zero_division=np.nan))
    assert close(m["recall"], recall_score(y, y_hat, zero_division=np.nan))
    assert close(m["f1"], f1_score(y, y_hat, zero_division=np.nan))


def test_binary_undefined_ratios_are_none():
    m = binary_metrics(0, 0, 3, 5)  # nothing predicted positive
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 5 / 8
    m = binary_metrics(0, 0, 0, 4)  # no positive anywhere
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None and m["accuracy"] == 1.0
    assert binary_metrics(0, 0, 0, 0)["accuracy"] is None


@pytest.mark.parametrize("seed", range(8))
def test_macro_metrics_match_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 300))
    classes = ["a", "b", "c", "d", "e"]
    y = rng.choice(classes[:4], n)  # "e" only ever predicted, maybe "d" never predicted
    y_hat = np.where(rng.random(n) < 0.6, y, rng.choice(classes[:3] + ["e"], n))
    counts = {}
    for c in sorted(set(y) | set(y_hat)):
        counts[c] = [int(np.sum(y == c)), int(np.sum(y_hat == c)), int(np.sum((y == c) & (y_hat == c)))]
    m = macro_metrics(counts)
    p, r, f, _ = precision_recall_fscore_support(y, y_hat, average="macro", zero_division=0)
    assert close(m["precision"], p) and close(m["recall"], r) and close(m["f1"], f)
    assert macro_metrics({}) == {"precision": None, "recall": None, "f1": None}


@pytest.mark.parametrize("seed", range(6))
def test_ece_matches_per_bin_reference(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(1, 500))
    score = rng.beta(0.7, 1.5, n)
    score[: n // 10] = np.round(score[: n // 10], 1)  # values on bin edges, 1.0 included
    y = rng.random(n) < np.clip(score + rng.normal(0, 0.2, n), 0, 1)
    c = calibration(*cal_counts(score, y))
    assert close(c["ece"], ece_reference(score, y))
    assert c["calibrated"] == n
    assert close(c["mean_prediction"], score.mean()) and close(c["mean_observed"], y.mean())
    assert calibration([0] * 10, [0.0] * 10, [0] * 10)["ece"] is None


def test_ece_bins_and_edges():
    # 1.0 belongs to the last bin, scores below 0 to the first (a score is clamped, not dropped).
    assert cal_bin(np.array([0.0, 0.1, 0.95, 1.0, -0.2, 1.3])).tolist() == [0, 1, 9, 9, 0, 9]
    # Perfect calibration within every bin gives 0.
    score = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    assert close(calibration(*cal_counts(score, y))["ece"], 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_regression_metrics_match_sklearn(seed):
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(1, 300))
    y = rng.normal(50, 20, n)
    pred = y + rng.normal(0, 5, n)
    e = pred - y
    m = regression_metrics(n, float(np.abs(e).sum()), float((e * e).sum()), float(pred.sum()), float(y.sum()))
    assert abs(m["mae"] - mean_absolute_error(y, pred)) <= 1e-9
    assert abs(m["rmse"] - root_mean_squared_error(y, pred)) <= 1e-9
    assert abs(m["mean_prediction"] - pred.mean()) <= 1e-9 and abs(m["mean_observed"] - y.mean()) <= 1e-9
    assert regression_metrics(0, 0.0, 0.0, 0.0, 0.0)["mae"] is None


def _segment(n_pred, y, y_hat, score, clicked=None, converted=None, revenue=None) -> dict:
    """The statistics the Java aggregate emits for a binary model (see QualityStatsFunction)."""
    has_hat = y_hat is not None
    cal_n, cal_sum, cal_pos = cal_counts(score, y)
    out = {
        "segment": "*", "predictions": n_pred, "labelled": len(y), "scored": len(y) if has_hat else 0,
        "correct": int(np.sum(y == y_hat)), "tp": int(np.sum(y & y_hat)), "fp": int(np.sum(~y & y_hat)),
        "fn": int(np.sum(y & ~y_hat)), "tn": int(np.sum(~y & ~y_hat)), "classes": {},
        "cal_n": cal_n, "cal_sum": cal_sum, "cal_pos": cal_pos,
        "reg_n": 0, "abs_err": 0.0, "sq_err": 0.0, "sum_pred": 0.0, "sum_label": 0.0,
        "clicked_n": 0, "clicked": 0, "converted_n": 0, "converted": 0, "revenue_n": 0, "revenue": 0.0,
    }  # fmt: skip
    if clicked is not None:
        out.update(clicked_n=len(clicked), clicked=int(np.sum(clicked)))
    if converted is not None:
        out.update(converted_n=len(converted), converted=int(np.sum(converted)))
    if revenue is not None:
        out.update(revenue_n=len(revenue), revenue=float(np.sum(revenue)))
    return out


def test_segment_metrics_binary_with_business_outcomes():
    rng = np.random.default_rng(7)
    n_pred, n = 500, 320
    score = rng.random(n)
    y = rng.random(n) < score
    y_hat = score >= 0.5
    clicked = y.copy()
    converted = clicked & (rng.random(n) < 0.3)
    revenue = np.where(converted, rng.uniform(5, 50, n), 0.0)
    m = segment_metrics(_segment(n_pred, y, y_hat, score, clicked, converted, revenue), "binary")
    assert m["predictions"] == n_pred and m["labelled"] == n and close(m["label_coverage"], n / n_pred)
    assert close(m["accuracy"], accuracy_score(y, y_hat)) and close(m["f1"], f1_score(y, y_hat))
    assert close(m["precision"], precision_score(y, y_hat)) and close(m["recall"], recall_score(y, y_hat))
    assert close(m["ece"], ece_reference(score, y))
    assert close(m["ctr"], clicked.mean()) and close(m["conversion_rate"], converted.mean())
    assert close(m["revenue_per_request"], revenue.mean()) and m["clicks"] == clicked.sum()
    assert m["mae"] is None and m["rmse"] is None


def test_segment_metrics_without_labels_or_outcomes():
    empty = _segment(40, np.zeros(0, bool), np.zeros(0, bool), np.zeros(0))
    m = segment_metrics(empty, "binary")
    assert m["labelled"] == 0 and m["label_coverage"] == 0.0
    assert all(m[k] is None for k in ("accuracy", "precision", "recall", "f1", "ece", "ctr", "revenue_per_request"))
    assert segment_metrics(dict(empty, predictions=0), "binary")["label_coverage"] is None


def test_quality_rows_follow_the_table_columns():
    seg = _segment(10, np.array([True, False]), np.array([True, True]), np.array([0.9, 0.6]))
    regression = dict(seg, segment="region=eu", reg_n=2, abs_err=3.0, sq_err=5.0, sum_pred=4.0, sum_label=1.0)
    stats = json.dumps({"profile": 0, "task": "regression", "rows": 12, "segments": [regression]})
    ws, we, now = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC), datetime.now(UTC)
    rows = quality_rows(stats, ws, we, "m", "v1", 12, now)
    assert len(rows) == 1 and len(rows[0]) == len(QUALITY_COLUMNS)
    row = dict(zip(QUALITY_COLUMNS, rows[0], strict=True))
    assert row["segment"] == "region=eu" and row["task"] == "regression" and row["updates"] == 12
    assert row["mae"] == 1.5 and close(row["rmse"], math.sqrt(2.5)) and row["scored"] == 2
    assert row["accuracy"] is None and row["ece"] is None
    # The writer inserts by these names: they must be the table's columns, in order.
    ddl = (ROOT / "sql" / "clickhouse" / "002_quality.sql").read_text()
    body = ddl[ddl.index("quality_metrics") : ddl.index("ENGINE")]
    assert re.findall(r"^\s{4}(\w+)\s", body, re.MULTILINE) == QUALITY_COLUMNS


def test_config_and_catalog_carry_the_task(tmp_path):
    from mlvigil import synth
    from mlvigil.profile import build_profile, save_profile

    save_profile(build_profile(synth.training_columns("fraud", 500), "fraud", "v1"), tmp_path / "p.json")
    raw = {
        "models": {
            "a": {"profiles": {"v1": "p.json"}, "positive_label": 1.0},
            "b": {"profiles": {"v1": "p.json"}, "positive_label": True, "threshold": 0.3},
            "c": {"profiles": {"v1": "p.json"}},
            "d": {"profiles": {"v1": "p.json"}, "task": "regression", "positive_label": 1},
        },
        "labels": {"lateness": "2h", "skew": "1s"},
    }
    cfg = parse_config(raw, base_dir=tmp_path)
    assert (cfg.label_lateness_ms, cfg.label_skew_ms, cfg.label_state_ttl_ms) == (7_200_000, 1000, 10_800_000)
    assert cfg.quality_enabled
    models = compile_catalog(cfg)["models"]
    assert models["a"]["positive_label"] == "1" and models["b"]["positive_label"] == "true"
    assert models["b"]["threshold"] == 0.3 and models["c"]["positive_label"] is None
    assert models["d"]["task"] == "regression" and models["d"]["positive_label"] is None
    assert parse_config(raw | {"labels": {}}, base_dir=tmp_path).label_lateness_ms == 86_400_000
    with pytest.raises(ValueError, match="task"):
        parse_config({"models": {"x": {"profiles": {"v1": "p.json"}, "task": "ranking"}}}, base_dir=tmp_path)
    assert [category_text(v) for v in (1, 1.0, 2.5, True, "x")] == ["1", "1", "2.5", "true", "x"]
