"""Reference profiles: bins, proportions, moments, categories, and reading training data."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from mlvigil.profile import (
    PROFILE_SCHEMA,
    build_profile,
    categorical_column,
    category_text,
    fingerprint,
    load_profile,
    numeric_column,
    read_training_data,
    save_profile,
)


def counts_right(edges, values):
    """Bin counts with bin i = [edges[i-1], edges[i]) (a value on an edge goes up)."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).normal(10, 3, 2000),
        np.random.default_rng(2).poisson(2, 1000).astype(float),  # ties: duplicate quantiles
        np.random.default_rng(3).lognormal(0, 2, 777),
        np.arange(10.0),
    ],
    ids=["normal", "poisson", "lognormal", "arange"],
)
def test_numeric_edges_and_expected(values):
    col = numeric_column("x", values.tolist())
    edges = np.array(col["edges"])
    quantiles = np.quantile(values, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert edges.tolist() == sorted(set(quantiles.tolist()))
    assert np.all(np.diff(edges) > 0)
    assert len(col["expected"]) == edges.size + 1
    np.testing.assert_allclose(col["expected"], counts_right(edges, values) / values.size, rtol=0, atol=1e-15)
    assert sum(col["expected"]) == pytest.approx(1.0, abs=1e-12)


def test_poisson_edges_are_deduplicated():
    values = np.random.default_rng(2).poisson(2, 1000).astype(float)
    col = numeric_column("x", values.tolist())
    assert len(col["edges"]) < 9
    assert len(col["edges"]) == len(set(col["edges"]))


def test_numeric_moments_population_std():
    values = [1.0, 2.0, 4.0, 8.0]
    col = numeric_column("x", values)
    mean = 15 / 4
    assert col["mean"] == pytest.approx(mean, abs=1e-15)
    var = sum((v - mean) ** 2 for v in values) / 4  # ddof = 0
    assert col["std"] == pytest.approx(math.sqrt(var), abs=1e-15)
    assert col["std"] != pytest.approx(float(np.std(values, ddof=1)), abs=1e-6)


def test_numeric_moments_match_numpy():
    values = np.random.default_rng(4).gamma(2.0, 3.0, 5000)
    col = numeric_column("x", values.tolist())
    assert col["mean"] == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert col["std"] == pytest.approx(float(np.std(values)), rel=1e-12)
    assert col["count"] == 5000 and col["missing_rate"] == 0.0


def test_numeric_bins_parameter():
    values = np.random.default_rng(5).uniform(0, 1, 400)
    col = numeric_column("x", values.tolist(), bins=4)
    assert col["edges"] == np.quantile(values, [0.25, 0.5, 0.75]).tolist()


def test_numeric_missing_values():
    raw = [1.0, None, 2.0, float("nan"), 3.0, None, 4.0, 5.0]
    col = numeric_column("x", raw)
    assert col["count"] == 5
    assert col["missing_rate"] == pytest.approx(3 / 8, abs=1e-15)
    assert col["mean"] == pytest.approx(3.0, abs=1e-15)


def test_numeric_custom_edges_honoured():
    values = [0.0, 1.0, 1.5, 2.0, 2.0, 3.0, 9.0]
    col = numeric_column("x", values, edges=[3.0, 1.0, 2.0, 2.0])
    assert col["edges"] == [1.0, 2.0, 3.0]
    # (-inf, 1): 0 | [1, 2): 1, 1.5 | [2, 3): 2, 2 | [3, inf): 3, 9
    assert col["expected"] == pytest.approx([1 / 7, 2 / 7, 2 / 7, 2 / 7], abs=1e-15)


def test_numeric_without_values_is_an_error():
    with pytest.raises(ValueError):
        numeric_column("x", [None, float("nan")])


def test_numeric_ks_points():
    values = np.random.default_rng(6).poisson(4, 900).astype(float)
    col = numeric_column("x", values.tolist(), ks_quantiles=50)
    points = np.quantile(values, np.linspace(0, 1, 51))
    assert col["ks_quantiles"] == 50
    assert col["ks_points"] == np.unique(points).tolist()
    # F_points at each distinct point: the share of the 51 quantiles <= it.
    assert col["ks_cdf"] == pytest.approx([float(np.mean(points <= u)) for u in col["ks_points"]], abs=1e-15)
    assert col["ks_cdf"][-1] == 1.0


def test_negative_zero_folded():
    col = numeric_column("x", [-0.0, -0.0, 0.0, 1.0], edges=[-0.0, 0.5])
    assert all(math.copysign(1.0, e) > 0 for e in col["edges"])
    assert all(math.copysign(1.0, p) > 0 for p in col["ks_points"] if p == 0)


def test_categorical_top_k_and_other():
    values = ["a"] * 5 + ["c"] * 3 + ["b"] * 3 + ["d"] * 1 + [None, None]
    col = categorical_column("c", values, max_categories=2)
    # b and c tie on 3: ties go by text, so b is kept.
    assert col["categories"] == ["a", "b"]
    assert col["expected"] == pytest.approx([5 / 12, 3 / 12, 4 / 12], abs=1e-15)
    assert col["count"] == 12
    assert col["missing_rate"] == pytest.approx(2 / 14, abs=1e-15)


def test_categorical_all_kept_has_empty_other():
    col = categorical_column("c", ["x", "y", "x"])
    assert col["categories"] == ["x", "y"]
    assert col["expected"] == pytest.approx([2 / 3, 1 / 3, 0.0], abs=1e-15)


def test_categorical_numbers_merge_by_text():
    col = categorical_column("c", [3, 3.0, "3", True, "true", 2.5])
    assert col["categories"] == ["3", "true", "2.5"]
    assert col["expected"] == pytest.approx([3 / 6, 2 / 6, 1 / 6, 0.0], abs=1e-15)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3"),
        (3, "3"),
        (-0.0, "0"),
        (np.int64(7), "7"),
        (np.float64(4.0), "4"),
        (True, "true"),
        (False, "false"),
        (np.bool_(True), "true"),
        (2.5, "2.5"),
        ("ios", "ios"),
        ("3.0", "3.0"),
        # other numbers: the shortest digits in Double.toString's layout (mlvigil.categories, any JDK):
        (0.001, "0.001"),
        (0.0001, "1.0E-4"),
        (-2.5e-7, "-2.5E-7"),
        (9999999.5, "9999999.5"),
        (12345678.5, "1.23456785E7"),
        (1e15, "1.0E15"),
        (10**16, "1.0E16"),
        (1.5e20, "1.5E20"),
        (1 / 3, "0.3333333333333333"),
    ],
)
def test_category_text(value, text):
    assert category_text(value) == text


