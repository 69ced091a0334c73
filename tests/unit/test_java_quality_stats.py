"""QualityStatsFunction called directly (py4j): confusion, per-class and calibration counts against
scikit-learn, regression sums against numpy, the Python mirror that builds a profile's reference
quality (mlvigil.profile.label_stats) on the same rows, its JSON against schemas/quality_stats.v1.json,
and merge of partial accumulators equal to one accumulator over all their input.

Rows are built as sql/flink/027_quality.sql builds them: each prediction once (labelled = false), and
each labelled prediction with its label's fields, both from mlv_parse's rows of real JSON events.
"""

import json
import math
import random
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from py4j.java_gateway import get_field
from py4j.protocol import Py4JJavaError
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, mean_absolute_error, mean_squared_error, precision_recall_fscore_support

from mlvigil.categories import category_text
from mlvigil.profile import _cal_bin, label_stats
from mlvigil.quality import macro_metrics, segment_metrics
from tests.java_gateway import MULTI_CLASSES, label_event, now_ms, prediction_event, row_dict

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "quality_stats.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
OUTCOME_KEYS = ("clicked_n", "clicked", "converted_n", "converted", "revenue_n", "revenue")


def quality_events(model: str, n: int, seed: int, regions: list[str]) -> list[tuple[dict, dict | None]]:
    """(prediction event, its label event or None) of one model."""
    rng = random.Random(seed)
    version = {"shop": "v1", "multi": "v1", "reg": "v2"}[model]
    out = []
    for i in range(n):
        pred = prediction_event(model, version, request_id=f"q{i}", segments={"region": rng.choice(regions)})
        label = label_event(model, request_id=f"q{i}")
        if model == "shop":
            pred["score"] = rng.random()
            pred["predicted_label"] = rng.choice([0, 1, "1", True, 1.0, None, None])
            label["label"] = rng.choice([0, 1, 1.0, "1", "0", "yes"])
        elif model == "multi":
            pred["score"] = rng.uniform(0.0, 1.0)
            pred["predicted_label"] = rng.choice(MULTI_CLASSES + [None])
            label["label"] = rng.choice(MULTI_CLASSES + ["e"])
        else:
            pred["score"] = rng.gauss(50, 10)
            pred.pop("predicted_label")
            label["label"] = rng.gauss(50, 12)
        if rng.random() < 0.1:
            pred.pop("score")
        label["outcomes"] = {k: v for k, v in [("clicked", rng.random() < 0.3), ("converted", rng.random() < 0.1),
                             ("revenue", round(rng.uniform(0, 20), 2))] if rng.random() < 0.7}  # fmt: skip
        out.append(({k: v for k, v in pred.items() if v is not None}, label if rng.random() < 0.75 else None))
    return out


ROW_ARGS = ("packed", "score", "predicted_label", "label", "label_value", "clicked", "converted", "revenue")


def quality_rows(contract, events: list[tuple[dict, dict | None]]) -> list[tuple]:
    """The accumulate arguments (labelled, packed, score, predicted_label, label, label_value, clicked,
    converted, revenue) of each prediction and each labelled prediction, from mlv_parse's rows."""
    now = now_ms()
    rows = []
    for pred, label in events:
        p = row_dict(contract.java.parse(orjson.dumps(pred), "predictions", now))
        assert p["ok"], (pred, p)
        packed = bytes(p["packed"])
        rows.append((False, packed, p["score"], p["predicted_label"], None, None, None, None, None))
        if label is not None:
            lab = row_dict(contract.java.parse(orjson.dumps(label), "labels", now))
            assert lab["ok"], (label, lab)
            rows.append((True, packed, p["score"], p["predicted_label"], lab["label"], lab["label_value"],
                         lab["clicked"], lab["converted"], lab["revenue"]))  # fmt: skip
    return rows


def run(fn, rows: list[tuple]):
    acc = fn.createAccumulator()
    for r in rows:
        fn.accumulate(acc, *r)
    return acc


def overall(stats: dict) -> dict:
    segs = [s for s in stats["segments"] if s["segment"] == "*"]
    assert len(segs) == 1
    return segs[0]


@pytest.fixture(scope="module")
def data(contract):
    regions = ["eu", "us", "apac"]
    events = {m: quality_events(m, 250, seed, regions) for m, seed in [("shop", 1), ("multi", 2), ("reg", 3)]}
    return {m: (evs, quality_rows(contract, evs)) for m, evs in events.items()}


