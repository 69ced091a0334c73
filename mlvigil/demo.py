"""`mlvigil demo`: the whole loop on one machine, nothing to install.

A local Kafka-protocol broker, reference profiles from synthetic training data, traffic for
two models with drift injected into one mid-stream, the monitor job on Flink's local
mini-cluster (bounded at the produced offsets so it ends by itself), and the per-minute
metrics read back from the embedded ClickHouse.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import orjson

from mlvigil import clickhouse, synth
from mlvigil.broker import LocalBroker, produce
from mlvigil.jars import MissingJarsError, job_jars
from mlvigil.profile import build_profile, save_profile
from mlvigil.webhook_receiver import WebhookReceiver

BAD_EVENTS = [
    b'{"request_id": "bad-1", "model_id": "recsys", "model_version": "v1", "event_time": ',  # truncated JSON
    b'{"request_id": "bad-2", "model_id": "no-such-model", "model_version": "v1", "event_time": "2026-01-01T00:00:00Z", "features": {}}',
    b'{"request_id": "bad-3", "model_id": "recsys", "model_version": "v1", "features": {"age": 30}}',
    b'[1, 2, 3]',
]  # fmt: skip


def say(step: str, text: str) -> None:
    print(f"[{step}] {text}", flush=True)


def write_profiles(workdir: Path, training_rows: int = 20_000) -> dict[str, Path]:
    """Profiles from labelled training data: they keep the models' reference quality, which the
    default accuracy and recall rules compare each window with."""
    paths = {}
    for model in synth.MODELS:
        edges = {"age": synth.AGE_EDGES} if model == "recsys" else None
        cols = synth.training_columns(model, training_rows)
        cols["label"] = synth.training_labels(cols)
        p = build_profile(cols, model, "v1", custom_edges=edges, label_column="label",
                          positive_label=synth.POSITIVE_LABEL[model])  # fmt: skip
        paths[model] = workdir / "profiles" / f"{model}-v1.json"
        save_profile(p, paths[model])
    return paths


def alerting_config(webhook_url: str) -> dict:
    """The article's default rules (no rules of its own), sent to a local "chat"."""
    return {
        "receivers": [{"name": "chat", "type": "generic", "url": webhook_url}],
        "route": {"by_severity": {"critical": ["chat"], "warning": ["chat"], "info": ["log"]},
                  "group_wait": "30s", "group_interval": "5m"},
        "correlation_window": "3m",
    }  # fmt: skip


def write_config(workdir: Path, bootstrap: str, profiles: dict[str, Path], webhook_url: str) -> Path:
    cfg = {
        "kafka": {"bootstrap_servers": bootstrap, "startup_mode": "earliest-offset", "group_id": "mlvigil-demo"},
        "window": {"size": "1m", "out_of_orderness": "5s"},
        "models": {
            model: {
                "segments": synth.SEGMENTS[model],
                "profiles": {"v1": str(profiles[model].resolve())},
                "positive_label": synth.POSITIVE_LABEL[model],
            }
            for model in synth.MODELS
        },
        "labels": {"lateness": "3d"},
        "alerting": alerting_config(webhook_url),
        "clickhouse": {"url": f"chdb://{(workdir / 'clickhouse').resolve()}", "flush_interval": "500ms"},
        "flink": {"parallelism": 1, "checkpoint_dir": str((workdir / "checkpoints").resolve())},
    }
    path = workdir / "config.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def run_job(config: Path, stop_offsets: dict, log_path: Path) -> None:
    """The job as `mlvigil run` runs it (the installed package's mlvigil.jobs.monitor), logging to log_path."""
    cmd = [sys.executable, "-m", "mlvigil.jobs.monitor", "--config", str(config),
           "--stop-offsets", json.dumps(stop_offsets)]  # fmt: skip
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"the job failed (exit {rc}); see {log_path}")
    say("job", f"finished in {time.monotonic() - t0:.1f} s")


