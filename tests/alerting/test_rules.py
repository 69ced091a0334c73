"""Rules and routing as data: YAML loading, defaults, validation, ${ENV} secrets, matchers."""

import subprocess
import sys
from pathlib import Path

import pytest

from mlvigil.alerting import default_rules, load_config, load_routing, load_rules
from mlvigil.alerting.rules import ANY_SEGMENT, Rule, parse_matchers

from .conftest import feature_row, profiled_quality_row, quality_row, service_row

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "alerts.example.yaml"
ENV = {
    "ALERTMANAGER_URL": "http://127.0.0.1:9093",
    "SLACK_WEBHOOK_URL": "https://hooks.example.com/services/T0/B0/secret-token",
    "FEISHU_WEBHOOK_URL": "https://open.example.com/open-apis/bot/v2/hook/abc",
    "FEISHU_SIGNING_SECRET": "sign-me",
    "RETRAIN_WEBHOOK_URL": "http://127.0.0.1:1/retrain",
}


def test_default_rules_match_the_article():
    rules = {r.name: r for r in default_rules()}
    psi = rules["psi_drift"]
    assert (psi.layer, psi.metric, psi.op, psi.threshold, psi.severity, psi.min_samples) == (
        "data",
        "psi",
        ">",
        0.2,
        "warning",
        100,
    )
    for name, metric, t, sev in [
        ("accuracy_drop_warning", "accuracy", 0.10, "warning"),
        ("accuracy_drop_critical", "accuracy", 0.20, "critical"),
        ("recall_drop_warning", "recall", 0.15, "warning"),
        ("recall_drop_critical", "recall", 0.20, "critical"),
    ]:
        r = rules[name]
        assert (r.metric, r.baseline, r.change, r.threshold, r.severity) == (metric, "reference", "drop", t, sev)
    assert (rules["latency_p95_high"].threshold, rules["latency_p95_high"].layer) == (2000.0, "service")
    assert (rules["error_rate_high"].threshold, rules["error_rate_high"].severity) == (0.01, "warning")
    assert (rules["missing_rate_high"].threshold, rules["missing_rate_high"].severity) == (0.05, "info")


def test_observe_absolute_relative_and_samples():
    psi = default_rules()[0]
    assert psi.observe(feature_row("a", 0.3)).hit
    assert not psi.observe(feature_row("a", 0.3, present=99)).evaluated
    assert psi.observe(feature_row("a", None)).reason == "no value"
    acc = Rule("acc", "model", "accuracy", threshold=0.1, baseline="reference", change="drop")
    o = acc.observe(profiled_quality_row(accuracy=0.8))  # the profile's reference accuracy: 0.91
    assert o.hit and o.observed == pytest.approx((0.91 - 0.8) / 0.91) and o.baseline == pytest.approx(0.91)
    assert o.baseline_source == "reference"
    assert acc.observe(quality_row(accuracy=0.8)).reason == "no baseline"
    rise = Rule("lat", "service", "latency_p95", threshold=0.5, baseline="trailing:2", change="rise")
    assert rise.observe(service_row(latency_p95=160), [100.0, 100.0]).observed == pytest.approx(0.6)
    assert not rise.observe(service_row(latency_p95=160), [100.0]).evaluated
    # labelled counts before events: 5 labels of 10,000 predictions are 5 samples.
    acc100 = Rule("acc", "model", "accuracy", threshold=0.1, baseline="reference", change="drop", min_samples=100)
    assert acc100.samples({"labelled": 5, "events": 10_000}) == 5
    missing = Rule("m", "data", "missing_rate", threshold=0.05)
    assert missing.samples(feature_row("a", 0.1, present=10, events=300)) == 300


def test_rule_matching_globs_and_layers():
    r = Rule("r", "data", "psi", model_id="rec*", model_version="v[12]", feature="user_*")
    assert r.matches(feature_row("user_age", 0.1))
    assert not r.matches(feature_row("item_age", 0.1))
    assert not r.matches({**feature_row("user_age", 0.1), "model_version": "v3"})
    assert not r.matches({**feature_row("user_age", 0.1), "layer": "service"})
    assert r.matches({k: v for k, v in feature_row("user_age", 0.1).items() if k != "layer"}), "feature rows are data"
    assert not Rule("r", "data", "psi").matches(feature_row("a", 0.1, segment="region=eu"))
    both = {**quality_row(accuracy=0.9, ctr=0.05), "layer": ["model", "business"]}
    assert Rule("c", "business", "ctr").matches(both) and Rule("a", "model", "accuracy").matches(both)
    assert Rule("r", "data", "psi", segment=ANY_SEGMENT).matches(feature_row("a", 0.1, segment="region=eu"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "infra"}, "layer"),
        ({"severity": "page"}, "severity"),
        ({"op": "!="}, "op"),
        ({"baseline": "reference"}, "both baseline and change"),
        ({"baseline": "yesterday", "change": "drop"}, "baseline"),
        ({"baseline": "trailing:0", "change": "drop"}, "N >= 1"),
        ({"for_windows": 0}, "for_windows"),
        ({"op": "<", "importance_weight": 0.5}, "importance"),
        ({"labels": {"bad-name": "x"}}, "label name"),
        ({"labels": {"severity": "low"}}, "set by the engine"),
    ],
)
def test_rule_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rule(**{"name": "r", "layer": "data", "metric": "psi", **kwargs})


