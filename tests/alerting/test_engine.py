"""The alert engine on synthetic metric rows over event time.

Defaults unless a test says otherwise: group_wait 30 s, group_interval 5 min, repeat_interval 4 h,
correlation window 5 min, group_by model_id/model_version/segment. Windows are one minute; the
window ending at minute k is `k * MIN`. Every run goes through Driver, which also checks that a
JSON round trip of the state between calls changes nothing.
"""

import json

import pytest

from mlvigil.alerting import AlertEngine, Routing, Rule, default_routing, default_rules
from mlvigil.alerting.rules import Receiver

from .conftest import MIN, Driver, feature_row, profiled_quality_row, quality_row, service_row

SEC = 1000


def engine(rules=None, **kw) -> AlertEngine:
    return AlertEngine(default_rules() if rules is None else rules, kw.pop("routing", None), **kw)


def test_absolute_threshold_fires_after_group_wait_and_resolves_on_the_group_interval_grid():
    d = Driver(engine())
    assert d.window(1 * MIN, [service_row(latency_p95=2500)]) == []  # fires at 1:00, group waits 30 s
    (n,) = d.window(2 * MIN, [service_row(latency_p95=2600)])  # the tick at 1:30 comes before 2:00's rows
    assert (n.status, n.severity, n.receiver, n.due_ms, n.window_end_ms) == (
        "firing",
        "warning",
        "chat",
        90 * SEC,
        2 * MIN,
    )
    (a,) = n.alerts
    assert a["labels"] == {
        "alertname": "latency_p95_high", "severity": "warning", "layer": "service", "metric": "latency_p95",
        "model_id": "recsys", "model_version": "v2", "segment": "*",
    }  # fmt: skip
    assert (a["status"], a["startsAt"], a["endsAt"], a["value"]) == ("firing", "1970-01-01T00:01:00.000Z", None, 2500.0)
    assert n.title == "[FIRING:1] warning recsys v2: latency_p95 2500 > 2000"
    for m in range(3, 7):
        assert d.window(m * MIN, [service_row(latency_p95=2600)]) == []  # unchanged: nothing to say
    assert d.window(7 * MIN, [service_row(latency_p95=900)]) == []  # resolves at 7:00
    # Next tick of the group: 1:30 + k * 5 min >= 7:00 -> 11:30.
    assert d.advance(11 * MIN + 29 * SEC) == []
    (r,) = d.advance(11 * MIN + 30 * SEC)
    assert (r.status, r.due_ms, r.alerts[0]["status"], r.alerts[0]["endsAt"]) == (
        "resolved", 690 * SEC, "resolved", "1970-01-01T00:07:00.000Z",
    )  # fmt: skip
    assert r.title.startswith("[RESOLVED] warning recsys v2")
    assert d.state["groups"] == {}, "resolved and notified: nothing left in state"
    assert only_trailing_history(d), "but the trailing baselines of the default trend rules"


def test_new_alert_in_a_notified_group_waits_for_the_next_group_interval_tick():
    d = Driver(engine())
    d.window(1 * MIN, [service_row(latency_p95=2500)])
    assert len(d.advance(90 * SEC)) == 1
    d.window(2 * MIN, [service_row(latency_p95=2500, error_rate=0.05)])  # error rate joins at 2:00
    assert d.advance(6 * MIN + 29 * SEC) == []
    (n,) = d.advance(6 * MIN + 30 * SEC)  # tick 1:30 + 5 min
    assert sorted(a["labels"]["alertname"] for a in n.alerts) == ["error_rate_high", "latency_p95_high"]


def test_repeat_interval_resends_an_unchanged_firing_group_at_the_first_tick_after_it():
    d = Driver(engine())
    for m in range(1, 5 * 60, 10):  # rows every 10 minutes for 5 hours, always over the threshold
        d.window(m * MIN, [service_row(latency_p95=2500)])
    # First send 1:30. Alertmanager re-sends when now > last + repeat_interval at a tick: ticks at
    # 1:30 + k * 5 min, first one past 4 h 1:30 is k = 49 -> 4 h 6:30.
    assert [n.due_ms for n in d.sent] == [90 * SEC, 90 * SEC + 49 * 5 * MIN]