def show_results(url: str) -> None:
    rows = clickhouse.query_rows(
        url,
        """SELECT formatDateTime(window_start, '%H:%i') AS minute, feature, psi
           FROM mlvigil.feature_metrics FINAL
           WHERE model_id = 'recsys' AND segment = '*' AND feature NOT LIKE 'prediction:%'
           ORDER BY window_start, feature""",
    )
    features = sorted({r[1] for r in rows})
    minutes = sorted({r[0] for r in rows})
    psi = {(r[0], r[1]): r[2] for r in rows}
    print("\nPSI per minute, model recsys, all traffic (* = above 0.2, significant drift):")
    print("minute  " + "".join(f"{f:>20}" for f in features))
    for m in minutes:
        cells = []
        for f in features:
            v = psi.get((m, f))
            cells.append(f"{'-' if v is None else f'{v:.4f}'}{'*' if v is not None and v > 0.2 else ' '}".rjust(20))
        print(f"{m}   " + "".join(cells))
    svc = clickhouse.query_rows(
        url,
        """SELECT model_id, sum(requests), round(avg(error_rate) * 100, 2), round(max(latency_p95), 1),
                  round(max(latency_p99), 1)
           FROM mlvigil.service_metrics FINAL GROUP BY model_id ORDER BY model_id""",
    )
    print("\nservice layer: model, requests, mean error rate %, worst p95 ms, worst p99 ms")
    for r in svc:
        print("  ", *r)
    acc = clickhouse.query_rows(
        url,
        """SELECT formatDateTime(window_start, '%H:%i'), labelled, accuracy, ctr
           FROM mlvigil.quality_metrics FINAL
           WHERE model_id = 'recsys' AND segment = '*' ORDER BY window_start""",
    )
    print("\nmodel layer, recsys: accuracy per minute from the late-arriving labels (clicks)")
    print("minute  labelled  accuracy    ctr")
    for m, n, a, c in acc:
        print(f"{m}   {n:8}  {'-' if a is None else f'{a:.3f}':>8}  {'-' if c is None else f'{c:.3f}':>6}")
    dl = clickhouse.query_rows(
        url,
        "SELECT kind, reason_code, count() FROM mlvigil.dead_letters FINAL GROUP BY kind, reason_code ORDER BY kind, reason_code",
    )
    print("\ndead letters (kept with their reason, payload and offset for replay):")
    for r in dl:
        print(f"   {r[0]:8} {r[1]:18} {r[2]}")


def print_notification(msg: dict) -> None:
    body = msg["body"]
    print(
        f"\n[chat] {body.get('title')}\n" + "\n".join("       " + line for line in str(body.get("text")).splitlines()),
        flush=True,
    )


def main(workdir: Path, minutes: int, per_minute: int, drift_minute: int) -> int:
    try:
        job_jars()  # before starting anything: a missing jar is named with the command that provides it
    except MissingJarsError as e:
        print(f"mlvigil demo: {e}", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    for old in ("clickhouse", "checkpoints"):
        subprocess.run(["rm", "-rf", str(workdir / old)], check=True)
    hook = WebhookReceiver(on_message=print_notification)
    with LocalBroker(log_file=workdir / "broker.log") as broker, hook:
        say("1/5", f"local Kafka-protocol broker (Tansu) on {broker.bootstrap}")
        for topic in ("mlvigil.features", "mlvigil.predictions", "mlvigil.labels", "mlvigil.dead-letters"):
            broker.create_topic(topic)
        say("2/5", "reference profiles from synthetic training data (recsys age bins = the article's buckets)")
        profiles = write_profiles(workdir)
        config = write_config(workdir, broker.bootstrap, profiles, hook.url)
        start = (int(time.time() * 1000) // 60_000 - minutes - 1) * 60_000
        t = synth.traffic(start, minutes, per_minute, drift_minute=drift_minute)
        late = dict(t.features[0], request_id="late-1", event_time=start + 30_000)
        say("3/5", f"producing {minutes} minutes x {per_minute} events/model/minute with labels arriving late;"
                   f" drift in recsys from minute {drift_minute} (ages 40/30/20/10 % -> 20/40/30/10 %, browsing"
                   f" 10 -> 2 min, clicks no longer follow the score), {len(BAD_EVENTS)} invalid events, 1 late one")  # fmt: skip
        msg = lambda e: (e["request_id"].encode(), orjson.dumps(e), e["event_time"])  # noqa: E731
        ends = {
            "features": produce(
                broker.bootstrap,
                "mlvigil.features",
                [msg(e) for e in t.features] + [(None, b, None) for b in BAD_EVENTS] + [msg(late)],
            ),  # fmt: skip
            "predictions": produce(broker.bootstrap, "mlvigil.predictions", [msg(e) for e in t.predictions]),
            "labels": produce(
                broker.bootstrap,
                "mlvigil.labels",
                [msg(e) for e in synth.labels(t.predictions, start, drift_minute=drift_minute)],
            ),  # fmt: skip
        }
        say("4/5", "running the monitor job on Flink's local mini-cluster (it stops at the produced offsets);"
                   f" alerts go to a local chat webhook at {hook.url}")  # fmt: skip
        run_job(config, ends, workdir / "job.log")
        if not hook.messages:
            raise SystemExit("no alert reached the webhook; see the job log")
    say("5/5", f"results from the embedded ClickHouse at {workdir / 'clickhouse'}")
    show_results(f"chdb://{(workdir / 'clickhouse').resolve()}")
    return 0