@pytest.fixture(scope="module")
def results(contract, data):
    fn = contract.java.opened("QualityStatsFunction")
    out = {}
    for model, (_, rows) in data.items():
        stats = json.loads(fn.getValue(run(fn, rows)))
        VALIDATOR.validate(stats)
        out[model] = stats
    return out


def _labelled(events):
    return [(p, lab) for p, lab in events if lab is not None]


def test_binary_confusion_and_calibration_against_sklearn(data, results):
    events = data["shop"][0]
    stats = results["shop"]
    assert stats["task"] == "binary"
    seg = overall(stats)
    assert seg["predictions"] == len(events) and seg["labelled"] == len(_labelled(events))
    y, y_hat = [], []
    cal_y, cal_s = [], []
    for pred, lab in _labelled(events):
        truth = category_text(lab["label"]) == "1"
        if "predicted_label" in pred:
            guess = category_text(pred["predicted_label"]) == "1"
        else:
            guess = pred["score"] >= 0.4 if "score" in pred else None
        if guess is not None:
            y.append(truth)
            y_hat.append(guess)
        if "score" in pred:
            cal_y.append(truth)
            cal_s.append(pred["score"])
    tn, fp, fn, tp = confusion_matrix(y, y_hat, labels=[False, True]).ravel().tolist()
    assert (seg["tp"], seg["fp"], seg["fn"], seg["tn"]) == (tp, fp, fn, tn)
    assert seg["scored"] == len(y) and seg["correct"] == tp + tn
    check_calibration(seg, cal_y, cal_s)


def check_calibration(seg: dict, observed: list[bool], scores: list[float]) -> None:
    """Per score bin: the observed rate and mean score are scikit-learn's uniform calibration curve."""
    n = np.asarray(seg["cal_n"])
    assert n.sum() == len(scores)
    prob_true, prob_pred = calibration_curve(observed, scores, n_bins=10, strategy="uniform")
    full = n > 0
    np.testing.assert_allclose((np.asarray(seg["cal_pos"])[full] / n[full]), prob_true, rtol=1e-12)
    np.testing.assert_allclose((np.asarray(seg["cal_sum"])[full] / n[full]), prob_pred, rtol=1e-12)


def test_multiclass_counts_against_sklearn(data, results):
    events = data["multi"][0]
    stats = results["multi"]
    assert stats["task"] == "multiclass"
    seg = overall(stats)
    rows = [(lab["label"], p["predicted_label"]) for p, lab in _labelled(events) if "predicted_label" in p]
    y, y_hat = [r[0] for r in rows], [r[1] for r in rows]
    classes = sorted(set(y) | set(y_hat))
    cm = confusion_matrix(y, y_hat, labels=classes)
    want = {c: [int(cm[i].sum()), int(cm[:, i].sum()), int(cm[i, i])] for i, c in enumerate(classes)}
    assert seg["classes"] == want
    assert seg["scored"] == len(rows) and seg["correct"] == int(np.trace(cm))
    p, r, f, _ = precision_recall_fscore_support(y, y_hat, labels=classes, average="macro", zero_division=0)
    assert macro_metrics(seg["classes"]) == pytest.approx({"precision": p, "recall": r, "f1": f}, abs=1e-12)
    cal = [(lab["label"] == p["predicted_label"], p["score"]) for p, lab in _labelled(events)
           if "predicted_label" in p and "score" in p]  # fmt: skip
    check_calibration(seg, [c[0] for c in cal], [c[1] for c in cal])


def test_regression_sums_against_numpy_and_sklearn(data, results):
    events = data["reg"][0]
    stats = results["reg"]
    assert stats["task"] == "regression"
    seg = overall(stats)
    pairs = np.array([(p["score"], lab["label"]) for p, lab in _labelled(events) if "score" in p])
    err = pairs[:, 0] - pairs[:, 1]
    assert seg["reg_n"] == len(pairs)
    assert seg["abs_err"] == pytest.approx(np.abs(err).sum(), rel=1e-12)
    assert seg["sq_err"] == pytest.approx(np.square(err).sum(), rel=1e-12)
    assert (seg["sum_pred"], seg["sum_label"]) == pytest.approx((pairs[:, 0].sum(), pairs[:, 1].sum()), rel=1e-12)
    m = segment_metrics(seg, stats["task"])
    assert m["mae"] == pytest.approx(mean_absolute_error(pairs[:, 1], pairs[:, 0]), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(pairs[:, 1], pairs[:, 0])), rel=1e-12)


