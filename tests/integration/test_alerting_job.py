"""Alerting inside the real job: drift in the stream -> one notification at a real HTTP receiver,
stored in ClickHouse; running the job again over the same input sends nothing twice."""

import json
import time

import orjson
import pytest

from mlvigil import clickhouse, synth
from mlvigil.broker import produce
from mlvigil.profile import build_profile, save_profile
from mlvigil.webhook_receiver import WebhookReceiver

from ..conftest import JobProcess

pytestmark = pytest.mark.integration


def test_drift_alert_is_delivered_once(broker, topics, tmp_path):
    start = (int(time.time() * 1000) // 60_000 - 8) * 60_000
    models = {}
    for m in synth.MODELS:
        edges = {"age": synth.AGE_EDGES} if m == "recsys" else None
        save_profile(
            build_profile(synth.training_columns(m, 10_000), m, "v1", custom_edges=edges), tmp_path / f"{m}.json"
        )
        models[m] = {"segments": synth.SEGMENTS[m], "profiles": {"v1": str(tmp_path / f"{m}.json")}}
    t = synth.traffic(start, 5, 400, drift_minute=2, seed=21)
    msg = lambda e: (e["request_id"].encode(), orjson.dumps(e), None)  # noqa: E731
    stop = {
        "features": produce(broker.bootstrap, topics["features"], [msg(e) for e in t.features]),
        "predictions": produce(broker.bootstrap, topics["predictions"], [msg(p) for p in t.predictions]),
    }
    with WebhookReceiver() as hook:
        alerting = {
            "use_default_rules": True,
            "receivers": [{"name": "chat", "type": "generic", "url": hook.url}],
            "route": {"by_severity": {"critical": ["chat"], "warning": ["chat"], "info": ["log"]},
                      "group_wait": "30s", "group_interval": "5m"},
            "correlation_window": "2m",
        }  # fmt: skip
        cfg = {
            "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics},
            "models": models,
            "clickhouse": {"url": f"chdb://{tmp_path / 'ch'}"},
            "flink": {"checkpoint_dir": str(tmp_path / "ckpt"), "restart_attempts": 0},
            "alerting": alerting,
        }
        (tmp_path / "config.yaml").write_text(json.dumps(cfg))
        url = f"chdb://{tmp_path / 'ch'}"
        for run in range(2):
            job = JobProcess(tmp_path / "config.yaml", stop, tmp_path / f"job{run}.log")
            try:
                job.wait(240)
            finally:
                job.kill()
            if run == 0:
                first = [m["body"] for m in hook.messages]
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

    stored = clickhouse.query_rows(url, "SELECT notification_id, status FROM mlvigil.alerts FINAL")
    assert (note["id"], "firing") in stored
    delivered = clickhouse.query_rows(
        url, "SELECT DISTINCT notification_id FROM mlvigil.alert_deliveries FINAL WHERE status = 'delivered'"
    )
    assert {r[0] for r in delivered} == {b["id"] for b in first}
