"""Health of the monitor itself: Prometheus metrics and the per-window `monitor` rows.

Two ways the monitor shows how it is doing:

* Metrics, through Flink's Prometheus reporter (`metrics.prometheus_port` in the job config):
  Flink's own (watermarks, records, restarts, checkpoints, back pressure) plus mlvigil's
  counters from the Python operators (HealthCounters below; names in README "Health of the
  monitor").
* `monitor` rows for the alerting engine (MonitorAccounting below): per event-time window, for
  every configured model, its valid events (zero included, so "no data" can fire), and one
  "all models" row (model_id "*") with the dead letters whose Kafka time falls in the window
  and their shares of the input ("monitor degraded").
"""

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from mlvigil.alert_operators import END_OF_INPUT

log = logging.getLogger(__name__)

PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
TOTAL = "*"
"""model_id of the all-models monitor row."""
WINDOW_STREAMS = ("features", "predictions")
"""Streams whose valid events are counted per window (labels have no window_events rows)."""
STREAM_EVENTS = {"features": "feature_events", "predictions": "prediction_events"}
MAX_GAP_WINDOWS = 1000
"""At most this many windows are emitted at once when event time jumps (older ones are skipped)."""
MAX_AHEAD_MS = 86_400_000
"""A dead letter's Kafka timestamp further than this past the watermark counts in the next window."""


# -- the reporter in Flink's local mode --------------------------------------------------------


