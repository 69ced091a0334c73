"""The job's ClickHouse side, in Python: per-window finishing and a batching writer.

These classes are Flink functions (the only Flink glue in the package besides jobs/); the math
they call lives in mlvigil.finalize and mlvigil.stattests.
"""

import hashlib
import logging
import threading
import weakref
from collections import defaultdict
from datetime import UTC, datetime

import orjson
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.functions import FlatMapFunction
from pyflink.datastream.state import ListStateDescriptor

from mlvigil import clickhouse
from mlvigil.alert_operators import ALERT_COLUMNS
from mlvigil.catalog import DEAD_LETTER_PREFIX_BYTES
from mlvigil.finalize import (
    DEAD_LETTER_COLUMNS,
    FEATURE_COLUMNS,
    SERVICE_COLUMNS,
    WINDOW_EVENT_COLUMNS,
    now_utc,
    service_row,
    window_rows,
)
from mlvigil.flush_schedule import FlushSchedule
from mlvigil.health import HealthCounters
from mlvigil.quality import QUALITY_COLUMNS, quality_rows

log = logging.getLogger(__name__)


def _utc(dt: datetime | None) -> datetime | None:
    # The job runs with table.local-time-zone = UTC, so naive timestamps are UTC.
    return None if dt is None else dt.replace(tzinfo=UTC)


class FinishRows(FlatMapFunction):
    """A job_outputs row -> (table, rows) batches for the writer."""

    def __init__(self, catalog: dict):
        self.catalog = catalog
        self.health: HealthCounters | None = None
        # Dead letters read from files have no Kafka offset: numbered here instead, per subtask
        # (offset = n * subtasks + subtask), so each keeps its own row in dead_letters (keyed by
        # topic = the file, partition, offset) and none is dropped at insert.
        self.file_dead_letters = 0
        self.subtask, self.subtasks = 0, 1

    def open(self, ctx: RuntimeContext):
        self.health = HealthCounters(ctx.get_metrics_group())  # README "Health of the monitor"
        self.subtask, self.subtasks = ctx.get_index_of_this_subtask(), ctx.get_number_of_parallel_subtasks()

    def flat_map(self, r):
        now = now_utc()
        kind = r["kind"]
        if kind == "dead_letter":
            if self.health is not None:
                self.health.dead_letter(r["dl_stream"], r["reason_code"])
            ev, offset, kafka_time = r["event_ms"], r["kafka_offset"], _utc(r["kafka_time"])
            if offset is None:  # from a file (020_source_file.sql)
                offset = self.file_dead_letters * self.subtasks + self.subtask
                self.file_dead_letters += 1
                kafka_time = now if kafka_time is None else kafka_time
            yield (
                "dead_letters",
                [[
                    r["dl_stream"], r["dl_kind"], r["reason_code"], r["reason"], r["topic"],
                    r["kafka_partition"], offset, kafka_time,
                    None if ev is None else datetime.fromtimestamp(ev / 1000, UTC),
                    r["model_id"], bytes(r["payload"] or b"").decode("utf-8", errors="replace"), now,
                ]],
            )  # fmt: skip
            return
        ws, we = _utc(r["window_start"]), _utc(r["window_end"])
        model, version = r["model_id"], r["model_version"]
        if kind == "quality":
            yield ("quality_metrics", quality_rows(r["stats"], ws, we, model, version, r["events"], now))
            return
        if self.health is not None:
            self.health.window_events(kind, model, r["events"])
        rows = window_rows(r["stats"], self.catalog, kind, ws, we, model, version, now)
        yield ("feature_metrics", rows)
        yield ("window_events", [[ws, we, kind, model, version, r["events"], now]])
        if kind == "predictions":
            yield (
                "service_metrics",
                [service_row(ws, we, model, version, r["events"], r["errors"], r["latency_percentiles"], rows, now)],
            )


