"""The default rules fire out of the box, one layer each, in the real job (one run):

an `alerting:` section with receivers only (no rules), a recsys profile built by `mlvigil profile
--label-column y` (reference quality) and a fraud profile without labels (trailing baselines),
then from minute 6 four faults injected into the streams:

* data: recsys features drift (ages, browsing duration: synth's drift);
* model: recsys clicks no longer follow the score (late labels, synth's concept shift);
* service: fraud requests get slow (about 60x) and 5 % fail;
* business: fraud conversions halve.

Then the contract: the job's own rows, read back from ClickHouse and passed through the job's
AlertInput, carry every default rule's metric column (and the reference fields the baselines and
significance tests use)."""

import csv
import json
import time

import numpy as np
import pytest

from mlvigil import cli, clickhouse, health, synth
from mlvigil.alert_operators import AlertInput
from mlvigil.alerting import AlertEngine, default_rules
from mlvigil.alerting.rules import row_layers
from mlvigil.broker import produce
from mlvigil.catalog import compile_catalog
from mlvigil.config import load_config
from mlvigil.profile import build_profile, save_profile
from mlvigil.webhook_receiver import WebhookReceiver
from mlvigil.writer import COLUMNS

from ..conftest import JobProcess
from .helpers import alerting, messages, produce_traffic, write_config

pytestmark = pytest.mark.integration

MIN = 60_000
# Five fault windows, three of them well before the end of the input: a quality window first seen
# with too few labels is judged again when more arrive, and a fault only in the last windows
# depends on how the bounded run ends (a conversion drop confined to the last three windows was
# missed once in CI while the stored final rows showed it; see the issue notes).
MINUTES, PER_MINUTE, FAULT_MINUTE = 11, 450, 6
ENGINE_TABLES = ("feature_metrics", "service_metrics", "quality_metrics")


def write_recsys_training_csv(path, n: int = 8000) -> None:
    """recsys training data with the true label: clicks follow the score (calibrated)."""
    cols = synth.training_columns("recsys", n)
    cols["y"] = synth.training_labels(cols)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        w.writerows(zip(*cols.values(), strict=True))


def inject_service_fault(predictions: list[dict], fault_ms: int) -> None:
    rng = np.random.default_rng(17)
    for p in predictions:
        if p["model_id"] == "fraud" and p["event_time"] >= fault_ms:
            p["latency_ms"] = round(p["latency_ms"] * 60, 3)
            if p["status"] == "ok" and rng.random() < 0.05:
                p.update(status="error", error_code="TIMEOUT")
                p.pop("score", None)
                p.pop("predicted_label", None)


def fraud_outcomes(labels: list[dict], fault_ms: int) -> None:
    """fraud labels report conversions too: 30 % convert before the fault, 15 % after."""
    rng = np.random.default_rng(19)
    for ev in labels:
        if ev["model_id"] == "fraud":
            rate = 0.15 if ev["event_time"] - 20_000 >= fault_ms else 0.30
            ev["outcomes"] = {"converted": bool(rng.random() < rate)}


