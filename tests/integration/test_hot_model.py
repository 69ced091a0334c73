"""One hot model across task slots, on real components: all traffic belongs to one model, read
from the real broker by the real job at parallelism 1 and at parallelism 2.

The window aggregations run in two phases (Flink's LocalWindowAggregate chained in each source
subtask, then GlobalWindowAggregate hashed by model and version), so one model's events are
aggregated by every source subtask, not by one. Shown from Flink's own metrics (the Prometheus
reporter of the parallelism-2 run): both subtasks of each LocalWindowAggregate took events in,
and together exactly the valid events produced. And the rows must not depend on how the work
was split: feature_metrics, service_metrics and window_events at parallelism 2 equal those at
parallelism 1 in every column.
"""

import json
import math
import re
import threading
import time
import urllib.request
from collections import defaultdict

import orjson
import pytest

from mlvigil import clickhouse, synth
from mlvigil.broker import free_port, partition_of, produce
from mlvigil.profile import build_profile, save_profile

from ..conftest import JobProcess, wait_for

pytestmark = pytest.mark.integration
MIN = 60_000
MODEL = "fraud"
MINUTES = 3
PARTITIONS = 4  # the `topics` fixture: at parallelism 2 each source subtask reads two partitions
# Welford means and M2 of partial aggregates are combined in another order when the work is
# split, so these can differ in the last bits; every other column is exact (counts, and PSI, KS
# and percentiles computed from the same counts and values).
MERGED_FLOATS = {"mean", "std", "score_mean"}
TABLES = {"feature_metrics": ("segment", "feature"), "service_metrics": (), "window_events": ("stream",)}
LOCAL_AGG_IN = re.compile(
    r'^flink_taskmanager_job_task_operator_numRecordsIn\{(?P<labels>[^}]*operator_name="LocalWindowAggregate[^}]*)\}'
    r" (?P<value>\S+)$",
    re.MULTILINE,
)


def _closing_events(at_ms: int) -> tuple[list[dict], list[dict]]:
    """One valid feature and prediction event of the model in every partition at at_ms: moves
    every partition's watermark past the traffic's windows (keys chosen by where they land)."""
    t = synth.traffic(at_ms, 1, 40, models=(MODEL,), seed=3, jitter_ms=0)
    feats, preds, parts = [], [], set()
    for f, p in zip(t.features, t.predictions, strict=True):
        rid = "close-" + f["request_id"]
        part = partition_of(rid.encode(), 0, PARTITIONS)
        if part not in parts:
            parts.add(part)
            feats.append(dict(f, request_id=rid, event_time=at_ms))
            preds.append(dict(p, request_id=rid, event_time=at_ms))
    assert len(parts) == PARTITIONS
    return feats, preds


def _rows(url: str, table: str, before_ms: int) -> dict[tuple, dict]:
    """Every column but computed_at, keyed by window, model, version (and segment, feature, stream)."""
    cols = [
        r[0]
        for r in clickhouse.query_rows(
            url, "SELECT name FROM system.columns WHERE database = 'mlvigil' AND table = {t:String}", {"t": table}
        )
        if r[0] != "computed_at"
    ]
    select = ", ".join(f"toUnixTimestamp64Milli({c})" if c.startswith("window_") else c for c in cols)
    rows = clickhouse.query_rows(
        url,
        f"SELECT {select} FROM mlvigil.{table} FINAL WHERE window_start < fromUnixTimestamp64Milli({{b:Int64}})",
        {"b": before_ms},
    )
    key_cols = ("window_start", "model_id", "model_version", *TABLES[table])
    out = {}
    for r in rows:
        row = dict(zip(cols, r, strict=True))
        out[tuple(row[k] for k in key_cols)] = row
    return out