def training(n=500, seed=8):
    rng = np.random.default_rng(seed)
    score = rng.beta(2, 5, n)
    return {
        "age": rng.integers(18, 70, n).tolist(),
        "duration": rng.lognormal(2, 0.5, n).tolist(),
        "device": rng.choice(["ios", "android", "web"], n).tolist(),
        "score": score.tolist(),
        "predicted_label": (score >= 0.5).astype(int).tolist(),
    }


def test_build_profile_puts_prediction_columns_apart():
    cols = training()
    p = build_profile(cols, "recsys", "v7")
    assert p["schema"] == PROFILE_SCHEMA and p["model_id"] == "recsys" and p["model_version"] == "v7"
    assert [c["name"] for c in p["features"]] == ["age", "duration", "device"]
    assert [(c["name"], c["type"]) for c in p["features"]] == [
        ("age", "numeric"),
        ("duration", "numeric"),
        ("device", "categorical"),
    ]
    pred = {c["name"]: c for c in p["prediction"]}
    assert set(pred) == {"score", "predicted_label"}
    assert pred["score"]["type"] == "numeric"
    assert pred["score"]["mean"] == pytest.approx(float(np.mean(cols["score"])), rel=1e-12)
    # Integral labels are still categorical.
    assert pred["predicted_label"]["type"] == "categorical"
    assert set(pred["predicted_label"]["categories"]) <= {"0", "1"}