def test_relative_drop_against_reference_escalates_and_critical_inhibits_warning():
    d = Driver(engine())
    d.window(1 * MIN, [profiled_quality_row(accuracy=0.80)])  # -12 %: warning only
    (n1,) = d.advance(90 * SEC)
    assert (n1.severity, n1.receiver, [a["labels"]["alertname"] for a in n1.alerts]) == (
        "warning", "chat", ["accuracy_drop_warning"],
    )  # fmt: skip
    assert n1.text == "accuracy -12 % (0.91 -> 0.8)"
    assert n1.alerts[0]["baseline"] == 0.91 and n1.alerts[0]["observed"] == pytest.approx((0.91 - 0.80) / 0.91)
    # -23 % at 3:00: the critical rule fires too. Escalation flushes 30 s later, not at 6:30.
    assert d.window(3 * MIN, [profiled_quality_row(accuracy=0.70)]) == []
    (n2,) = d.advance(3 * MIN + 30 * SEC)
    assert (n2.severity, n2.receiver) == ("critical", "pager")
    # The warning on the same model, version, segment and metric is inhibited by the critical.
    assert [a["labels"]["alertname"] for a in n2.alerts] == ["accuracy_drop_critical"]
    # Back to -15 %: critical resolves, the warning is no longer inhibited but was already notified:
    # the next tick (8:30) sends the resolved critical (send_resolved), with the warning firing.
    d.window(4 * MIN, [profiled_quality_row(accuracy=0.78)])
    (n3,) = d.advance(8 * MIN + 30 * SEC)
    assert n3.status == "firing"
    assert {a["labels"]["alertname"]: a["status"] for a in n3.alerts} == {
        "accuracy_drop_warning": "firing", "accuracy_drop_critical": "resolved",
    }  # fmt: skip
    assert (n3.severity, n3.receiver) == ("critical", "pager")  # the pager hears that its alert resolved


def test_relative_drop_against_trailing_windows():
    rule = Rule("acc_trailing", "model", "accuracy", "warning", threshold=0.10, baseline="trailing:3", change="drop")
    d = Driver(engine([rule], correlation_window_ms=0))
    for m, acc in enumerate([0.90, 0.92, 0.88], start=1):
        d.window(m * MIN, [quality_row(accuracy=acc)])  # no baseline yet (needs 3 windows)
    assert d.engine.firing(d.state) == []
    d.window(4 * MIN, [quality_row(accuracy=0.79)])  # baseline mean(0.90, 0.92, 0.88) = 0.90, drop 12.2 %
    (a,) = d.engine.firing(d.state)
    assert a["baseline"] == pytest.approx(0.90) and a["observed"] == pytest.approx(0.11 / 0.90)
    (n,) = d.advance(4 * MIN + 30 * SEC)
    assert n.text == "accuracy -12 % (0.9 -> 0.79)"
    # The trailing baseline follows the data: mean(0.92, 0.88, 0.79) = 0.863, 0.79 is -8.5 %: resolved.
    d.window(5 * MIN, [quality_row(accuracy=0.79)])
    assert d.engine.firing(d.state) == []


def test_for_windows_needs_consecutive_hits_and_starts_at_the_first():
    rule = Rule("slow", "service", "latency_p95", "warning", threshold=2000, for_windows=3)
    d = Driver(engine([rule]))
    pattern = [2500, 2500, 100, 2500, 2500]  # broken streak: never 3 in a row
    for m, v in enumerate(pattern, start=1):
        d.window(m * MIN, [service_row(latency_p95=v)])
    assert d.engine.firing(d.state) == []
    d.window(6 * MIN, [service_row(latency_p95=2500)])  # 4, 5, 6: fires
    (a,) = d.engine.firing(d.state)
    assert a["starts"] == 4 * MIN


