"""The backtest's ground truth and scores on hand-made windows (the store-backed end-to-end run is
tests/alerting/test_backtest.py)."""

import pytest

from mlvigil.alerting.rules import load_rules
from mlvigil.backtest import Alarm, Drop, Truth, quality_drops, scaled, score, sweep_parameter

MIN = 60_000


def _batches(values: list[float | None], labelled: list[int] | None = None, **extra) -> dict:
    items = []
    for i, v in enumerate(values):
        row = {"model_id": "m", "model_version": "v1", "segment": "*", "labelled": (labelled or [100] * 99)[i],
               "accuracy": v, **extra}  # fmt: skip
        items.append(((i + 1) * MIN, [row, {"model_id": "m", "feature": "age", "psi": 0.1}]))
    return {"m": items}


def test_drops_need_m_consecutive_windows_and_skip_missing_or_thin_windows():
    #        0    1    2    3    4     5    6    7    8    9   10   11
    acc = [0.9, 0.9, 0.8, 0.8, None, 0.8, 0.9, 0.8, 0.8, 0.9, 0.8, 0.8]
    labelled = [100] * 7 + [100, 3, 100, 100, 100]
    truth = Truth(drop=0.05, windows=3, reference="0.9", min_samples=10)
    drops = quality_drops(_batches(acc, labelled), truth)
    # 2, 3, 5 (4 has no value) -> a drop from w(2) confirmed at w(5), over at w(6);
    # 7 then 8 is thin (skipped), 9 is good -> one bad window only; 10, 11: two, and the range ends
    assert [(d.onset_ms, d.confirmed_ms, d.end_ms) for d in drops] == [(3 * MIN, 6 * MIN, 7 * MIN)]
    assert (
        quality_drops(_batches(acc, labelled), Truth(windows=2, reference="0.9", min_samples=10))[-1].end_ms == 12 * MIN
    )


def test_reference_from_the_first_windows_or_from_the_row():
    acc = [0.92, 0.88, 0.85, 0.85, 0.85, 0.9]
    # initial:2 -> reference 0.90, limit 0.855: windows 2-4 are bad, the first two are not judged
    (d,) = quality_drops(_batches(acc), Truth(reference="initial:2"))
    assert (d.onset_ms, d.end_ms, d.reference) == (3 * MIN, 6 * MIN, pytest.approx(0.90))
    # row: accuracy_reference 0.95 -> limit 0.9025: windows 1-4 are bad
    (d,) = quality_drops(_batches(acc, accuracy_reference=0.95), Truth(reference="row"))
    assert (d.onset_ms, d.end_ms) == (2 * MIN, 6 * MIN)
    assert quality_drops(_batches(acc), Truth(reference="row")) == []  # no reference in the rows
    for bad in ("initial:0", "median", "x"):
        with pytest.raises(ValueError):
            Truth(reference=bad)


def test_scores_match_by_target_and_announcement_time():
    d = Drop("m", "v1", "*", onset_ms=100 * MIN, confirmed_ms=102 * MIN, end_ms=110 * MIN, reference=0.9)
    other = Drop("m", "v2", "*", onset_ms=100 * MIN, confirmed_ms=102 * MIN, end_ms=110 * MIN, reference=0.9)

    def alarm(t: int, version: str = "v1") -> Alarm:
        return Alarm("r", "m", version, "*", f"fp{t}", t * MIN, t * MIN)

    horizon = 10 * MIN
    alarms = [alarm(85), alarm(90), alarm(95), alarm(111), alarm(105, "v3")]
    s = score(alarms, [d, other], horizon)
    # 85: before onset - horizon; 90, 95 match d (and v2's drop is not theirs); 111: after d's end
    assert (s["alerts"], s["true_alerts"], s["detected"], s["missed"]) == (5, 2, 1, 1)
    assert s["precision"] == pytest.approx(2 / 5) and s["recall"] == 0.5
    assert s["median_delay_ms"] == -10 * MIN
    assert s["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    empty = score([], [d], horizon)
    assert (empty["precision"], empty["recall"], empty["f1"], empty["median_delay_ms"]) == (None, 0.0, 0.0, None)


def test_sweep_scales_thresholds_or_the_detectors_sensitivity():
    rules = load_rules(
        [
            {"name": "psi", "layer": "data", "metric": "psi", "threshold": 0.2, "feature_thresholds": {"age": 0.1}},
            {"name": "ew", "layer": "model", "metric": "accuracy", "detector": "ewma"},
            {"name": "cs", "layer": "model", "metric": "accuracy", "detector": "cusum", "detector_params": {"h": 4}},
            {"name": "zero", "layer": "service", "metric": "error_rate", "threshold": 0},
        ]
    )
    psi, ew, cs, zero = rules
    assert sweep_parameter(psi) == ("threshold", 0.2)
    assert (scaled(psi, 2).threshold, scaled(psi, 2).feature_thresholds) == (0.4, {"age": 0.2})
    assert sweep_parameter(ew) == ("detector_params.k", 2.814)
    assert scaled(ew, 0.5).detector_params == {"k": 1.407}
    assert sweep_parameter(cs) == ("detector_params.h", 4.0) and scaled(cs, 2).detector_params == {"h": 8.0}
    assert sweep_parameter(zero) is None