def prometheus_reporter_jar() -> Path | None:
    """The Prometheus reporter jar that ships in the PyFlink wheel (plugins/metrics-prometheus)."""
    import pyflink

    for home in pyflink.__path__:
        jars = sorted(Path(home, "plugins", "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))
        if jars:
            return jars[0]
    return None


def reporter_on_local_classpath() -> None:
    """Flink's local mini-cluster (`mlvigil run`) loads no plugins: its reporters must be on the
    JVM's classpath. PyFlink's launcher appends HADOOP_CLASSPATH to it, so the reporter jar goes
    there, before the JVM starts. A cluster loads the reporter from its own plugins/ directory
    and its own config (reporters are set per cluster, not per job)."""
    jar = prometheus_reporter_jar()
    if jar is None:
        log.warning("metrics.prometheus_port is set but the PyFlink wheel has no Prometheus reporter jar")
        return
    parts = [p for p in os.environ.get("HADOOP_CLASSPATH", "").split(os.pathsep) if p]
    if str(jar) not in parts:
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join([*parts, str(jar)])


# -- counters in the Python operators ---------------------------------------------------------


class HealthCounters:
    """mlvigil's counters in one operator's Flink metric group (exported by the reporter as
    flink_taskmanager_job_task_operator_mlvigil_<keys>_<name>{<key>="value", ...}).

    Python never sees single events; it counts what the windows and dead letters carry. Counters
    start at 0 with each (re)start of the operator: use rate()/increase() in Prometheus."""

    def __init__(self, group):
        self.group = group.add_group("mlvigil")
        self.counters: dict[tuple, object] = {}

    def _counter(self, name: str, labels: tuple[tuple[str, str], ...]):
        key = (name, labels)
        c = self.counters.get(key)
        if c is None:
            g = self.group
            for k, v in labels:
                g = g.add_group(k, v)
            c = self.counters[key] = g.counter(name)
        return c

    def window_events(self, stream: str, model: str, events: int) -> None:
        """Valid events of a finished window (stream features/predictions)."""
        self._counter("events_in", (("stream", stream), ("model", model or ""))).inc(int(events))

    def dead_letter(self, stream: str, reason: str) -> None:
        """One dead letter (invalid, late, orphan or duplicate label) by its reason code."""
        self._counter("dead_letters", (("stream", stream or ""), ("reason", reason or ""))).inc(1)


# -- monitor rows for the alerting engine -------------------------------------------------------


def _new_state() -> dict:
    return {"windows": {}, "dead": {}, "emitted": None}


def window_event_count(state: dict, stream: str, model: str, window_end_ms: int, events: int) -> None:
    w = state["windows"].setdefault(str(int(window_end_ms)), {})
    key = f"{stream}|{model}"
    w[key] = w.get(key, 0) + int(events)


def dead_letter_window(state: dict, kafka_ms: int | None, window_ms: int, watermark_ms: int | None) -> int | None:
    """The window (end, ms) a dead letter counts in: the one its Kafka timestamp falls in, so a
    replay after a restart counts it in the same window (the engine's notifications depend only
    on their input). Not a window already emitted (a timestamp behind the watermark: the next
    window), nor one more than MAX_AHEAD_MS past the watermark (a producer clock far ahead would
    hold it back for ever: the window after the watermark). None: before any window and watermark."""
    next_open = None if state["emitted"] is None else state["emitted"] + window_ms
    if watermark_ms is not None:
        after_wm = watermark_ms - watermark_ms % window_ms + window_ms
        next_open = after_wm if next_open is None else max(next_open, after_wm)
    if kafka_ms is None or kafka_ms < 0:
        return next_open
    end = kafka_ms - kafka_ms % window_ms + window_ms
    if next_open is not None and end < next_open:
        return next_open
    if watermark_ms is not None and end > watermark_ms + MAX_AHEAD_MS:
        return next_open
    return end


def dead_letter_count(state: dict, stream: str, kind: str, model: str | None, window_end_ms: int | None) -> None:
    """kind: invalid, late, orphan_label, duplicate_label (the dead letter's kind column).
    window_end_ms None: the first window emitted."""
    w = state["dead"].setdefault("first" if window_end_ms is None else str(int(window_end_ms)), {})
    key = f"{stream}|{kind}|{model or ''}"
    w[key] = w.get(key, 0) + 1


def monitor_rows(models: Iterable[str], window_ms: int, window_end_ms: int, counts: dict, dead: dict) -> list[dict]:
    """The monitor rows of one window: one per model (valid events, its dead letters) and the
    all-models row (input = valid + feature/prediction dead letters, and the ratios)."""
    start = window_end_ms - window_ms
    base = {
        "layer": "monitor",
        "model_version": "*",
        "segment": "*",
        "window_start": start,
        "window_end": window_end_ms,
    }
    per_model: dict[str, dict] = {}
    for m in models:
        per_model[m] = {**base, "model_id": m, "events": 0, "feature_events": 0, "prediction_events": 0,
                        "dead_letters": 0, "late": 0}  # fmt: skip
    valid = 0
    for key, n in counts.items():
        stream, model = key.split("|", 1)
        valid += n
        if model in per_model:
            per_model[model]["events"] += n
            per_model[model][STREAM_EVENTS[stream]] += n
    late = invalid = label_dead = 0
    for key, n in dead.items():
        stream, kind, model = key.split("|", 2)
        if model in per_model:
            per_model[model]["dead_letters"] += n
            per_model[model]["late"] += n if kind == "late" else 0
        if stream not in WINDOW_STREAMS:
            label_dead += n
        elif kind == "late":
            late += n
        else:
            invalid += n
    total_in = valid + late + invalid

    def ratio(n: int) -> float | None:
        return n / total_in if total_in else None

    total = {
        **base, "model_id": TOTAL, "input_events": total_in, "valid_events": valid, "late": late,
        "invalid": invalid, "dead_letters": late + invalid, "label_dead_letters": label_dead,
        "late_ratio": ratio(late), "invalid_ratio": ratio(invalid), "dead_letter_ratio": ratio(late + invalid),
    }  # fmt: skip
    return [*per_model.values(), total]


def emit_due(state: dict, models: list[str], window_ms: int, upto_ms: int) -> list[dict]:
    """Monitor rows of every window ending after the last emitted one and at or before upto_ms,
    in window order, windows without any data included (zero counts)."""
    upto = upto_ms - upto_ms % window_ms
    if state["emitted"] is not None:
        first = state["emitted"] + window_ms
    else:
        known = [int(k) for table in ("windows", "dead") for k in state[table] if k != "first" and int(k) <= upto]
        first = min(known, default=upto)
    if first > upto:
        return []
    n = (upto - first) // window_ms + 1
    if n > MAX_GAP_WINDOWS:
        log.warning("event time jumped %d windows: monitor rows of the oldest %d are skipped", n, n - MAX_GAP_WINDOWS)
        first = upto - (MAX_GAP_WINDOWS - 1) * window_ms
    rows: list[dict] = []
    for end in range(first, upto + 1, window_ms):
        counts = state["windows"].pop(str(end), {})
        dead = state["dead"].pop(str(end), {})
        if end == first:
            for key, v in state["dead"].pop("first", {}).items():
                dead[key] = dead.get(key, 0) + v
        rows += monitor_rows(models, window_ms, end, counts, dead)
    for table in ("windows", "dead"):  # older than an emitted window (skipped above): dropped
        for k in [k for k in state[table] if k != "first" and int(k) <= upto]:
            del state[table][k]
    state["emitted"] = upto
    return rows


class MonitorAccounting(KeyedProcessFunction):
    """finished (table, rows) -> (model_id, window_end_ms, [monitor row]) for the AlertProcessor,
    one batch per model and window once the watermark has passed the window end.

    Runs under one key (all accounting in one small JSON state). A window's window_events rows
    arrive before the watermark passes its end (Flink emits window results first), so at that
    timer its counts are complete; windows in between without any data get zero rows. Dead
    letters count in the window of their Kafka timestamp (when they entered the pipeline: a late
    event's own window is closed already, an invalid one may have no event time at all), see
    dead_letter_window."""

    def __init__(self, models: list[str], window_ms: int):
        self.models = sorted(models)
        self.window_ms = int(window_ms)

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("monitor_accounting", Types.STRING()))

    def _load(self) -> dict:
        raw = self.state.value()
        return json.loads(raw) if raw else _new_state()

    def process_element(self, value, ctx):
        table, rows = value
        st = self._load()
        ts = ctx.timer_service()
        if table == "window_events":
            for r in rows:  # WINDOW_EVENT_COLUMNS: window_start, window_end, stream, model_id, ...
                end = int(r[1].timestamp() * 1000)
                window_event_count(st, r[2], r[3], end, r[5])
                ts.register_event_time_timer(end)
        elif table == "dead_letters":
            wm = ts.current_watermark()
            watermark = wm if wm > -(2**62) else None  # None before the first watermark
            for r in rows:  # DEAD_LETTER_COLUMNS: stream, kind, ..., kafka_ts, event_time, model_id, ...
                kafka_ms = None if r[7] is None else int(r[7].timestamp() * 1000)
                end = dead_letter_window(st, kafka_ms, self.window_ms, watermark)
                dead_letter_count(st, r[0], r[1], r[9], end)
                if end is not None:
                    ts.register_event_time_timer(end)
        ts.register_event_time_timer(END_OF_INPUT - 1)
        self.state.update(json.dumps(st, separators=(",", ":")))
        return iter(())

    def on_timer(self, timestamp, ctx):
        st = self._load()
        if timestamp >= END_OF_INPUT - 1:  # the end of a bounded run: every window still held
            ends = [int(k) for table in ("windows", "dead") for k in st[table] if k != "first"]
            rows = emit_due(st, self.models, self.window_ms, max(ends)) if ends else []
        else:
            rows = emit_due(st, self.models, self.window_ms, timestamp)
        self.state.update(json.dumps(st, separators=(",", ":")))
        by_key: dict[tuple[str, int], list[dict]] = {}
        for r in rows:
            by_key.setdefault((r["model_id"], r["window_end"]), []).append(r)
        for (model, end), batch in by_key.items():
            yield model, end, batch


ACCOUNTED_TABLES = ("window_events", "dead_letters")


def monitor_stream(finished: DataStream, catalog: dict, window_ms: int) -> DataStream:
    """The monitor rows, in AlertInput's output form, from FinishRows' (table, rows) stream."""
    return (
        finished.filter(lambda v: v[0] in ACCOUNTED_TABLES)
        .name("monitor input")
        .key_by(lambda _: 0, key_type=Types.INT())
        .process(MonitorAccounting(list(catalog["models"]), window_ms), output_type=Types.PICKLED_BYTE_ARRAY())
        .name("monitor accounting")
    )