def test_min_samples_blocks_evaluation_but_does_not_resolve():
    d = Driver(engine())
    d.window(1 * MIN, [feature_row("age", 0.5, present=50)])  # default PSI rule needs 100 present
    assert d.engine.firing(d.state) == []
    d.window(2 * MIN, [feature_row("age", 0.5, present=150)])
    assert len(d.engine.firing(d.state)) == 1
    d.window(3 * MIN, [feature_row("age", 0.01, present=20)])  # too few to say it is over
    assert len(d.engine.firing(d.state)) == 1
    d.window(4 * MIN, [feature_row("age", 0.01, present=200)])
    assert d.engine.firing(d.state) == []


def test_per_feature_override_and_importance_weighting():
    rule = Rule(
        "psi",
        "data",
        "psi",
        "warning",
        threshold=0.2,
        feature="*",
        feature_thresholds={"income": 0.1},
        importance_weight=0.5,
    )
    d = Driver(engine([rule]))
    rows = [
        feature_row("income", 0.15),  # override 0.1: fires
        feature_row("age", 0.15, importance=1.0),  # 0.2 * (1 - 0.5 * 1.0) = 0.1: fires
        feature_row("tenure", 0.15, importance=0.4),  # 0.2 * (1 - 0.2) = 0.16: does not
        feature_row("zip", 0.15, importance=0.0),  # 0.2: does not
        feature_row("city", 0.15),  # no importance: 0.2, does not
    ]
    d.window(1 * MIN, rows)
    fired = {a["labels"]["feature"]: a["threshold"] for a in d.engine.firing(d.state)}
    assert fired == {"income": pytest.approx(0.1), "age": pytest.approx(0.1)}
    assert rule.effective_threshold(feature_row("tenure", 0.15, importance=0.4)) == pytest.approx(0.16)


def test_segments_default_to_all_traffic_only():
    any_seg = Rule("psi_seg", "data", "psi", "warning", threshold=0.2, segment="**")
    eu = Rule("psi_eu", "data", "psi", "warning", threshold=0.2, segment="region=eu")
    base = Rule("psi_all", "data", "psi", "warning", threshold=0.2)
    d = Driver(engine([any_seg, eu, base]))
    d.window(
        1 * MIN,
        [
            feature_row("age", 0.5),
            feature_row("age", 0.5, segment="region=eu"),
            feature_row("age", 0.5, segment="region=us"),
        ],
    )
    got = sorted((a["rule"], a["labels"]["segment"]) for a in d.engine.firing(d.state))
    assert got == [
        ("psi_all", "*"),
        ("psi_eu", "region=eu"),
        ("psi_seg", "*"),
        ("psi_seg", "region=eu"),
        ("psi_seg", "region=us"),
    ]


def test_alert_that_fires_and_resolves_between_ticks_is_not_mentioned():
    d = Driver(engine())
    d.window(1 * MIN, [service_row(latency_p95=2500)])
    assert len(d.advance(90 * SEC)) == 1
    d.window(2 * MIN, [service_row(latency_p95=2500, error_rate=0.05)])  # error rate fires at 2:00 ...
    d.window(3 * MIN, [service_row(latency_p95=2500, error_rate=0.0)])  # ... and resolves at 3:00
    assert d.advance(60 * MIN) == [], "nobody heard of it, so there is no news at 6:30"
    assert [a["rule"] for a in d.engine.firing(d.state)] == ["latency_p95_high"]


def test_send_resolved_false_sends_no_resolved_notice():
    routing = default_routing()
    routing.send_resolved = False
    d = Driver(engine(routing=routing))
    d.window(1 * MIN, [service_row(latency_p95=2500)])
    d.window(2 * MIN, [service_row(latency_p95=100)])
    d.advance(30 * MIN)
    assert [n.status for n in d.sent] == ["firing"]
    assert d.state["groups"] == {}


def test_stale_alert_resolves_after_resolve_stale_ms_without_data():
    d = Driver(engine(resolve_stale_ms=20 * MIN))
    d.window(1 * MIN, [service_row(latency_p95=2500)])
    assert d.engine.next_due_ms(d.state) == 90 * SEC
    d.advance(90 * SEC)
    assert d.engine.next_due_ms(d.state) == 21 * MIN  # the stale deadline comes before the repeat
    d.advance(21 * MIN)  # stale at 21:00; the group's next tick is 21:30
    (r,) = d.advance(21 * MIN + 30 * SEC)
    assert r.status == "resolved" and "stale" in r.alerts[0]["annotations"]
    assert r.alerts[0]["ends_ms"] == 21 * MIN


