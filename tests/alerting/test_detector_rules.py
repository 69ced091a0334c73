"""Detector rules in the alert engine: the engine (state through JSON between every call) gives
the same verdict, window by window and target by target, as the bare detector fed the same values."""

import json

import numpy as np
import pytest

from mlvigil.alerting import AlertEngine, load_rules
from mlvigil.alerting.detectors import make_detector
from mlvigil.alerting.engine import fmt_num
from tests.alerting.conftest import MIN, Driver, quality_row

RULES = """
rules:
  - name: accuracy_cusum
    layer: model
    metric: accuracy
    match: {segment: "**"}
    detector: cusum
    detector_params: {direction: down, warmup: 20}
    min_samples: 100
    severity: warning
  - name: accuracy_ph
    layer: model
    metric: accuracy
    match: {segment: "**"}
    detector: page_hinkley
    detector_params: {direction: down, delta: 0.005, threshold: 0.05, min_instances: 20}
    min_samples: 100
  - name: ctr_seasonal
    layer: business
    metric: ctr
    condition:
      detector: seasonal
      detector_params: {period: day, slot_minutes: 60, warmup_periods: 2}
"""


def _firing(engine: AlertEngine, state: dict, rule: str) -> dict[str, bool]:
    return {a["labels"]["segment"]: True for a in engine.firing(state) if a["rule"] == rule}


def test_engine_verdicts_equal_the_bare_detector_per_target():
    rules = load_rules(RULES)
    engine = AlertEngine(rules)
    drv = Driver(engine)
    rng = np.random.default_rng(17)
    n = 140
    acc = {
        "*": np.r_[rng.normal(0.90, 0.01, 70), rng.normal(0.87, 0.01, 30), rng.normal(0.90, 0.01, 40)],
        "region=eu": rng.normal(0.85, 0.02, n),
    }
    bare = {seg: make_detector("cusum", {"direction": "down", "warmup": 20}) for seg in acc}
    ph_params = {"direction": "down", "delta": 0.005, "threshold": 0.05, "min_instances": 20}
    bare_ph = {seg: make_detector("page_hinkley", ph_params) for seg in acc}
    ph_fired = 0
    t0 = 1_700_000_000_000 // MIN * MIN
    low_samples = {25, 90}  # windows of "*" with too few labels: neither side may feed them
    messages = []
    for i in range(n):
        w = t0 + (i + 1) * MIN
        rows = []
        for seg, series in acc.items():
            labelled = 5 if (seg == "*" and i in low_samples) else 500
            rows.append(quality_row(segment=seg, labelled=labelled, accuracy=float(series[i])))
            if labelled >= 100:
                bare[seg].update(float(series[i]))
                bare_ph[seg].update(float(series[i]))
        messages += drv.window(w, rows)
        if i in (30, 80):
            drv.window(w, [quality_row(accuracy=0.1)])  # a replayed window: ignored, not fed again
        firing = _firing(engine, drv.state, "accuracy_cusum")
        for seg, det in bare.items():
            assert firing.get(seg, False) == det.drift_detected, (i, seg)
        firing_ph = _firing(engine, drv.state, "accuracy_ph")
        for seg, det in bare_ph.items():  # Page-Hinkley: fires for the window of a change only
            assert firing_ph.get(seg, False) == det.drift_detected, (i, seg)
            ph_fired += det.drift_detected
    assert not bare["*"].drift_detected  # recovered by the end
    assert ph_fired >= 1
    # it did fire during the drop, and the notification says how far below the baseline
    fired = [
        a for m in messages for a in m.alerts
        if a["labels"]["alertname"] == "accuracy_cusum" and a["labels"]["segment"] == "*" and a["status"] == "firing"
    ]  # fmt: skip
    assert fired and t0 + 70 * MIN < fired[0]["starts_ms"] <= t0 + 80 * MIN
    summary = fired[0]["annotations"]["summary"]
    assert summary.startswith("accuracy -") and f"({fmt_num(bare['*'].baseline)} -> " in summary
    keys = [k for k in drv.state["targets"] if "accuracy_cusum" in k]
    assert len(keys) == 2 and all(drv.state["targets"][k]["det"]["detector"] == "cusum" for k in keys)


