"""Window finishing: the aggregate's counts -> metrics, checked against numpy/scipy on raw values.

The stats JSON is built here from raw values, in the shape WindowStatsFunction.getValue writes:
{"profile", "events", "segments": [{"segment", "events", "columns": [numeric or categorical]}]}.
"""

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from scipy.special import rel_entr
from scipy.stats import ks_2samp

from mlvigil.finalize import FEATURE_COLUMNS, column_metrics, window_rows
from mlvigil.profile import categorical_column, category_text, numeric_column

TOL = 1e-12
LEVELS = np.linspace(0.0, 1.0, 101)


def numeric_stats(col, raw):
    """What the Java aggregate counts for one numeric column (raw: floats or None)."""
    x = np.array([v for v in raw if v is not None], dtype=np.float64)
    points = np.asarray(col["ks_points"])
    hit = np.isin(x, points)
    mean = float(x.mean()) if x.size else 0.0
    return {
        "present": int(x.size),
        "missing": len(raw) - int(x.size),
        "outliers": int(np.sum(np.abs(x - col["mean"]) > 3 * col["std"])),
        "mean": mean,
        "m2": float(np.sum((x - mean) ** 2)),
        "bins": np.histogram(x, np.concatenate([[-np.inf], col["edges"], [np.inf]]))[0].tolist(),
        "ks_lt": np.bincount(np.searchsorted(points, x[~hit]), minlength=points.size + 1).tolist(),
        "ks_eq": np.bincount(np.searchsorted(points, x[hit]), minlength=points.size).tolist(),
    }


def categorical_stats(col, raw):
    index = {c: i for i, c in enumerate(col["categories"])}
    cats = [0] * (len(index) + 1)
    present = 0
    for v in raw:
        if v is not None:
            present += 1
            cats[index.get(category_text(v), len(index))] += 1
    return {"present": present, "missing": len(raw) - present, "cats": cats}


def stats_of(col, raw):
    return numeric_stats(col, raw) if col["type"] == "numeric" else categorical_stats(col, raw)


def psi_reference(expected, actual):
    e = np.where(np.asarray(expected) == 0, 1e-4, expected)
    a = np.where(np.asarray(actual) == 0, 1e-4, actual)
    return float(np.sum(rel_entr(a, e) + rel_entr(e, a)))


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(21)
    train = {
        "duration": rng.lognormal(2.2, 0.5, 4000),
        "items": rng.poisson(12, 4000).astype(float),
        "device": rng.choice(["ios", "android", "web"], 4000, p=[0.45, 0.4, 0.15]),
    }
    cols = [
        numeric_column("duration", train["duration"].tolist()),
        numeric_column("items", train["items"].tolist()),
        categorical_column("device", train["device"].tolist()),
    ]
    return train, cols


def window(rng, n):
    """Raw window values: drifted, with missing values, outliers and unseen categories."""
    duration = rng.lognormal(1.6, 0.7, n)
    duration[:5] = 1000.0  # far outliers
    items = rng.poisson(14, n).astype(float)
    device = rng.choice(["ios", "android", "web", "tv"], n, p=[0.35, 0.3, 0.2, 0.15]).tolist()
    for i in np.flatnonzero(rng.random(n) < 0.05):
        device[i] = 3.0 if i % 2 else True  # numbers and booleans are categories too (unseen here)
    raw = {"duration": duration.tolist(), "items": items.tolist(), "device": device}
    for name, share in (("duration", 0.1), ("items", 0.03), ("device", 0.2)):
        for i in np.flatnonzero(rng.random(n) < share):
            raw[name][i] = None
    return raw


def check_numeric(m, col, train, raw):
    present = np.array([v for v in raw if v is not None])
    n = len(raw)
    assert m["events"] == n
    assert m["present"] == present.size and m["missing"] == n - present.size
    assert m["missing_rate"] == pytest.approx((n - present.size) / n, abs=TOL)
    # Outliers: |x - reference mean| > 3 reference std, reference moments from the training data.
    z = np.abs(present - np.mean(train)) / np.std(train)
    assert m["outlier_rate"] == pytest.approx(float(np.mean(z > 3)), abs=TOL)
    assert m["mean"] == pytest.approx(float(np.mean(present)), abs=TOL)
    assert m["std"] == pytest.approx(float(np.std(present)), abs=TOL)
    edges = np.quantile(train, np.arange(1, 10) / 10)
    bins = np.concatenate([[-np.inf], np.unique(edges), [np.inf]])
    expected = np.histogram(train, bins)[0] / train.size
    actual = np.histogram(present, bins)[0] / present.size
    assert m["psi"] == pytest.approx(psi_reference(expected, actual), abs=TOL)
    np.testing.assert_allclose(m["bin_proportions"], actual, rtol=0, atol=TOL)
    assert m["ks"] == pytest.approx(float(ks_2samp(present, np.quantile(train, LEVELS)).statistic), abs=TOL)
    assert m["unseen_rate"] is None