def test_duplicate_rows_and_replayed_windows_do_not_count_twice():
    rule = Rule("slow", "service", "latency_p95", "warning", threshold=2000, for_windows=2)
    d = Driver(engine([rule]))
    d.window(1 * MIN, [service_row(latency_p95=2500), service_row(latency_p95=2500)])
    d.window(1 * MIN, [service_row(latency_p95=2500)])
    assert d.engine.firing(d.state) == [], "one window, however often it is fed"
    d.window(2 * MIN, [service_row(latency_p95=2500)])
    assert len(d.engine.firing(d.state)) == 1


def scenario(d: Driver, extra_advances: bool = False):
    """Drift, a quality drop, an escalation, recovery: a bit of everything."""
    for m in range(1, 31):
        if extra_advances:  # a caller that also moves event time between windows (idle timers)
            d.advance(m * MIN - 45 * SEC)
            d.advance(m * MIN - 10 * SEC)
        psi = 0.4 if 3 <= m < 20 else 0.01
        acc = 0.80 if 5 <= m < 12 else (0.70 if 12 <= m < 15 else 0.90)
        d.window(m * MIN, [
            feature_row("browsing_duration", psi, mean=2.1, reference_mean=10.0),
            feature_row("age", psi / 2, segment="region=eu"),
            profiled_quality_row(accuracy=acc),
            service_row(latency_p95=2500 if m % 7 == 0 else 100),
        ])  # fmt: skip
    d.advance(2 * 60 * MIN)
    return [(n.id, n.due_ms, n.status, n.receiver, n.title) for n in d.sent]


def test_ids_are_deterministic_and_independent_of_how_often_time_advances():
    first = scenario(Driver(engine()))
    again = scenario(Driver(engine()))
    assert first == again and len(first) >= 5
    assert len({i for i, *_ in first}) == len(first), "ids are unique"
    # Extra advance() calls between windows change when notifications are emitted at most, not
    # which ones, their due ticks or their ids.
    assert scenario(Driver(engine()), extra_advances=True) == first


def test_state_is_plain_json_and_bounded():
    d = Driver(engine())
    scenario(d)
    assert d.state["groups"] == {} and only_trailing_history(d)
    # Bounded: at most N values per trailing rule and target, nothing else.
    assert len(json.dumps({k: v for k, v in d.state.items() if k != "targets"})) < 200


def only_trailing_history(d: Driver) -> bool:
    """Every target left in the state is a trailing baseline: no streak, at most N values."""
    for key, t in d.state["targets"].items():
        rule = d.engine.by_name[json.loads(key)[0]]
        n = rule.trailing_windows
        if not n or rule.baseline == "reference" or t["streak"] or not 0 < len(t["hist"]) <= n:
            return False
    return True


def test_routing_by_severity_and_unknown_receiver_rejected():
    with pytest.raises(ValueError, match="unknown receiver"):
        Routing({"log": Receiver("log", "log")}, {"critical": ["pager"]})
    d = Driver(engine())
    d.window(1 * MIN, [feature_row("age", None, missing_rate=0.2, events=500)])  # info only
    d.advance(20 * MIN)
    ((n),) = d.sent
    assert (n.severity, n.receiver) == ("info", "log")


def test_a_severity_routed_to_two_receivers_gives_one_notification_each():
    recs = {n: Receiver(n, "log") for n in ("pager", "chat", "chat-cn", "log")}
    routing = Routing(recs, {"critical": ["pager"], "warning": ["chat", "chat-cn"], "info": ["log"]})
    d = Driver(engine(routing=routing))
    d.window(1 * MIN, [service_row(latency_p95=2500)])
    a, b = d.advance(90 * SEC)
    assert (a.receiver, b.receiver) == ("chat", "chat-cn")
    assert a.id != b.id and a.group_key == b.group_key and a.alerts == b.alerts