def test_seasonal_rule_in_the_engine_uses_the_window_start():
    rules = load_rules(RULES)
    engine = AlertEngine(rules)
    drv = Driver(engine)
    rng = np.random.default_rng(9)
    day0 = 1_700_006_400_000  # a UTC midnight
    hours = 24 * 4
    hod = np.arange(hours) % 24
    ctr = 0.05 * (1 + 0.4 * np.sin(2 * np.pi * hod / 24)) + rng.normal(0, 0.001, hours)
    # day 4 (after two days of warm-up and one watched): a drop the daily swing (0.02) hides from a threshold
    ctr[24 * 3 :] -= 0.004
    bare = make_detector("seasonal", {"period": "day", "slot_minutes": 60, "warmup_periods": 2})
    verdicts = []
    for i in range(hours):
        start = day0 + i * 3_600_000
        row = quality_row(ctr=float(ctr[i]), window_start=start, layer=["model", "business"])
        drv.window(start + 3_600_000, [row])
        bare.update(float(ctr[i]), start)
        firing = bool(_firing(engine, drv.state, "ctr_seasonal"))
        assert firing == bare.drift_detected, i
        verdicts.append(firing)
    assert not any(verdicts[:72]) and all(verdicts[75:])


def test_edited_parameters_relearn_and_bad_rules_are_refused():
    rules = load_rules(RULES)
    drv = Driver(AlertEngine(rules))
    t0 = 1_700_000_000_000
    for i in range(25):
        drv.window(t0 + i * MIN, [quality_row(accuracy=0.9 + 0.001 * (i % 3))])
    key = next(k for k in drv.state["targets"] if "accuracy_cusum" in k)
    assert drv.state["targets"][key]["det"]["state"]["verdict"][1]  # ready: warm-up done
    edited = load_rules(RULES.replace("warmup: 20", "warmup: 40"))
    drv.engine = AlertEngine(edited)
    drv.twin = json.loads(json.dumps(drv.state))  # both sides restart from the stored state
    drv.window(t0 + 30 * MIN, [quality_row(accuracy=0.9)])
    det = drv.state["targets"][key]["det"]
    assert det["params"]["warmup"] == 40 and det["state"]["warm"][0] == 1 and not det["state"]["verdict"][1]
    del drv.state["targets"][key]["det"]["state"]["warm"]  # unreadable (another code version): learn again
    drv.twin = json.loads(json.dumps(drv.state))
    drv.window(t0 + 31 * MIN, [quality_row(accuracy=0.9)])
    assert drv.state["targets"][key]["det"]["state"]["warm"][0] == 1

    bad = {
        "unknown detector": {"detector": "prophet"},
        "unknown parameters": {"detector": "ewma", "detector_params": {"lam": 0.1}},
        "no baseline/change": {"detector": "ewma", "baseline": "reference", "change": "drop"},
        "without a detector": {"detector_params": {"k": 3}},
        "do not apply": {"detector": "cusum", "importance_weight": 0.5},
    }
    for message, extra in bad.items():
        with pytest.raises(ValueError, match=message):
            load_rules([{"name": "r", "layer": "model", "metric": "accuracy", **extra}])


def test_a_baseline_of_zero_gives_a_summary_not_a_crash():
    """Found in a job run: a learned mean of 0 (errors, PSI of an unchanged feature) made the
    percentage in the summary divide by zero, which killed the job."""
    from tests.alerting.conftest import service_row

    rules = load_rules(
        [{"name": "errors_up", "layer": "service", "metric": "error_rate", "detector": "cusum",
          "detector_params": {"direction": "up", "warmup": 5, "min_std": 0.001}}]
    )  # fmt: skip
    drv = Driver(AlertEngine(rules))
    t0 = 1_700_000_000_000
    sent = []
    for i in range(12):
        sent += drv.window(t0 + (i + 1) * MIN, [service_row(error_rate=0.0 if i < 8 else 0.05)])
    sent += drv.advance(t0 + 20 * MIN)
    summaries = [a["annotations"]["summary"] for n in sent for a in n.alerts if a["status"] == "firing"]
    assert summaries and summaries[0] == "error_rate 0.0 -> 0.05"
