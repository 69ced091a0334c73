"""Health of the monitor: the per-window monitor rows (mlvigil/health.py) and the built-in rules
"no data" and "monitor degraded" on the real engine; the metrics config key."""

import random
from collections import Counter

import pytest

from mlvigil.alerting import AlertEngine, default_rules
from mlvigil.alerting.rules import NO_DATA_WINDOWS, Routing
from mlvigil.config import prometheus_port
from mlvigil.health import (
    MAX_AHEAD_MS,
    MAX_GAP_WINDOWS,
    TOTAL,
    _new_state,
    dead_letter_count,
    dead_letter_window,
    emit_due,
    window_event_count,
)

from .conftest import MIN, Driver

MODELS = ["fraud", "recsys", "silent"]


def _by_window(rows: list[dict]) -> dict[tuple[int, str], dict]:
    return {(r["window_end"], r["model_id"]): r for r in rows}


def test_rows_count_every_event_and_every_model_in_every_window():
    rng = random.Random(3)
    st = _new_state()
    # Independent bookkeeping of what the accounting is told: (window_end, stream, model) -> n.
    valid: Counter = Counter()
    for _ in range(200):
        end = rng.randrange(1, 5) * MIN
        stream, model = rng.choice(["features", "predictions"]), rng.choice(["fraud", "recsys"])
        n = rng.randrange(1, 50)
        valid[(end, stream, model)] += n
        window_event_count(st, stream, model, end, n)
    kinds = ["late"] * 7 + ["invalid"] * 11 + ["orphan_label"] * 3
    for i, kind in enumerate(kinds):
        stream = "labels" if kind == "orphan_label" else ("features" if i % 2 else "predictions")
        dead_letter_count(st, stream, kind, "fraud" if i % 3 else None, 4 * MIN)
    dead_letter_count(st, "features", "invalid", "recsys", 2 * MIN)
    rows = emit_due(st, MODELS, MIN, 4 * MIN + 30_000)  # watermark inside the 5th window
    got = _by_window(rows)
    assert sorted({w for w, _ in got}) == [MIN, 2 * MIN, 3 * MIN, 4 * MIN]
    assert len(rows) == 4 * (len(MODELS) + 1)
    for w in (MIN, 2 * MIN, 3 * MIN, 4 * MIN):
        for m in MODELS:
            r = got[(w, m)]
            assert r["layer"] == "monitor" and r["window_start"] == w - MIN
            assert r["feature_events"] == valid[(w, "features", m)]
            assert r["prediction_events"] == valid[(w, "predictions", m)]
            assert r["events"] == r["feature_events"] + r["prediction_events"]
        assert got[(w, "silent")]["events"] == 0
    # Every dead letter in its window.
    last = got[(4 * MIN, TOTAL)]
    total_valid = sum(n for (w, _, _), n in valid.items() if w == 4 * MIN)
    assert (last["late"], last["invalid"], last["label_dead_letters"]) == (7, 11, 3)
    assert last["input_events"] == total_valid + 18
    assert last["late_ratio"] == pytest.approx(7 / (total_valid + 18), rel=1e-12)
    assert last["invalid_ratio"] == pytest.approx(11 / (total_valid + 18), rel=1e-12)
    assert got[(4 * MIN, "fraud")]["dead_letters"] == sum(1 for i in range(len(kinds)) if i % 3)
    assert (got[(2 * MIN, TOTAL)]["invalid"], got[(2 * MIN, "recsys")]["dead_letters"]) == (1, 1)
    assert [got[(w, TOTAL)]["dead_letters"] for w in (MIN, 2 * MIN, 3 * MIN)] == [0, 1, 0]
    # Emitted windows are gone; the next emission starts after them, with zero rows for a gap.
    assert st["windows"] == {} and st["dead"] == {}
    window_event_count(st, "features", "fraud", 7 * MIN, 5)
    later = _by_window(emit_due(st, MODELS, MIN, 7 * MIN))
    assert sorted({w for w, _ in later}) == [5 * MIN, 6 * MIN, 7 * MIN]
    assert [later[(w, "fraud")]["events"] for w in (5 * MIN, 6 * MIN, 7 * MIN)] == [0, 0, 5]
    assert later[(5 * MIN, TOTAL)]["late_ratio"] is None  # no input: no ratio, nothing to judge
    assert emit_due(st, MODELS, MIN, 7 * MIN + 59_999) == []


def test_first_emission_starts_at_the_first_window_seen_and_big_jumps_are_capped():
    st = _new_state()
    window_event_count(st, "features", "fraud", 10 * MIN, 1)
    rows = emit_due(st, ["fraud"], MIN, 12 * MIN)
    assert sorted({r["window_end"] for r in rows}) == [10 * MIN, 11 * MIN, 12 * MIN]
    rows = emit_due(st, ["fraud"], MIN, (12 + MAX_GAP_WINDOWS + 500) * MIN)
    ends = sorted({r["window_end"] for r in rows})
    assert len(ends) == MAX_GAP_WINDOWS and ends[-1] == (12 + MAX_GAP_WINDOWS + 500) * MIN
    # Only dead letters so far, one of them without a window: it joins the first window emitted.
    st = _new_state()
    dead_letter_count(st, "features", "invalid", None, None)
    dead_letter_count(st, "features", "invalid", None, 2 * MIN)
    rows = emit_due(st, ["fraud"], MIN, 3 * MIN)
    assert sorted({r["window_end"] for r in rows}) == [2 * MIN, 3 * MIN]
    assert _by_window(rows)[(2 * MIN, TOTAL)]["invalid"] == 2