def dead_letter_json(r, max_bytes: int = 1_000_000) -> str:
    """A dead letter as the JSON message of the dead-letter topic, at most max_bytes long (UTF-8):
    a longer one keeps the first DEAD_LETTER_PREFIX_BYTES of its payload, with the payload's
    length and sha256 (payload_truncated), so no dead letter can exceed the broker's limit."""
    payload = bytes(r["payload"] or b"")
    doc = {
        "stream": r["dl_stream"],
        "kind": r["dl_kind"],
        "reason_code": r["reason_code"],
        "reason": (r["reason"] or "")[:DEAD_LETTER_PREFIX_BYTES],
        "topic": r["topic"],
        "partition": r["kafka_partition"],
        "offset": r["kafka_offset"],
        "kafka_time": None if r["kafka_time"] is None else _utc(r["kafka_time"]).isoformat(),
        "event_ms": r["event_ms"],
        "model_id": None if r["model_id"] is None else r["model_id"][:DEAD_LETTER_PREFIX_BYTES],
        "payload": payload.decode("utf-8", errors="replace"),
    }
    out = orjson.dumps(doc)
    keep = DEAD_LETTER_PREFIX_BYTES
    while len(out) > max_bytes and keep > 0:
        # Escaping can make a payload up to 6x longer (\u0000): cut the bytes until it fits.
        doc["payload"] = payload[:keep].decode("utf-8", errors="replace")
        doc["payload_truncated"] = True
        doc["payload_length"] = len(payload)
        doc["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        out = orjson.dumps(doc)
        keep //= 2
    return out.decode()


COLUMNS = {
    "feature_metrics": FEATURE_COLUMNS,
    "service_metrics": SERVICE_COLUMNS,
    "window_events": WINDOW_EVENT_COLUMNS,
    "dead_letters": DEAD_LETTER_COLUMNS,
    "quality_metrics": QUALITY_COLUMNS,
    **ALERT_COLUMNS,
}


class ClickHouseWriter(KeyedProcessFunction):
    """Buffers (table, rows) in keyed state and writes them in batches.

    The buffer is Flink state, so rows accepted before a checkpoint are written after a restore
    (at least once; the ReplacingMergeTree keys make the replay harmless). A flush happens on a
    processing-time timer (flush_interval) and on the next watermark.

    The end of a bounded run: PyFlink 2.3 does not fire timers that the last bundle before the
    final watermark registers (seen under load: the last windows were never written). So the
    writer also keeps, in memory, the rows it has accepted and not yet written, and
    write_leftovers() writes them when the operator closes and when the local job has finished
    (jobs/monitor.py calls it; in Flink's local mode the Python operators run in the driver).

    An unavailable store (held by another process, full disk, server down): the flush waits in
    clickhouse.run, retrying with backoff, for as long as the outage lasts (or give_up_after_ms,
    then the job fails). While it waits the operator takes no input, which is Flink's
    backpressure: the sources stop reading, Kafka keeps the rest, nothing piles up in memory.
    Checkpoints wait too (their barrier queues behind the blocked input) and complete once the
    store is back. Metrics (Flink, this operator's group): store_retries, store_outages,
    store_unavailable_seconds, store_rows_written. Python metrics reach Flink when a bundle
    ends, so during an outage they stand still; the log says it at once (clickhouse.py).
    """

    def __init__(self, url: str, database: str, flush_interval_ms: int, give_up_after_ms: int | None = None):
        self.url = url
        self.database = database
        self.flush_interval_ms = flush_interval_ms
        self.give_up_after_ms = give_up_after_ms

    def open(self, ctx: RuntimeContext):
        self.pending = ctx.get_list_state(ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY()))
        self.schedule = FlushSchedule(self.flush_interval_ms)
        self.unwritten: list = []  # what this instance accepted since its last write
        self.lock = threading.Lock()
        self._exported = clickhouse.StoreHealth()  # what the metrics below have been told so far
        metrics = ctx.get_metrics_group()
        self.metrics = None
        if metrics is not None:  # None when python.metric.enabled is false
            self.metrics = {
                name: metrics.counter(name) for name in ("store_retries", "store_outages", "store_rows_written")
            }
            health = clickhouse.health(self.url)
            metrics.gauge("store_unavailable_seconds", lambda: int(health.unavailable_s))
        _LIVE_WRITERS.add(self)

    def process_element(self, value, ctx):
        self.pending.add(value)
        with self.lock:
            self.unwritten.append(value)
        ts = ctx.timer_service()
        if self.schedule.ensure(ctx.get_current_key(), ts):
            ts.register_event_time_timer(ts.current_watermark() + 1)  # or on the next watermark

    def on_timer(self, timestamp, ctx):
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.schedule.fired(ctx.get_current_key())
        batches = list(self.pending.get() or [])
        self.pending.clear()
        with self.lock:
            self.unwritten.clear()  # all in batches: the state holds them too
            n = self._write(batches)
        if n:
            yield n

    def write_leftovers(self) -> int:
        with self.lock:
            n = self._write(self.unwritten)
            self.unwritten = []
        if n:
            log.info("wrote %d rows left at the end of the input", n)
        return n

    def close(self):
        self.write_leftovers()
        _LIVE_WRITERS.discard(self)

    def _write(self, batches: list) -> int:
        if not batches:
            return 0
        by_table: dict[str, list] = defaultdict(list)
        for table, rows in batches:
            by_table[table].extend(rows)

        n = sum(len(r) for r in by_table.values())
        left = dict(by_table)

        def write(c):
            for table in list(left):
                c.insert(table, left[table], column_names=COLUMNS[table], database=self.database)
                del left[table]  # written: a retry after a later table failed does not write it again

        give_up = None if self.give_up_after_ms is None else self.give_up_after_ms / 1000
        try:
            clickhouse.run(self.url, write, give_up, what=f"the writer ({n} rows)")
        finally:
            self._export_metrics(n - sum(len(r) for r in left.values()))
        log.info("wrote %d rows (%s)", n, ", ".join(f"{t}: {len(r)}" for t, r in sorted(by_table.items())))
        return n

    def _export_metrics(self, rows: int) -> None:
        """Adds to the Flink counters what this process's store health gained since the last call."""
        metrics = getattr(self, "metrics", None)
        if metrics is None:
            return
        now, before = clickhouse.health(self.url), self._exported
        metrics["store_retries"].inc(now.retries - before.retries)
        metrics["store_outages"].inc(now.outages - before.outages)
        metrics["store_rows_written"].inc(rows)
        self._exported = clickhouse.StoreHealth(retries=now.retries, outages=now.outages)


_LIVE_WRITERS: "weakref.WeakSet[ClickHouseWriter]" = weakref.WeakSet()


def write_leftovers() -> int:
    """Rows the writers of this process accepted and have not written (see ClickHouseWriter)."""
    return sum(w.write_leftovers() for w in list(_LIVE_WRITERS))