def test_example_config_loads_with_env_secrets(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = load_config(EXAMPLE)
    names = [r.name for r in cfg.rules]
    assert names.count("psi_drift") == 1 and "accuracy_drop_critical" in names  # defaults kept, psi replaced
    psi = next(r for r in cfg.rules if r.name == "psi_drift")
    assert psi.importance_weight == 0.5 and psi.feature_thresholds == {"prediction:score": 0.1}
    assert {"ctr_drop_warning", "ctr_drop_critical"} <= set(names)
    ctr = next(r for r in cfg.rules if r.name == "ctr_drop_critical")
    assert (ctr.threshold, ctr.baseline, ctr.actions, ctr.labels) == (
        0.10,
        "reference",
        ["rollback"],
        {"team": "growth"},
    )
    trend = next(r for r in cfg.rules if r.name == "accuracy_trend")
    assert trend.trailing_windows == 60
    rt = cfg.routing
    assert rt.receivers["chat"].url == ENV["SLACK_WEBHOOK_URL"] and rt.receivers["chat-cn"].secret == "sign-me"
    assert rt.by_severity == {"critical": ["pager"], "warning": ["chat", "chat-cn"], "info": ["log"]}
    assert (rt.group_wait_ms, rt.group_interval_ms, rt.repeat_interval_ms) == (30_000, 300_000, 14_400_000)
    assert rt.group_by == ["model_id", "model_version", "segment"]
    assert (cfg.correlation_window_ms, cfg.resolve_stale_ms) == (300_000, 3_600_000)
    assert cfg.actions["retrain"]["url"] == ENV["RETRAIN_WEBHOOK_URL"]
    assert ENV["SLACK_WEBHOOK_URL"] not in repr(rt) and "sign-me" not in repr(rt), "secrets are not in repr"


def test_unset_env_is_an_error(monkeypatch):
    monkeypatch.delenv("ALERTMANAGER_URL", raising=False)
    with pytest.raises(ValueError, match="ALERTMANAGER_URL"):
        load_routing({"receivers": [{"name": "pager", "type": "alertmanager", "url": "${ALERTMANAGER_URL}"}]})


def test_load_rules_from_yaml_text_and_errors():
    rules = load_rules(
        "rules:\n  - {name: slow, layer: service, metric: latency_p95, condition: {op: '>', threshold: 500}}\n"
    )
    assert rules == [Rule("slow", "service", "latency_p95", threshold=500)]
    with pytest.raises(ValueError, match="unknown keys"):
        load_rules({"rules": [{"name": "x", "layer": "data", "metric": "psi", "treshold": 1}]})
    with pytest.raises(ValueError, match="duplicate"):
        load_rules([{"name": "x", "layer": "data", "metric": "psi"}] * 2)


def test_matchers():
    (eq, ne, re_, nre) = parse_matchers(
        ['severity="critical"', "layer!=data", 'metric=~"acc.*"', 'feature!~"prediction:.*"']
    )
    labels = {"severity": "critical", "layer": "model", "metric": "accuracy", "feature": "age"}
    assert eq.matches(labels) and ne.matches(labels) and re_.matches(labels) and nre.matches(labels)
    assert not re_.matches({"metric": "xaccuracy"}), "regex matchers are anchored"
    assert parse_matchers({"severity": "warning"})[0].matches({"severity": "warning"})


def test_no_pyflink_anywhere_in_the_package():
    src = ROOT / "mlvigil" / "alerting"
    assert not [p for p in src.glob("*.py") if "pyflink" in p.read_text()]
    code = "import sys, mlvigil.alerting.actions, mlvigil.alerting.delivery; print('pyflink' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_readme_rule_example_loads():
    text = (ROOT / "mlvigil" / "alerting" / "README.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = {r.name: r for r in load_rules(block)}
    assert set(rules) == {"psi_drift", "accuracy_drop_warning", "accuracy_drop_critical"}
    assert rules["psi_drift"].labels == {"team": "{model_id}-owners"}
    assert rules["accuracy_drop_critical"].threshold == 0.20