def test_dead_letters_count_in_the_window_of_their_kafka_timestamp():
    st = _new_state()
    assert dead_letter_window(st, None, MIN, None) is None  # nothing known yet: the first window
    assert dead_letter_window(st, 5 * MIN + 1, MIN, None) == 6 * MIN
    assert dead_letter_window(st, 5 * MIN + 1, MIN, 5 * MIN - 1) == 6 * MIN
    assert dead_letter_window(st, 6 * MIN, MIN, 5 * MIN) == 7 * MIN  # a window end belongs to the next
    # Behind the watermark (its window may be emitted already): the window after the watermark.
    assert dead_letter_window(st, 2 * MIN, MIN, 5 * MIN + 10) == 6 * MIN
    assert dead_letter_window(st, None, MIN, 5 * MIN + 10) == 6 * MIN
    # Far ahead of the watermark (a producer clock off by days): not held back for ever.
    assert dead_letter_window(st, 5 * MIN + MAX_AHEAD_MS, MIN, 5 * MIN) == 6 * MIN
    assert dead_letter_window(st, 5 * MIN + MAX_AHEAD_MS - MIN, MIN, 5 * MIN) == 5 * MIN + MAX_AHEAD_MS
    # Behind a window already emitted: the next one to emit.
    window_event_count(st, "features", "fraud", 8 * MIN, 1)
    emit_due(st, ["fraud"], MIN, 8 * MIN)
    assert dead_letter_window(st, 3 * MIN, MIN, None) == 9 * MIN
    assert dead_letter_window(st, 10 * MIN + 5, MIN, None) == 11 * MIN


def _engine() -> Driver:
    routing = Routing(group_wait_ms=0, group_interval_ms=MIN)
    return Driver(AlertEngine(default_rules(), routing, correlation_window_ms=0))


def _silent_runs(sent: set[int], windows: range) -> tuple[list[int], list[int]]:
    """Where "no data" must fire and resolve, counted directly from the windows a model sent in."""
    fire, resolve, run, firing = [], [], 0, False
    for k in windows:
        run = 0 if k in sent else run + 1
        if run == NO_DATA_WINDOWS and not firing:
            fire.append(k)
            firing = True
        if k in sent and firing:
            resolve.append(k)
            firing = False
    return fire, resolve


def test_no_data_fires_after_n_silent_windows_and_resolves_when_data_returns():
    sent = {"fraud": set(range(1, 13)), "recsys": {1, 2, 5, 10, 11}, "silent": set()}
    assert NO_DATA_WINDOWS == 3
    engines = {m: _engine() for m in [*sent, TOTAL]}  # the job keys the engine by model
    st = _new_state()
    seen: dict[str, list] = {m: [] for m in engines}
    for k in range(1, 13):
        for m, ks in sent.items():
            if k in ks:
                window_event_count(st, "predictions", m, k * MIN, 40)
        for r in emit_due(st, list(sent), MIN, k * MIN):
            seen[r["model_id"]] += [(k, n) for n in engines[r["model_id"]].window(k * MIN, [r])]
    for m, ks in sent.items():
        fire, resolve = _silent_runs(ks, range(1, 13))
        assert [(k, n.status) for k, n in seen[m]] == sorted(
            [(k, "firing") for k in fire] + [(k, "resolved") for k in resolve]
        )
    assert [k for k, _ in seen["recsys"]] == [8, 10]  # silent in 3-4 (two), then 6-9
    assert seen[TOTAL] == []
    alert = seen["silent"][0][1].alerts[0]
    assert alert["labels"]["model_id"] == "silent" and alert["labels"]["layer"] == "monitor"
    assert alert["startsAt"].startswith("1970-01-01T00:01:00")  # the end of the first silent window
    assert alert["annotations"]["summary"] == "no valid events from silent for 3 windows"
    rec = seen["recsys"][0][1].alerts[0]
    assert rec["startsAt"].startswith("1970-01-01T00:06:00")


@pytest.mark.parametrize(
    ("valid", "late", "invalid", "fires"),
    [
        (980, 0, 20, {"monitor_degraded_invalid"}),  # 2.0 % invalid > 1 %
        (995, 0, 5, set()),  # 0.5 % invalid
        (900, 100, 0, {"monitor_degraded_late"}),  # 10 % late > 5 %
        (960, 40, 0, set()),  # 4 % late
        (40, 30, 30, {"monitor_degraded_late", "monitor_degraded_invalid"}),  # 100 events: enough to judge
        (39, 30, 30, set()),  # 99 events: too few
        (850, 100, 50, {"monitor_degraded_late", "monitor_degraded_invalid"}),
    ],
)
def test_monitor_degraded_by_late_or_invalid_share(valid, late, invalid, fires):
    st = _new_state()
    window_event_count(st, "features", "fraud", MIN, valid)
    for i in range(late + invalid):
        dead_letter_count(st, "features", "late" if i < late else "invalid", "fraud", MIN)
    total = [r for r in emit_due(st, ["fraud"], MIN, MIN) if r["model_id"] == TOTAL]
    assert total[0]["input_events"] == valid + late + invalid
    notes = _engine().window(MIN, total)
    assert {a["labels"]["alertname"] for n in notes if n.status == "firing" for a in n.alerts} == fires
    assert all(n.group_labels["model_id"] == TOTAL for n in notes)


@pytest.mark.parametrize(
    ("value", "port"),
    [(None, None), (False, None), (9249, "9249"), ("9249", "9249"), ("9249-9260", "9249-9260"), (" 10-12 ", "10-12")],
)
def test_prometheus_port_config(value, port):
    assert prometheus_port(value) == port


@pytest.mark.parametrize("value", [True, "abc", "9260-9249", 0, 70000, "1-70000", "9249,9250"])
def test_prometheus_port_config_rejects(value):
    with pytest.raises(ValueError, match="prometheus_port"):
        prometheus_port(value)
