"""The monitor's own health on real components: the real job, unbounded, on the real broker,
with Flink's Prometheus reporter on; a real Prometheus scrapes it every second, and its HTTP
API must show exactly the valid events per stream and model that went in, and every dead
letter by reason. Bad input above the threshold and a configured model that sends nothing
must reach a real webhook receiver as "monitor degraded" and "no data" notifications."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest

from mlvigil import synth
from mlvigil.broker import free_port, partition_of, produce
from mlvigil.profile import build_profile, save_profile
from mlvigil.webhook_receiver import WebhookReceiver

from ..conftest import JobProcess, wait_for

pytestmark = pytest.mark.integration
MIN = 60_000
PROMETHEUS = shutil.which("prometheus")
RULES = Path(__file__).resolve().parents[2] / "configs" / "prometheus" / "mlvigil.rules.yml"
EVENTS_IN = "flink_taskmanager_job_task_operator_mlvigil_stream_model_events_in"
DEAD_LETTERS = "flink_taskmanager_job_task_operator_mlvigil_stream_reason_dead_letters"
PENDING = "flink_taskmanager_job_task_operator_mlvigil_notifications_pending"
FAILED = "flink_taskmanager_job_task_operator_mlvigil_notifications_failed"
SPLIT_WATERMARK = "flink_taskmanager_job_task_operator_split_watermark_currentWatermark"
WATERMARK = "flink_taskmanager_job_task_operator_currentOutputWatermark"
SOURCE_LAG = f'time() * 1000 - max by (operator_name) ({WATERMARK}{{operator_name=~"Source:.*_raw"}})'  # README


class Prometheus:
    """prometheus on loopback, scraping one target every second, its TSDB in a temp dir."""

    def __init__(self, tmp_path, target: str):
        self.port = free_port()
        cfg = tmp_path / "prometheus.yml"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "mlvigil", "static_configs": [{"targets": [target]}]}],
        }
        cfg.write_text(json.dumps(config))
        self.log = tmp_path / "prometheus.log"
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
        )  # fmt: skip
        wait_for(self._ready, 60, "prometheus to be ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        return self.api("query", query=promql)["result"]

    def by(self, promql: str, *labels: str) -> dict[tuple, float]:
        return {tuple(s["metric"].get(k, "") for k in labels): float(s["value"][1]) for s in self.query(promql)}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _messages(events: list[dict], kafka_ms: int | None = None) -> list[tuple]:
    """Keyed messages; Kafka timestamps = event times (a producer stamping at the event) or kafka_ms."""
    return [(e["request_id"].encode(), orjson.dumps(e), kafka_ms or e["event_time"]) for e in events]


def _one_per_partition(start_ms: int) -> tuple[list[dict], list[dict]]:
    """A valid feature and prediction event in every partition at start_ms: moves every
    partition's watermark past the windows before (keys chosen by where they land)."""
    t = synth.traffic(start_ms, 1, 40, models=("fraud",), seed=4, jitter_ms=0)
    feats, preds, parts = [], [], set()
    for f, p in zip(t.features, t.predictions, strict=True):
        part = partition_of(f["request_id"].encode(), 0, 4)
        if part not in parts:
            parts.add(part)
            feats.append(dict(f, event_time=start_ms))
            preds.append(dict(p, event_time=start_ms))
    assert parts == {0, 1, 2, 3}
    return feats, preds


