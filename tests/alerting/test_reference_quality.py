"""Reference quality in the profile (`mlvigil profile --label-column`), against scikit-learn and
a per-bin ECE on the raw arrays; the schema; AlertInput's <metric>_reference; the defaults'
trailing fallback when a profile has none."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from mlvigil import cli, synth
from mlvigil.alert_operators import AlertInput
from mlvigil.alerting import AlertEngine, default_rules, load_rules
from mlvigil.catalog import compile_catalog
from mlvigil.config import parse_config
from mlvigil.profile import build_profile, save_profile
from mlvigil.writer import COLUMNS

from .conftest import MIN, Driver, quality_row

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "reference_profile.v1.json").read_text())
TOL = 1e-12


def ece_per_bin(score: np.ndarray, hit: np.ndarray) -> float:
    bins = np.clip(np.floor(score * 10), 0, 9).astype(int)
    return sum((bins == b).mean() * abs(score[bins == b].mean() - hit[bins == b].mean()) for b in set(bins.tolist()))


def labelled_training(n: int = 4000, seed: int = 3) -> dict[str, list]:
    cols = synth.training_columns("recsys", n, seed=seed)
    cols["y"] = synth.training_labels(cols, seed=seed)
    cols["y"][::97] = [None] * len(cols["y"][::97])  # some rows have no label yet
    return cols


def test_binary_reference_quality_matches_sklearn():
    cols = labelled_training()
    q = build_profile(cols, "recsys", "v1", label_column="y", positive_label=1)["reference_quality"]
    keep = np.array([y is not None for y in cols["y"]])
    y = np.array([v for v in cols["y"] if v is not None])
    pred = np.array(cols["predicted_label"])[keep]
    score = np.array(cols["score"])[keep]
    m = q["metrics"]
    assert (q["task"], q["positive_label"], q["labelled"]) == ("binary", "1", int(keep.sum()))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=TOL)
    assert m["precision"] == pytest.approx(precision_score(y, pred), abs=TOL)
    assert m["recall"] == pytest.approx(recall_score(y, pred), abs=TOL)
    assert m["f1"] == pytest.approx(f1_score(y, pred), abs=TOL)
    assert m["ece"] == pytest.approx(ece_per_bin(score, y == 1), abs=TOL)
    assert m["mean_observed"] == pytest.approx(y.mean(), abs=TOL)  # the positive rate
    assert m["mean_prediction"] == pytest.approx(score.mean(), abs=TOL)
    assert m["score_std"] == pytest.approx(np.std(score), abs=TOL)
    assert "y" not in {c["name"] for c in build_profile(cols, "recsys", "v1", label_column="y")["features"]}


def test_multiclass_and_score_threshold():
    rng = np.random.default_rng(1)
    y = rng.choice(["a", "b", "c"], 500).tolist()
    pred = [v if rng.random() < 0.7 else "b" for v in y]
    cols = {"x": rng.normal(size=500).tolist(), "predicted_label": pred, "y": y}
    m = build_profile(cols, "m", "v1", label_column="y")["reference_quality"]["metrics"]
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=TOL)
    assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro", zero_division=0), abs=TOL)
    # Binary without predicted_label: score >= threshold is positive.
    score = rng.random(500)
    yb = (rng.random(500) < score).astype(int)
    cols = {"x": rng.normal(size=500).tolist(), "score": score.tolist(), "yb": yb.tolist()}
    q = build_profile(cols, "m", "v1", label_column="yb", positive_label=1, threshold=0.3)["reference_quality"]
    assert q["metrics"]["accuracy"] == pytest.approx(accuracy_score(yb, score >= 0.3), abs=TOL)
    assert q["threshold"] == 0.3


def test_cli_profile_with_labels_validates_against_the_schema(tmp_path, capsys):
    cols = labelled_training(1000)
    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        w.writerows(zip(*cols.values(), strict=True))
    args = ["profile", "--data", str(tmp_path / "train.csv"), "--model", "recsys", "--version", "v1",
            "--out", str(tmp_path / "p.json"), "--label-column", "y", "--positive-label", "1"]  # fmt: skip
    assert cli.main(args) == 0
    profile = json.loads((tmp_path / "p.json").read_text())
    assert list(Draft202012Validator(SCHEMA).iter_errors(profile)) == []
    want = build_profile(cols, "recsys", "v1", label_column="y", positive_label=1)["reference_quality"]
    assert profile["reference_quality"]["metrics"] == pytest.approx(want["metrics"], abs=1e-12)
    assert "reference quality (binary" in capsys.readouterr().out
    bad = {**profile, "reference_quality": {**profile["reference_quality"], "metrics": {"auc": 0.9}}}
    assert not Draft202012Validator(SCHEMA).is_valid(bad)


def alert_input(tmp_path, profile: dict, positive_label=1) -> AlertInput:
    save_profile(profile, tmp_path / "p.json")
    raw = {"models": {"recsys": {"profiles": {"v1": str(tmp_path / "p.json")}, "positive_label": positive_label}}}
    a = AlertInput(compile_catalog(parse_config(raw)), COLUMNS)
    a.open(None)
    return a


def test_alert_input_adds_the_reference_only_for_the_same_definitions(tmp_path):
    cols = labelled_training(1000)
    profile = build_profile(cols, "recsys", "v1", label_column="y", positive_label=1)
    row = {**quality_row(accuracy=0.5), "model_id": "recsys", "model_version": "v1"}
    got = alert_input(tmp_path, profile).enrich("quality_metrics", dict(row))
    for k in ("accuracy", "precision", "recall", "f1", "ece", "mean_observed", "mean_prediction"):
        assert got[f"{k}_reference"] == profile["reference_quality"]["metrics"][k]
    assert "score_std_reference" not in got
    # Another positive class in the config: the reference does not apply.
    other = alert_input(tmp_path, profile, positive_label=0).enrich("quality_metrics", dict(row))
    assert not [k for k in other if k.endswith("_reference")]


def test_without_reference_quality_the_model_rules_fall_back_to_trailing_and_say_so():
    d = Driver(AlertEngine(default_rules()))
    for m, acc in enumerate([0.90, 0.92, 0.88, 0.91, 0.89], start=1):
        assert d.window(m * MIN, [quality_row(accuracy=acc)]) == []  # building the trailing baseline
    d.window(6 * MIN, [quality_row(accuracy=0.60)])  # 0.60 vs mean 0.90: -33 %, critical
    (n,) = d.advance(6 * MIN + 30_000)
    (a,) = [a for a in n.alerts if a["labels"]["alertname"] == "accuracy_drop_critical"]
    assert a["baseline"] == pytest.approx(0.90) and a["annotations"]["baseline"] == "trailing:5 baseline 0.9"


def test_an_alerting_section_without_rules_gets_the_defaults():
    names = [r.name for r in default_rules()]
    assert [r.name for r in load_rules({"receivers": [{"name": "chat", "type": "log"}]})] == names
    assert load_rules({"receivers": [], "use_default_rules": False}) == []
    assert [r.name for r in load_rules({"rules": [{"name": "x", "layer": "data", "metric": "psi"}]})] == ["x"]


def test_a_quality_window_judged_after_a_later_one_still_alerts_but_resolves_nothing():
    """Labels come late: window 6 has too few labels when window 7 is judged; its update with
    enough labels raises the alert (startsAt its own window end); a late good window does not
    resolve an alert a later window raised; a replay of a judged window changes nothing."""

    def conv(conversion_rate: float, labelled: int) -> dict:  # as AlertInput tags quality rows
        return {**quality_row(labelled=labelled, conversion_rate=conversion_rate), "layer": ["model", "business"]}

    d = Driver(AlertEngine(default_rules()))
    for m in range(1, 6):
        d.window(m * MIN, [conv(0.30, labelled=400)])
    d.window(6 * MIN, [conv(0.15, labelled=50)])  # too few labels yet
    d.window(7 * MIN, [conv(0.29, labelled=400)])  # judged: no drop
    assert d.engine.firing(d.state) == []
    d.window(6 * MIN, [conv(0.15, labelled=400)])  # window 6, now with its labels
    (a,) = d.engine.firing(d.state)
    assert (a["rule"], a["starts"]) == ("conversion_drop", 6 * MIN)
    d.window(8 * MIN, [conv(0.10, labelled=400)])
    d.window(5 * MIN, [conv(0.30, labelled=400)])  # a replay of a judged window
    assert [x["rule"] for x in d.engine.firing(d.state)] == ["conversion_drop"]