def check_categorical(m, train, raw):
    present = [category_text(v) for v in raw if v is not None]
    n = len(raw)
    assert m["missing_rate"] == pytest.approx((n - len(present)) / n, abs=TOL)
    known = sorted(set(train.tolist()))
    assert set(known) == {"ios", "android", "web"}
    # expected/actual over ios, android, web + other, in any fixed order.
    expected = [float(np.mean(train == k)) for k in known] + [0.0]
    actual = [present.count(k) / len(present) for k in known]
    actual.append(sum(v not in known for v in present) / len(present))
    assert m["psi"] == pytest.approx(psi_reference(expected, actual), abs=TOL)
    assert m["unseen_rate"] == pytest.approx(sum(v not in known for v in present) / len(present), abs=TOL)
    assert m["ks"] is None and m["mean"] is None and m["std"] is None and m["outlier_rate"] is None
    assert m["outliers"] == 0


@pytest.mark.parametrize("seed", range(5))
def test_column_metrics(reference, seed):
    train, cols = reference
    raw = window(np.random.default_rng(seed), 700)
    ms = {c["name"]: column_metrics(c, stats_of(c, raw[c["name"]]), 700) for c in cols}
    check_numeric(ms["duration"], cols[0], train["duration"], raw["duration"])
    check_numeric(ms["items"], cols[1], train["items"], raw["items"])
    check_categorical(ms["device"], train["device"], raw["device"])
    assert ms["duration"]["outliers"] >= 5


def test_window_on_reference_itself_has_small_psi(reference):
    train, cols = reference
    raw = train["duration"][:1000].tolist()
    m = column_metrics(cols[0], stats_of(cols[0], raw), len(raw))
    assert 0 <= m["psi"] < 0.05 and 0 <= m["ks"] < 0.06


def test_column_without_values(reference):
    _, cols = reference
    for col in cols:
        m = column_metrics(col, stats_of(col, [None] * 4), 4)
        assert m["missing_rate"] == 1.0 and m["present"] == 0
        assert m["psi"] is None and m["ks"] is None and m["mean"] is None and m["std"] is None
        assert m["bin_proportions"] == []


def test_window_rows(reference):
    train, cols = reference
    rng = np.random.default_rng(99)
    n = 600
    raw = window(rng, n)
    region = rng.choice(["eu", "us"], n)
    segments = [("*", np.ones(n, bool)), ("region=eu", region == "eu"), ("region=us", region == "us")]
    seg_raw = {s: {k: [v for v, keep in zip(vals, mask, strict=True) if keep] for k, vals in raw.items()}
               for s, mask in segments}  # fmt: skip
    stats = {
        "profile": 1,
        "events": n,
        "segments": [
            {"segment": s, "events": int(mask.sum()), "columns": [stats_of(c, seg_raw[s][c["name"]]) for c in cols]}
            for s, mask in segments
        ],
    }
    other = {"features": [], "prediction": []}
    catalog = {"profiles": [other, {"model": "recsys", "version": "v1", "features": cols, "prediction": []}]}
    start, end = datetime(2024, 5, 1, 12, 0, tzinfo=UTC), datetime(2024, 5, 1, 12, 1, tzinfo=UTC)
    now = datetime(2024, 5, 1, 12, 1, 7, tzinfo=UTC)
    rows = window_rows(orjson.dumps(stats).decode(), catalog, "features", start, end, "recsys", "v1", now)
    assert len(rows) == 3 * len(cols)
    named = [dict(zip(FEATURE_COLUMNS, r, strict=True)) for r in rows]
    assert [(r["segment"], r["feature"]) for r in named] == [(s, c["name"]) for s, _ in segments for c in cols]
    for r in named:
        assert (r["window_start"], r["window_end"], r["model_id"], r["model_version"]) == (start, end, "recsys", "v1")
        assert r["computed_at"] == now
        seg = seg_raw[r["segment"]]
        assert r["events"] == len(seg["duration"])
        if r["feature"] == "device":
            assert r["feature_type"] == "categorical"
            check_categorical(r, train["device"], seg["device"])
        else:
            assert r["feature_type"] == "numeric"
            col = cols[0] if r["feature"] == "duration" else cols[1]
            check_numeric(r, col, train[r["feature"]], seg[r["feature"]])


def test_window_rows_prediction_stream():
    rng = np.random.default_rng(5)
    train = rng.beta(2, 5, 3000)
    score = numeric_column("score", train.tolist())
    label = categorical_column("predicted_label", (train >= 0.5).astype(int).tolist())
    raw_score = rng.beta(2, 4, 200).tolist()
    raw_label = [int(s >= 0.5) for s in raw_score]
    stats = {
        "profile": 0,
        "events": 200,
        "segments": [
            {
                "segment": "*",
                "events": 200,
                "columns": [numeric_stats(score, raw_score), categorical_stats(label, raw_label)],
            }
        ],
    }
    catalog = {"profiles": [{"features": [], "prediction": [score, label]}]}
    t = datetime(2024, 5, 1, tzinfo=UTC)
    rows = window_rows(orjson.dumps(stats).decode(), catalog, "predictions", t, t, "m", "v", t)
    named = [dict(zip(FEATURE_COLUMNS, r, strict=True)) for r in rows]
    assert [r["feature"] for r in named] == ["prediction:score", "prediction:predicted_label"]
    check_numeric(named[0], score, train, raw_score)
    assert named[1]["unseen_rate"] == pytest.approx(0.0, abs=TOL)