@pytest.mark.parametrize("model", ["shop", "multi", "reg"])
def test_outcomes_and_segments(contract, data, results, model):
    events, _ = data[model]
    stats = results[model]
    seg = overall(stats)
    labels = [lab for _, lab in _labelled(events)]
    for key in ("clicked", "converted"):
        reported = [lab["outcomes"][key] for lab in labels if key in lab["outcomes"]]
        assert (seg[f"{key}_n"], seg[key]) == (len(reported), sum(reported))
    revenue = [lab["outcomes"]["revenue"] for lab in labels if "revenue" in lab["outcomes"]]
    assert (seg["revenue_n"], seg["revenue"]) == (len(revenue), pytest.approx(sum(revenue), rel=1e-12))
    # every prediction lands in exactly one value of each segment dimension
    for dim in contract.catalog["models"][model]["segments"]:
        parts = [s for s in stats["segments"] if s["segment"].startswith(dim + "=")]
        for key in ("predictions", "labelled", "scored", "reg_n", "clicked_n"):
            assert sum(s[key] for s in parts) == seg[key], (dim, key)
    assert stats["rows"] == len(data[model][1])


@pytest.mark.parametrize("model", ["shop", "multi", "reg"])
def test_java_is_the_python_mirror_of_a_profile_reference_quality(contract, data, results, model):
    """mlvigil.profile.label_stats (the statistics of a profile's reference_quality) on the same rows."""
    events, _ = data[model]
    m = contract.catalog["models"][model]
    task = "regression" if m["task"] == "regression" else "classification"
    labels = [None if lab is None else lab["label"] for _, lab in events]
    predicted = [p.get("predicted_label") for p, _ in events]
    scores = [p.get("score") for p, _ in events]
    want = label_stats(
        labels, predicted, scores, task=task, positive_label=m["positive_label"], threshold=m["threshold"]
    )
    got = {k: v for k, v in overall(results[model]).items() if k != "segment" and k not in OUTCOME_KEYS}
    want = {k: v for k, v in want.items() if k not in OUTCOME_KEYS}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, (float, list)) else value), key


def test_cal_bin_at_the_edges(contract):
    """calBin is min(floor(10 score), 9), below 0 in bin 0, in Java and in profile._cal_bin (the same
    float arithmetic: 0.3 * 10 is 3.0000000000000004, bin 3)."""
    cal_bin = contract.java.udf.QualityStatsFunction.calBin
    scores = [-1e100, -0.5, -0.0, 0.0, 1.0, 1.5, 1e100]
    for k in range(11):
        e = k / 10
        scores += [e, math.nextafter(e, -math.inf), math.nextafter(e, math.inf)]
    for s in scores:
        want = int(np.clip(np.floor(np.float64(s) * 10), 0, 9))
        assert cal_bin(s) == _cal_bin(s) == want, s


@pytest.mark.parametrize("seed", [1, 2])
def test_merge_of_partial_accumulators_is_one_accumulator_over_all_input(contract, data, seed):
    rng = random.Random(seed)
    fn = contract.java.opened("QualityStatsFunction")
    for _, rows in data.values():
        single = json.loads(fn.getValue(run(fn, rows)))
        parts: list[list] = [[] for _ in range(rng.randint(2, 5))]
        for r in rows:
            parts[rng.randrange(len(parts))].append(r)
        target = fn.createAccumulator() if seed == 2 else run(fn, parts.pop(0))
        fn.merge(target, contract.java.list_of([run(fn, p) for p in parts]))
        merged = json.loads(fn.getValue(target))
        VALIDATOR.validate(merged)
        assert merged.keys() == single.keys() and merged["rows"] == single["rows"]
        a = {s["segment"]: s for s in merged["segments"]}
        b = {s["segment"]: s for s in single["segments"]}
        assert a.keys() == b.keys()
        for key, seg in a.items():
            for field, value in seg.items():
                other = b[key][field]
                assert value == (
                    pytest.approx(other, rel=1e-9, abs=1e-9) if isinstance(other, (float, list)) else other
                )


# --- QualityWindows (the job's quality aggregation): its codec and emission rule --------------------------------------