def test_default_rules_fire_per_layer_and_read_the_jobs_own_columns(broker, topics, tmp_path):
    start = (int(time.time() * 1000) // MIN - MINUTES - 2) * MIN
    fault_ms = start + FAULT_MINUTE * MIN
    # Profiles as a new user builds them: recsys with labels through the CLI, fraud without.
    write_recsys_training_csv(tmp_path / "recsys.csv")
    assert cli.main(["profile", "--data", str(tmp_path / "recsys.csv"), "--model", "recsys", "--version", "v1",
                     "--out", str(tmp_path / "recsys.json"), "--label-column", "y", "--positive-label", "1",
                     "--edges", "age=" + ",".join(map(str, synth.AGE_EDGES))]) == 0  # fmt: skip
    save_profile(build_profile(synth.training_columns("fraud", 8000), "fraud", "v1"), tmp_path / "fraud.json")
    recsys_profile = json.loads((tmp_path / "recsys.json").read_text())
    reference_accuracy = recsys_profile["reference_quality"]["metrics"]["accuracy"]

    t = synth.traffic(start, MINUTES, PER_MINUTE, drift_minute=FAULT_MINUTE, seed=23)
    inject_service_fault(t.predictions, fault_ms)
    fast = lambda model, rng, n: rng.exponential(20_000, n).astype(np.int64)  # noqa: E731 (clicks and chargebacks)
    labels = synth.labels(t.predictions, start, drift_minute=FAULT_MINUTE, delays=fast)
    fraud_outcomes(labels, fault_ms)
    stop = {
        **produce_traffic(broker.bootstrap, topics, t),
        "labels": produce(broker.bootstrap, topics["labels"], messages(labels)),
    }
    url = f"chdb://{tmp_path / 'ch'}"
    with WebhookReceiver() as hook:
        models = {m: {"segments": synth.SEGMENTS[m], "profiles": {"v1": str(tmp_path / f"{m}.json")},
                      "positive_label": synth.POSITIVE_LABEL[m]} for m in synth.MODELS}  # fmt: skip
        # Receivers and routing only: no rules of our own.
        alerts = alerting(
            hook.url, route={"by_severity": {"critical": ["chat"], "warning": ["chat"], "info": ["chat"]}}
        )
        del alerts["use_default_rules"]
        write_config(tmp_path / "config.yaml", broker, topics, models, url, labels={"lateness": "10m"}, alerting=alerts)
        job = JobProcess(tmp_path / "config.yaml", stop, tmp_path / "job.log")
        try:
            job.wait(300)
        finally:
            job.kill()
        bodies = [m["body"] for m in hook.messages]

    alerts = [a for b in bodies if b["status"] == "firing" for a in b["alerts"] if a["status"] == "firing"]
    fired = {(a["labels"]["model_id"], a["labels"]["alertname"]) for a in alerts}
    titles = [b["title"] for b in bodies]
    # Each layer's default rule, on its fault.
    assert ("recsys", "psi_drift") in fired, titles  # data
    drifted = {a["labels"].get("feature") for a in alerts if a["labels"]["alertname"] == "psi_drift"}
    assert {"age", "browsing_duration"} <= drifted, drifted
    assert ("recsys", "accuracy_drop_critical") in fired, (sorted(fired), titles)  # model, from the late labels
    assert {("fraud", "latency_p95_high"), ("fraud", "error_rate_high")} <= fired, titles  # service
    assert ("fraud", "conversion_drop") in fired, titles  # business
    # No default rule fired before the faults (startsAt = end of the first window that held).
    early = [(a["labels"]["model_id"], a["labels"]["alertname"], a["startsAt"]) for a in alerts
             if a["starts_ms"] < fault_ms + MIN]  # fmt: skip
    assert early == [], early
    # Which baseline: recsys compared with its profile's reference quality, fraud (no labels in
    # its profile) with its trailing windows.
    (acc,) = {a["fingerprint"]: a for a in alerts if a["labels"]["alertname"] == "accuracy_drop_critical"}.values()
    assert acc["baseline"] == pytest.approx(reference_accuracy)
    assert acc["annotations"]["baseline"].startswith("reference baseline")
    assert "likely_cause" in acc["annotations"] and "browsing_duration" in acc["annotations"]["likely_cause"]
    conv = next(a for a in alerts if a["labels"]["alertname"] == "conversion_drop")
    assert conv["annotations"]["baseline"].startswith("trailing:5 baseline")
    assert "rolling back" in conv["annotations"]["rollback"] and conv["labels"]["model_version"] == "v1"
    # The drift and the accuracy drop it explains came as one notification.
    merged = [
        b for b in bodies if {a["labels"]["alertname"] for a in b["alerts"]} >= {"psi_drift", "accuracy_drop_critical"}
    ]
    assert merged, titles

    # -- contract: the job's own rows carry every default rule's columns ----------------------
    rows = engine_rows_from_store(url, tmp_path / "config.yaml")
    for rule in default_rules():
        matching = [r for r in rows if rule.layer in row_layers(r) and rule.metric in r]
        assert matching, f"{rule.name}: no {rule.layer} row of the job has a {rule.metric!r} column"
        if rule.baseline == "reference":
            assert any(f"{rule.metric}_reference" in r for r in matching), f"{rule.name}: no reference from the profile"
        if rule.test in ("chi2", "psi"):
            assert any(rule.p_value(r) is not None for r in matching), f"{rule.name}: no row can be tested"
    quality = [r for r in rows if "accuracy" in r and r["model_id"] == "recsys"]
    assert {r["accuracy_reference"] for r in quality} == {reference_accuracy}
    assert all("accuracy_reference" not in r for r in rows if r["model_id"] == "fraud")
    # The engine over the stored rows, window by window, raises the same alerts as the job.
    engine, state, replayed = AlertEngine(default_rules()), {}, set()
    by_window: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        by_window.setdefault((r["model_id"], r["window_end"]), []).append(r)
    for (model, w), batch in sorted(by_window.items(), key=lambda kv: kv[0][1]):
        engine.evaluate(state.setdefault(model, {}), batch, w)
        replayed |= {(model, a["rule"]) for a in engine.firing(state[model])}
    layers = {("recsys", "psi_drift"), ("recsys", "accuracy_drop_critical"), ("fraud", "latency_p95_high"),
              ("fraud", "error_rate_high"), ("fraud", "conversion_drop")}  # fmt: skip
    assert layers <= replayed, replayed


def engine_rows_from_store(url: str, config_path) -> list[dict]:
    """The rows the job wrote, read back from ClickHouse, as the job's AlertInput hands them on."""
    cfg = load_config(config_path)
    alert_input = AlertInput(compile_catalog(cfg), COLUMNS)
    alert_input.open(None)
    rows: list[dict] = []
    for table in ENGINE_TABLES:
        cols = COLUMNS[table]
        stored = clickhouse.query_rows(url, f"SELECT {', '.join(cols)} FROM mlvigil.{table} FINAL ORDER BY window_end")
        assert stored, f"the job wrote no {table}"
        for _, _, batch in alert_input.flat_map((table, [list(r) for r in stored])):
            rows += batch
    return rows + monitor_rows_from_store(url, cfg)


def monitor_rows_from_store(url: str, cfg) -> list[dict]:
    """The monitor layer's rows (the job makes them in MonitorAccounting from its window counts and
    dead letters, and does not store them): the same functions over the stored counts."""
    st = health._new_state()
    ends = []
    q = "SELECT stream, model_id, toUnixTimestamp64Milli(window_end), events FROM mlvigil.window_events FINAL"
    for stream, model, end, events in clickhouse.query_rows(url, q):
        health.window_event_count(st, stream, model, end, events)
        ends.append(end)
    q = "SELECT stream, kind, model_id, toUnixTimestamp64Milli(kafka_ts) FROM mlvigil.dead_letters FINAL"
    for stream, kind, model, kafka_ms in clickhouse.query_rows(url, q):
        health.dead_letter_count(st, stream, kind, model, health.dead_letter_window(st, kafka_ms, cfg.window_ms, None))
    assert ends, "the job wrote no window_events"
    return health.emit_due(st, sorted(cfg.models), cfg.window_ms, max(ends))