def test_build_profile_options():
    cols = training()
    cols["proba"] = cols.pop("score")
    p = build_profile(
        cols,
        "m",
        "v1",
        categorical=["age"],
        exclude=["duration"],
        custom_edges={"proba": [0.25, 0.5, 0.75]},
        importance={"device": 0.7},
        score_column="proba",
    )
    feats = {c["name"]: c for c in p["features"]}
    assert set(feats) == {"age", "device"}
    assert feats["age"]["type"] == "categorical"
    assert feats["device"]["importance"] == 0.7 and "importance" not in feats["age"]
    score = next(c for c in p["prediction"] if c["name"] == "score")
    assert score["edges"] == [0.25, 0.5, 0.75]


def test_fingerprint_stable_and_sensitive(tmp_path):
    a = build_profile(training(), "recsys", "v1")
    b = build_profile(training(), "recsys", "v1")
    assert a["fingerprint"] == b["fingerprint"]
    assert len(a["fingerprint"]) == 16 and int(a["fingerprint"], 16) >= 0
    # Key order does not matter, the fingerprint field itself is not hashed.
    shuffled = dict(reversed(list(a.items())))
    shuffled["fingerprint"] = "0" * 16
    assert fingerprint(shuffled) == a["fingerprint"]
    # It survives a save / load round trip.
    save_profile(a, tmp_path / "p" / "recsys.json")
    loaded = load_profile(tmp_path / "p" / "recsys.json")
    assert loaded == a and fingerprint(loaded) == a["fingerprint"]
    # Any change of content or identity changes it.
    assert build_profile(training(seed=9), "recsys", "v1")["fingerprint"] != a["fingerprint"]
    assert build_profile(training(), "recsys", "v2")["fingerprint"] != a["fingerprint"]


def test_load_profile_checks_schema(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema": "something/v0", "features": []}))
    with pytest.raises(ValueError):
        load_profile(path)


def training_frame(n=300, seed=10):
    rng = np.random.default_rng(seed)
    duration = rng.lognormal(2, 0.5, n)
    duration[rng.choice(n, 20, replace=False)] = np.nan
    score = rng.beta(2, 5, n)
    device = rng.choice(["ios", "android", "web"], n).astype(object)
    device[rng.choice(n, 10, replace=False)] = None
    return pd.DataFrame(
        {
            "age": rng.integers(18, 70, n),
            "duration": duration,
            "price": rng.normal(0.5, 0.15, n),
            "last_login_at": rng.integers(1_600_000_000_000, 1_700_000_000_000, n),  # a date-like name
            "device": device,
            "score": score,
            "predicted_label": (score >= 0.5).astype(int),
        }
    )


def test_read_training_data_formats_agree(tmp_path):
    df = training_frame()
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    # json.dumps writes floats exactly (pandas' to_json would round them to 10 digits).
    records = df.astype(object).where(df.notna(), None).to_dict(orient="records")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    profiles = {}
    for name in ("t.csv", "t.parquet", "t.jsonl"):
        cols = read_training_data(tmp_path / name)
        assert list(cols) == list(df.columns)
        assert cols["duration"].count(None) == 20 and cols["device"].count(None) == 10
        profiles[name] = build_profile(cols, "recsys", "v1")
    direct = {k: [None if (isinstance(v, float) and math.isnan(v)) else v for v in df[k].tolist()] for k in df.columns}
    expected = build_profile(direct, "recsys", "v1")
    for name, p in profiles.items():
        assert p == expected, name
    dur = next(c for c in expected["features"] if c["name"] == "duration")
    assert dur["missing_rate"] == pytest.approx(20 / 300, abs=1e-15)


def test_read_training_data_unknown_format(tmp_path):
    path = tmp_path / "t.xlsx"
    path.write_text("")
    with pytest.raises(ValueError):
        read_training_data(path)