def approx_equal_stats(a: dict, b: dict) -> None:
    """Same segments (in any order: a merge lists them as first seen), counts equal, sums equal up to
    the order of additions."""
    assert {k: v for k, v in a.items() if k != "segments"} == {k: v for k, v in b.items() if k != "segments"}
    segs_a = {s["segment"]: s for s in a["segments"]}
    segs_b = {s["segment"]: s for s in b["segments"]}
    assert segs_a.keys() == segs_b.keys() and len(segs_a) == len(a["segments"])
    for key, x in segs_a.items():
        for field, value in x.items():
            other = segs_b[key][field]
            assert value == (pytest.approx(other, rel=1e-9, abs=1e-9) if isinstance(other, (float, list)) else other)


@pytest.mark.parametrize("seed", [3, 4])
def test_accumulator_encoding_round_trips_and_keeps_accumulating_alike(contract, data, seed):
    rng = random.Random(seed)
    fn = contract.java.opened("QualityStatsFunction")
    codec = contract.java.inner("QualityWindows", "AccCodec")
    empty = fn.createAccumulator()
    assert fn.getValue(codec.decode(codec.encode(empty))) == fn.getValue(empty)
    for _, rows in data.values():
        # Few regions here, many in the rest: the decoded accumulator must keep the per-dimension
        # distinct counts, or the cardinality cap ("region=(other)") would differ afterwards.
        head = [r for r in rng.sample(rows, rng.randint(1, len(rows) // 2))]
        acc = run(fn, head)
        encoded = codec.encode(acc)
        decoded = codec.decode(encoded)
        assert fn.getValue(decoded) == fn.getValue(acc)
        assert codec.encode(decoded) == encoded
        for r in rng.sample(rows, 60):
            fn.accumulate(acc, *r)
            fn.accumulate(decoded, *r)
        assert fn.getValue(decoded) == fn.getValue(acc)
    with pytest.raises(Py4JJavaError, match="trailing bytes"):
        codec.decode(codec.encode(empty) + b"\x00")


@pytest.mark.parametrize("seed", [5, 6])
def test_window_state_of_encoded_partials_is_one_accumulator_over_all_input(contract, data, seed):
    """What the pre-aggregation and the window operator do: partial accumulators over any split of the
    rows, sent encoded, merged into the window's state (itself stored encoded between partials)."""
    rng = random.Random(seed)
    fn = contract.java.opened("QualityStatsFunction")
    codec = contract.java.inner("QualityWindows", "AccCodec")
    window_state = contract.java.inner("QualityWindows", "WindowState")
    for _, rows in data.values():
        single = json.loads(fn.getValue(run(fn, rows)))
        parts: list[list] = [[] for _ in range(rng.randint(2, 6))]
        for r in rows:
            parts[rng.randrange(len(parts))].append(r)
        stored = None
        for part in parts:
            w = window_state.decode(stored)
            w.merge(fn, len(part), codec.decode(codec.encode(run(fn, part))))
            stored = w.encode()
        w = window_state.decode(stored)
        assert get_field(w, "updates") == len(rows)
        merged = json.loads(fn.getValue(get_field(w, "acc")))
        VALIDATOR.validate(merged)
        approx_equal_stats(merged, single)


def test_window_emission_rule(contract, data):
    """A window asks for a timer on its first change after an emission only; it is emitted when it
    changed since the last emission; `updates` only grows; all of it survives the state encoding."""
    fn = contract.java.opened("QualityStatsFunction")
    codec = contract.java.inner("QualityWindows", "AccCodec")
    window_state = contract.java.inner("QualityWindows", "WindowState")
    rows = data["shop"][1]
    w = window_state.decode(None)
    assert not get_field(w, "dirty") and get_field(w, "updates") == 0
    assert not w.takeEmission()  # nothing to emit in a new window
    asked, emitted, updates = [], [], []
    for i, (start, end) in enumerate([(0, 10), (10, 30), (30, 31), (31, 80), (80, 200)]):
        asked.append(w.merge(fn, end - start, codec.decode(codec.encode(run(fn, rows[start:end])))))
        w = window_state.decode(w.encode())  # the state between two elements or across a restore
        if i in (1, 3):
            emitted.append(w.takeEmission())
            emitted.append(w.takeEmission())
            w = window_state.decode(w.encode())
        updates.append(get_field(w, "updates"))
    assert asked == [True, False, True, False, True]
    assert emitted == [True, False, True, False]
    assert updates == [10, 30, 31, 80, 200] and get_field(w, "dirty")
    approx_equal_stats(json.loads(fn.getValue(get_field(w, "acc"))), json.loads(fn.getValue(run(fn, rows[:200]))))