def _same(column: str, a, b) -> bool:
    if column in MERGED_FLOATS and isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _local_aggregate_inputs(metrics_text: str) -> dict[tuple[str, str], float]:
    """numRecordsIn of every LocalWindowAggregate, by (stream, subtask index)."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for m in LOCAL_AGG_IN.finditer(metrics_text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        stream = next(s for s in ("features", "predictions") if f"{s}_raw" in labels["task_name"])
        out[(stream, labels["subtask_index"])] += float(m.group("value"))
    return out


def test_one_hot_model_splits_across_subtasks_with_identical_rows(broker, topics, tmp_path):
    start = (int(time.time() * 1000) // MIN - MINUTES - 3) * MIN
    profile = tmp_path / f"{MODEL}.json"
    save_profile(build_profile(synth.training_columns(MODEL, 5_000), MODEL, "v1"), profile)
    t = synth.traffic(start, MINUTES, 600, models=(MODEL,), seed=21)
    close_f, close_p = _closing_events(start + (MINUTES + 1) * MIN + 10_000)
    feats, preds = t.features + close_f, t.predictions + close_p
    ends = {
        s: produce(broker.bootstrap, topics[s], [(e["request_id"].encode(), orjson.dumps(e), None) for e in events])
        for s, events in (("features", feats), ("predictions", preds))
    }
    reporter_port = free_port()

    def config(parallelism: int) -> tuple:
        d = tmp_path / f"p{parallelism}"
        d.mkdir()
        cfg = {
            "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics,
                      "group_id": f"{topics['features']}-p{parallelism}"},
            "window": {"size": "1m", "out_of_orderness": "5s", "idle_timeout": "1h"},
            "models": {MODEL: {"segments": synth.SEGMENTS[MODEL], "profiles": {"v1": str(profile)}}},
            "labels": {"enabled": False},
            "alerting": False,
            "clickhouse": {"url": f"chdb://{d / 'ch'}", "flush_interval": "200ms"},
            "flink": {"parallelism": parallelism, "checkpoint_dir": str(d / "ckpt"), "restart_attempts": 0},
            **({"metrics": {"prometheus_port": reporter_port}} if parallelism == 2 else {}),
        }  # fmt: skip
        (d / "config.yaml").write_text(json.dumps(cfg))
        return d / "config.yaml", f"chdb://{d / 'ch'}", d / "job.log"

    # Both runs at once (one budget): parallelism 1 bounded, reading everything produced;
    # parallelism 2 unbounded, as in production, so its metrics can be read while it is up.
    cfg1, url1, log1 = config(1)
    cfg2, url2, log2 = config(2)
    stop = {s: {str(p): o for p, o in e.items()} for s, e in ends.items()}
    job1 = JobProcess(cfg1, stop, log1)
    job2 = JobProcess(cfg2, None, log2)
    metrics: dict[str, str] = {}

    def scrape_last() -> None:  # the reporter's page, kept from the last scrape while the job is up
        while job2.proc.poll() is None and not metrics.get("stop"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{reporter_port}/metrics", timeout=5) as r:
                    metrics["text"] = r.read().decode()
            except OSError:
                pass
            time.sleep(0.5)

    expected_windows = {(s, start + m * MIN) for s in ("features", "predictions") for m in range(MINUTES)}

    def p2_windows_written() -> bool:
        try:
            got = clickhouse.query_rows(
                url2, "SELECT stream, toUnixTimestamp64Milli(window_start) FROM mlvigil.window_events FINAL"
            )
        except Exception:  # the tables are not created yet, or the writer holds the store: retry
            return False
        return expected_windows <= {tuple(r) for r in got}

    scraper = threading.Thread(target=scrape_last, daemon=True)
    scraper.start()
    try:
        job1.wait(600)
        wait_for(p2_windows_written, 600, "the parallelism-2 run's windows in ClickHouse")
        # Every input event has passed the local aggregation once the windows are written;
        # one more scrape after that moment.
        taken = time.monotonic()
        wait_for(lambda: time.monotonic() - taken > 1.5 and "text" in metrics, 30, "a reporter scrape")
        text = metrics["text"]
    finally:
        metrics["stop"] = "1"
        job2.kill()
        job1.kill()

    # 1. Both subtasks of each stream's LocalWindowAggregate took events in, and together exactly
    #    the valid events of that stream (all of them: the model is the only one, none is late).
    local_in = _local_aggregate_inputs(text)
    for stream, events in (("features", feats), ("predictions", preds)):
        per_subtask = {i: local_in.get((stream, i), 0) for i in ("0", "1")}
        assert all(n > 0 for n in per_subtask.values()), (stream, dict(local_in))
        assert sum(per_subtask.values()) == len(events), (stream, per_subtask, len(events))

    # 2. The rows of the windows closed in both runs are identical, column by column.
    closed_before = start + MINUTES * MIN
    for table in TABLES:
        rows1, rows2 = _rows(url1, table, closed_before), _rows(url2, table, closed_before)
        assert rows1 and set(rows1) == set(rows2), (table, sorted(set(rows1) ^ set(rows2))[:5])
        diffs = [
            (key, col, r1[col], rows2[key][col])
            for key, r1 in rows1.items()
            for col in r1
            if not _same(col, r1[col], rows2[key][col])
        ]
        assert not diffs, f"{table}: {len(diffs)} differences, e.g. {diffs[:5]}"
    # The windows hold the whole traffic (one model, every event valid).
    counted = clickhouse.query_rows(
        url1,
        "SELECT stream, sum(events) FROM mlvigil.window_events FINAL"
        " WHERE window_start < fromUnixTimestamp64Milli({b:Int64}) GROUP BY stream",
        {"b": closed_before},
    )
    assert dict(counted) == {"features": len(t.features), "predictions": len(t.predictions)}