def test_health_metrics_in_prometheus_and_monitor_alerts(broker, topics, tmp_path, monkeypatch):
    assert PROMETHEUS, "prometheus is not installed: run scripts/setup.sh"
    start = (int(time.time() * 1000) // MIN - 8) * MIN
    models = {}
    for m in (*synth.MODELS, "silent"):  # "silent" is configured and never sends anything
        base = "fraud" if m == "silent" else m
        edges = {"age": synth.AGE_EDGES} if m == "recsys" else None
        path = tmp_path / f"{m}.json"
        save_profile(build_profile(synth.training_columns(base, 2_000), m, "v1", custom_edges=edges), path)
        models[m] = {"segments": synth.SEGMENTS[base], "profiles": {"v1": str(path)}}

    # Phase 1: minutes 0-4 of valid traffic, and bad input: 60 invalid events of three kinds,
    # arriving in minute 1 (Kafka time start + 90 s, among the valid events).
    traffic = synth.traffic(start, 5, 100, seed=8)

    def event(i: int, model: str, **fields) -> bytes:
        return orjson.dumps({"request_id": f"b{i}", "model_id": model, "model_version": "v1",
                             "event_time": start + 90_000, **fields})  # fmt: skip

    bad = {
        ("features", "malformed_json"): [b'{"request_id": "b", "model_id": "recsys"'] * 30,
        ("features", "unknown_model"): [event(i, "nope", features={}) for i in range(20)],
        ("predictions", "wrong_type"): [event(i, "fraud", score="high") for i in range(10)],
    }
    bad_at = start + 90_000
    phase1 = {
        s: sorted(_messages(events) + [(None, raw, bad_at) for (b, _), raws in bad.items() if b == s for raw in raws],
                  key=lambda m: m[2])
        for s, events in (("features", traffic.features), ("predictions", traffic.predictions))
    }  # fmt: skip
    # Phase 2, once minutes 0-3 are counted: late copies of minute-0 events, then an event in
    # every partition at minute 6 + 10 s, which closes minutes 4 and 5 (5 has no data at all).
    late_f = [dict(e, request_id=f"late-f{i}") for i, e in enumerate(traffic.features[:20])]
    late_p = [dict(p, request_id=f"late-p{i}") for i, p in enumerate(traffic.predictions[:10])]
    assert all(e["event_time"] < start + MIN for e in late_f + late_p)
    late_at = start + 4 * MIN + 30_000  # they arrive in minute 4
    tail_f, tail_p = _one_per_partition(start + 6 * MIN + 10_000)

    def valid_counts(minutes: int) -> Counter:
        c: Counter = Counter()
        for stream, events in (("features", traffic.features), ("predictions", traffic.predictions)):
            c.update((stream, e["model_id"]) for e in events if e["event_time"] < start + minutes * MIN)
        return c

    reporter_port = free_port()
    monkeypatch.setenv("HM_HOOK_TOKEN", "hm-secret-token-4711")
    prom = None
    with WebhookReceiver() as hook:
        cfg = {
            "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics,
                      "group_id": topics["features"]},
            "window": {"size": "1m", "out_of_orderness": "5s", "idle_timeout": "1h"},
            "models": models,
            "labels": {"enabled": False},
            "clickhouse": {"url": f"chdb://{tmp_path / 'ch'}"},
            "flink": {"checkpoint_dir": str(tmp_path / "ckpt"), "restart_attempts": 0},
            "metrics": {"prometheus_port": reporter_port},
            "alerting": {
                "use_default_rules": True,
                "receivers": [{"name": "chat", "type": "generic", "url": hook.url + "?token=${HM_HOOK_TOKEN}"}],
                "route": {"by_severity": {"critical": "chat", "warning": "chat", "info": "log"},
                          "group_wait": "0s", "group_interval": "1m"},
            },
        }  # fmt: skip
        (tmp_path / "config.yaml").write_text(json.dumps(cfg))
        produce(broker.bootstrap, topics["features"], phase1["features"])
        produce(broker.bootstrap, topics["predictions"], phase1["predictions"])
        job = JobProcess(tmp_path / "config.yaml", None, tmp_path / "job.log")
        try:
            prom = Prometheus(tmp_path, f"127.0.0.1:{reporter_port}")
            events_in = f"sum by (stream, model) ({EVENTS_IN})"

            def counted(expected: Counter):
                assert job.proc.poll() is None, f"the job ended:\n{job.tail()}"
                got = prom.by(events_in, "stream", "model")
                return got if got == {k: float(v) for k, v in expected.items()} else None

            wait_for(lambda: counted(valid_counts(4)), 180, "minutes 0-3 counted in Prometheus", interval=0.5)
            produce(broker.bootstrap, topics["features"], _messages(late_f, late_at))
            produce(broker.bootstrap, topics["predictions"], _messages(late_p, late_at))
            produce(broker.bootstrap, topics["features"], _messages(tail_f))
            produce(broker.bootstrap, topics["predictions"], _messages(tail_p))
            wait_for(lambda: counted(valid_counts(5)), 120, "minutes 0-4 counted in Prometheus", interval=0.5)

            expected_dead = {k: float(len(v)) for k, v in bad.items()}
            expected_dead |= {("features", "late"): 20.0, ("predictions", "late"): 10.0}
            dead = f"sum by (stream, reason) ({DEAD_LETTERS})"
            wait_for(lambda: prom.by(dead, "stream", "reason") == expected_dead, 60, "dead letters in Prometheus", 1)

            def notified(rule: str, model: str) -> list[dict]:
                return [
                    m["body"] for m in hook.messages
                    if m["body"]["status"] == "firing" and m["body"]["group_labels"].get("model_id") == model
                    and any(a["labels"]["alertname"] == rule for a in m["body"]["alerts"])
                ]  # fmt: skip

            wait_for(lambda: notified("monitor_degraded_invalid", "*"), 60, "a monitor degraded notification", 0.5)
            wait_for(lambda: notified("monitor_degraded_late", "*"), 60, "a late-events notification", 1)
            wait_for(lambda: notified("no_data", "silent"), 60, "a no-data notification for the silent model", 1)
            wait_for(lambda: prom.query(PENDING), 30, "the notification gauges in Prometheus", 1)

            # The counters stay exact (nothing counted twice) once everything has been seen.
            assert prom.by(events_in, "stream", "model") == {k: float(v) for k, v in valid_counts(5).items()}
            assert prom.by(dead, "stream", "reason") == expected_dead
            assert prom.by(f"sum({FAILED})") == {(): 0.0}
            # Watermark per source and partition, and its lag behind the wall clock per source:
            # Flink's own gauges, read where the watermark is made (the Kafka source).
            wm = tail_f[0]["event_time"] - 5_000  # the newest event time - out_of_orderness
            splits = prom.by(f"max by (split) ({SPLIT_WATERMARK})", "split")
            assert splits == {
                (f"{topics[s]}_{p}".replace(".", "_"),): float(wm)
                for s in ("features", "predictions")
                for p in range(4)
            }
            # Lag = wall clock - the source's watermark, at query time. (Flink's watermarkLag gauge
            # is the lag at the last record emitted: it does not grow when the input stops.)
            assert prom.by(
                f'max by (operator_name) ({WATERMARK}{{operator_name=~"Source:.*_raw"}})', "operator_name"
            ) == {
                (f"Source:_KafkaSource_default_catalog_default_database_{s}_raw",): float(wm)
                for s in ("features", "predictions")
            }
            before = time.time() * 1000
            lag = prom.by(SOURCE_LAG, "operator_name")
            after = time.time() * 1000
            assert len(lag) == 2 and all(before - wm - 1 <= v <= after - wm + 1 for v in lag.values()), lag
            # The shipped Prometheus rules evaluate without errors on the real metrics; the job is up.
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            assert len(rules) == 9 and all(r["health"] == "ok" for r in rules), rules
            assert prom.query("mlvigil:input_events:rate5m") and not prom.query('ALERTS{alertname="MlvigilDown"}')
            with urllib.request.urlopen(f"http://127.0.0.1:{reporter_port}/metrics", timeout=10) as r:
                scraped = r.read().decode()
        finally:
            job.kill()
            if prom is not None:
                prom.stop()

    # Only the silent model has no data; the others sent in every window.
    assert not notified("no_data", "fraud") and not notified("no_data", "recsys")
    # Bad input counts in the window it arrived in (Kafka time): minute 1 has 400 valid events
    # and the 60 invalid ones, minute 4 400 valid and the 30 late ones.
    for rule, window_end, share in (("monitor_degraded_invalid", start + 2 * MIN, 60 / 460),
                                    ("monitor_degraded_late", start + 5 * MIN, 30 / 430)):  # fmt: skip
        notes = notified(rule, "*")
        assert len(notes) == 1, notes
        (alert,) = [a for a in notes[0]["alerts"] if a["labels"]["alertname"] == rule]
        assert alert["labels"]["layer"] == "monitor"
        assert (alert["starts_ms"], alert["value"]) == (window_end, pytest.approx(share, rel=1e-12))
    assert "hm-secret-token-4711" not in scraped
    assert "hm-secret-token-4711" not in json.dumps([m["body"] for m in hook.messages])
