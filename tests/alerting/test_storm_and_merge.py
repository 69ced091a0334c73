"""Alert storms collapse into one notification per group; drift + quality drop become one
notification that names the drifted feature as the likely cause."""

import pytest

from mlvigil.alerting import AlertEngine, Rule, default_rules

from .conftest import MIN, Driver, feature_row, profiled_quality_row

SEC = 1000
SEGMENTS = ["*"] + [f"region=r{i}" for i in range(9)]  # the all-traffic row + 9 segments
FEATURES = [f"f{i:02d}" for i in range(20)]


@pytest.mark.parametrize("correlation_window_ms", [0, 5 * MIN])
def test_storm_of_1000_hits_in_5_minutes(correlation_window_ms):
    rule = Rule("psi_any_segment", "data", "psi", "warning", threshold=0.2, segment="**", min_samples=100)
    eng = AlertEngine([rule], correlation_window_ms=correlation_window_ms)
    d = Driver(eng)
    windows = [m * MIN for m in range(1, 6)]  # windows ending 1:00 .. 5:00
    hits = 0
    for w in windows:
        rows = [feature_row(f, 0.5, segment=s) for s in SEGMENTS for f in FEATURES]
        hits += len(rows)
        d.window(w, rows)
    d.advance(10 * MIN)
    assert hits == 1000

    # Expectation from the documented semantics:
    # * an alert per (rule, target) - 10 segments x 20 features = 200 alerts, all firing from 1:00
    #   (for_windows 1), and still the same 200 alerts in windows 2..5 (no new fingerprints);
    # * groups by (model_id, model_version, segment): 10 groups, all created at 1:00;
    # * a new group is flushed once, group_wait after creation - but a group holding only drift
    #   (data-layer) alerts waits max(group_wait, correlation window) for a quality alert to join;
    # * after that first flush nothing changes, so the next ticks (every group_interval) send
    #   nothing, and the repeat_interval (4 h) is far away.
    routing = eng.routing
    groups = len(SEGMENTS)
    first_flush = 1 * MIN + max(routing.group_wait_ms, correlation_window_ms)
    assert len(eng.firing(d.state)) == len(SEGMENTS) * len(FEATURES)
    assert len(d.sent) == groups
    assert {n.due_ms for n in d.sent} == {first_flush}
    assert all(len(n.alerts) == len(FEATURES) for n in d.sent)
    assert sorted(n.group_labels["segment"] for n in d.sent) == sorted(SEGMENTS)
    within_5_minutes = [n for n in d.sent if n.due_ms <= 5 * MIN]
    assert len(within_5_minutes) == (groups if first_flush <= 5 * MIN else 0)
    # The drift-only text ranks the features and cuts the list: 20 features, 5 shown.
    assert d.sent[0].text.startswith("drift: f00 PSI 0.5") and d.sent[0].text.endswith("(+15 more)")

    # Everything recovers at 11:00: one resolved notice per group at the next tick of each group,
    # first_flush + k * group_interval >= 11:00.
    d.window(11 * MIN, [feature_row(f, 0.01, segment=s) for s in SEGMENTS for f in FEATURES])
    d.advance(30 * MIN)
    resolved = [n for n in d.sent if n.status == "resolved"]
    gi = routing.group_interval_ms
    k = -(-(11 * MIN - first_flush) // gi)
    assert len(resolved) == groups
    assert {n.due_ms for n in resolved} == {first_flush + k * gi}
    assert d.state["groups"] == {} and d.state["targets"] == {}


def test_drift_then_accuracy_drop_in_the_correlation_window_is_one_notification():
    eng = AlertEngine(default_rules(), correlation_window_ms=5 * MIN)
    d = Driver(eng)
    # 1:00-2:00 drift on browsing_duration (and a weaker one on age); from 3:00 accuracy drops 12 %.
    for m in range(1, 11):
        rows = [
            feature_row("browsing_duration", 0.35, mean=2.1, reference_mean=10.0, importance=0.9),
            feature_row("age", 0.25, mean=41.0, reference_mean=40.2, importance=0.3),
            feature_row("income", 0.01, mean=5.0, reference_mean=5.0),
        ]
        if m >= 3:
            rows.append(profiled_quality_row(accuracy=0.80))
        d.window(m * MIN, rows)
    d.advance(30 * MIN)
    (n,) = d.sent
    # The drift-only group was held (first flush due 6:00); the accuracy alert at 3:00 ends the hold:
    # flushed group_wait later, with everything in it.
    assert n.due_ms == 3 * MIN + 30 * SEC
    assert sorted(a["labels"]["alertname"] for a in n.alerts) == ["accuracy_drop_warning", "psi_drift", "psi_drift"]
    # Ranked by PSI x importance: 0.35 x 0.9 = 0.315 before 0.25 x 0.3 = 0.075.
    assert n.text == (
        "accuracy -12 % (0.91 -> 0.8); likely cause: browsing_duration PSI 0.35 (reference mean 10.0, now 2.1), "
        "age PSI 0.25 (reference mean 40.2, now 41.0)"
    )
    assert n.title == "[FIRING:3] warning recsys v2: accuracy -12 % (0.91 -> 0.8), drift on browsing_duration"
    acc = next(a for a in n.alerts if a["labels"]["alertname"] == "accuracy_drop_warning")
    assert acc["annotations"]["likely_cause"].startswith("browsing_duration PSI 0.35")


def test_quality_alert_first_then_drift_adds_the_cause_at_the_next_tick():
    d = Driver(AlertEngine(default_rules()))
    d.window(1 * MIN, [profiled_quality_row(accuracy=0.80)])
    d.window(2 * MIN, [profiled_quality_row(accuracy=0.80), feature_row("age", 0.4, mean=3.0)])
    d.advance(20 * MIN)
    first, second = d.sent
    assert first.due_ms == 90 * SEC and first.text == "accuracy -12 % (0.91 -> 0.8)"  # a quality drop is not held
    assert second.due_ms == 90 * SEC + 5 * MIN and second.text.endswith("likely cause: age PSI 0.4 (mean now 3.0)")


def test_drift_outside_the_correlation_window_is_its_own_notification():
    d = Driver(AlertEngine(default_rules(), correlation_window_ms=5 * MIN))
    for m in range(1, 16):
        rows = [feature_row("zeta", 0.3), feature_row("alpha", 0.6, importance=0.1)]
        if m >= 9:  # 8 minutes after the drift: too late to merge
            rows.append(profiled_quality_row(accuracy=0.80))
        d.window(m * MIN, rows)
    first, second = d.sent
    assert first.due_ms == 6 * MIN  # 1:00 + max(30 s, 5 min)
    # alone: the ranked feature list as the hint. zeta 0.3 x 1 before alpha 0.6 x 0.1.
    assert first.text == "drift: zeta PSI 0.3, alpha PSI 0.6"
    assert [a["labels"]["alertname"] for a in first.alerts] == ["psi_drift", "psi_drift"]
    assert second.due_ms == 11 * MIN  # next group tick after 9:00
    assert second.text == "accuracy -12 % (0.91 -> 0.8); likely cause: zeta PSI 0.3, alpha PSI 0.6"
