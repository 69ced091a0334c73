"""Alerting inside the real job, and a replay: drift in the stream -> one notification at a real
HTTP receiver, stored in ClickHouse; running the job again over the same offsets (as after a
restart without a checkpoint) sends nothing twice and counts nothing twice: every table is a
ReplacingMergeTree on a deterministic key, read with FINAL, and the notifications of the replay
have the same ids, which the store knows as delivered."""

import json
import time

import pytest

from mlvigil import clickhouse, synth
from mlvigil.broker import produce
from mlvigil.webhook_receiver import WebhookReceiver

from ..conftest import JobProcess
from .helpers import alerting, messages, write_config

pytestmark = pytest.mark.integration

QUERIES = {
    "feature_metrics": "SELECT window_start, model_id, segment, feature, events, psi, ks, mean FROM mlvigil.feature_metrics FINAL ORDER BY ALL",
    "service_metrics": "SELECT window_start, model_id, requests, errors, latency_p95 FROM mlvigil.service_metrics FINAL ORDER BY ALL",
    "window_events": "SELECT stream, model_id, window_start, events FROM mlvigil.window_events FINAL ORDER BY ALL",
    "dead_letters": "SELECT topic, partition, offset, reason_code FROM mlvigil.dead_letters FINAL ORDER BY ALL",
}  # fmt: skip


def test_drift_alert_is_delivered_once_and_a_replay_doubles_nothing(broker, topics, tmp_path):
    start = (int(time.time() * 1000) // 60_000 - 8) * 60_000
    models = synth.save_profiles(tmp_path, 10_000, age_edges=True).models
    t = synth.traffic(start, 5, 400, drift_minute=2, seed=21)
    # One malformed message (one dead letter), with a Kafka timestamp inside the traffic's minutes:
    # stamped now, it would be input 3 windows after the last valid event (a right `no_data` alert).
    broken = (None, b"{broken", start + 30_000)
    stop = {
        "features": produce(broker.bootstrap, topics["features"], messages(t.features) + [broken]),
        "predictions": produce(broker.bootstrap, topics["predictions"], messages(t.predictions)),
    }
    url = f"chdb://{tmp_path / 'ch'}"
    results, raw_counts = [], []
    with WebhookReceiver() as hook:
        config = write_config(tmp_path / "config.yaml", broker, topics, models, url, alerting=alerting(hook.url))
        for run in range(2):
            job = JobProcess(config, stop, tmp_path / f"job{run}.log")
            try:
                job.wait(240)
            finally:
                job.kill()
            if run == 0:
                first = [m["body"] for m in hook.messages]
            results.append({name: clickhouse.query_rows(url, q) for name, q in QUERIES.items()})
            raw_counts.append(clickhouse.query_rows(url, "SELECT count() FROM mlvigil.window_events")[0][0])
        assert first, "no notification reached the receiver"
        # The second run recomputed the same notifications (same ids) and sent none again.
        assert [m["body"] for m in hook.messages] == first

    drift = [b for b in first if b["status"] == "firing" and b["group_labels"].get("model_id") == "recsys"]
    assert len(drift) == 1, [b["title"] for b in first]
    note = drift[0]
    drifted = {a["labels"].get("feature") for a in note["alerts"]}
    assert {"age", "browsing_duration"} <= drifted
    assert "fraud" not in json.dumps(note["group_labels"])
    # Ranked by PSI x importance: browsing duration (PSI about 7) before age (0.21).
    assert note["text"].index("browsing_duration") < note["text"].index("age")
    assert [m for m in hook.messages if m["headers"].get("Idempotency-Key") == note["id"]]
    # Stored once, delivered once, after both runs.
    stored = clickhouse.query_rows(url, "SELECT notification_id, status FROM mlvigil.alerts FINAL")
    assert (note["id"], "firing") in stored
    delivered = clickhouse.query_rows(
        url, "SELECT DISTINCT notification_id FROM mlvigil.alert_deliveries FINAL WHERE status = 'delivered'"
    )
    assert {r[0] for r in delivered} == {b["id"] for b in first}

    # The replay: the same rows as the first run, none counted twice.
    assert results[0]["window_events"], "the first run wrote nothing"
    assert sum(r[3] for r in results[0]["window_events"] if r[0] == "features") == len(t.features)
    assert len(results[0]["dead_letters"]) == 1
    # Equal up to float summation order (partitions interleave differently on each run).
    for name in QUERIES:
        assert len(results[1][name]) == len(results[0][name]), name
        for a, b in zip(results[0][name], results[1][name], strict=True):
            for x, y in zip(a, b, strict=True):
                ok = x == pytest.approx(y, rel=1e-12, abs=1e-12) if isinstance(x, float) else x == y
                assert ok, (name, a, b)
    # The second run really wrote its rows again (unless a merge already collapsed them):
    # FINAL is what keeps the answer right.
    assert raw_counts[1] >= raw_counts[0]
