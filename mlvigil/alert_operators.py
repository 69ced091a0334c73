"""Alerting in the Flink job: the engine's state in keyed state, delivery off the hot path.

    finished metric rows ─▶ AlertInput (rows -> engine rows, per model) ─▶ key_by(model_id)
        ─▶ AlertProcessor (AlertEngine; state = Flink ValueState; event-time timers)
        ─▶ AlertDelivery (parallelism 1; Deliverer thread; ActionRunner) ─▶ ClickHouse writer

The engine is driven by event time (window ends and watermark timers), so a replay from a
checkpoint recomputes the same notifications with the same ids; AlertDelivery asks ClickHouse
(`alert_deliveries`) before sending and the receivers get an Idempotency-Key, so nothing already
delivered is sent again. A slow or dead receiver never blocks metrics: delivery runs in a
background thread with a bounded queue and retries with backoff.
"""

import json
import logging
import threading
from datetime import UTC, datetime

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.functions import FlatMapFunction
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from mlvigil import clickhouse
from mlvigil.alerting.actions import ActionRunner
from mlvigil.alerting.delivery import Deliverer
from mlvigil.alerting.engine import AlertEngine, Notification
from mlvigil.alerting.rules import load_config
from mlvigil.finalize import FEATURE_COLUMNS, SERVICE_COLUMNS
from mlvigil.flush_schedule import FlushSchedule

log = logging.getLogger("mlvigil.alerts")

ALERT_COLUMNS = {
    "alerts": [
        "notification_id", "window_end", "status", "severity", "receiver", "model_id", "model_version",
        "segment", "group_key", "title", "text", "alerts", "actions", "created_at",
    ],
    "alert_deliveries": ["notification_id", "receiver", "attempt", "status", "http_status", "error", "attempted_at"],
}  # fmt: skip
END_OF_INPUT = 2**63 - 1  # Flink's final watermark
LAYERS = {"feature_metrics": "data", "service_metrics": "service", "quality_metrics": ["model", "business"]}


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _now() -> datetime:
    return datetime.now(UTC)


class AlertInput(FlatMapFunction):
    """(table, rows) from FinishRows -> (model_id, window_end_ms, [engine row dicts]).

    Adds what the engine's root-cause text needs from the reference profile: the feature's
    importance (1 when the profile has none) and reference mean; what the rules' baselines and
    significance tests need: ``reference_expected`` (bin proportions) and ``reference_count`` (N)
    and ``std_reference`` on feature rows, and ``<metric>_reference`` on quality rows from the
    profile's reference quality (only when it was scored as the job scores the model)."""

    def __init__(self, catalog: dict, columns: dict[str, list[str]]):
        self.catalog = catalog
        self.columns = columns

    def open(self, ctx) -> None:
        self.reference = {}
        self.quality_reference: dict[tuple[str, str], dict[str, float]] = {}
        for prof in self.catalog["profiles"]:
            for prefix, cols in (("", prof["features"]), ("prediction:", prof.get("prediction", []))):
                for c in cols:
                    self.reference[(prof["model"], prof["version"], prefix + c["name"])] = c
            ref = self._reference_quality(prof)
            if ref:
                self.quality_reference[(prof["model"], prof["version"])] = ref

    def _reference_quality(self, prof: dict) -> dict[str, float]:
        """The profile's reference metrics if its task and positive label are the model's (else a
        baseline with other definitions would be compared: the rules fall back to trailing)."""
        q = prof.get("reference_quality")
        m = self.catalog["models"].get(prof["model"], {})
        if not q:
            return {}
        task = "regression" if m.get("task") == "regression" else "binary" if m.get("positive_label") else "multiclass"
        if q.get("task") != task or (task == "binary" and q.get("positive_label") != m.get("positive_label")):
            log.warning("profile %s %s: reference quality is for another task or positive label; not used",
                        prof["model"], prof["version"])  # fmt: skip
            return {}
        return dict(q.get("metrics") or {})

    def _version(self, model: str, version: str) -> str:
        versions = self.catalog["models"].get(model, {}).get("versions", {})
        return version if version in versions else "*"

    def _quality(self, row: dict) -> dict[str, float]:
        return self.quality_reference.get((row["model_id"], self._version(row["model_id"], row["model_version"])), {})

    def _column(self, model: str, version: str, feature: str) -> dict | None:
        return self.reference.get((model, self._version(model, version), feature))

    def flat_map(self, value):
        table, rows = value
        if table not in LAYERS or not rows:
            return
        names = self.columns[table]
        by_model: dict[tuple[str, int], list[dict]] = {}
        for r in rows:
            d = self.enrich(table, dict(zip(names, r, strict=True)))
            for k in ("window_start", "window_end", "computed_at"):
                if isinstance(d.get(k), datetime):
                    d[k] = _ms(d[k])
            by_model.setdefault((d["model_id"], d["window_end"]), []).append(d)
        for (model, window_end), batch in by_model.items():
            yield model, window_end, batch

    def enrich(self, table: str, d: dict) -> dict:
        """One metric row (column -> value) as the engine sees it: its layer and the reference fields."""
        d["layer"] = LAYERS[table]
        if table == "feature_metrics":
            ref = self._column(d["model_id"], d["model_version"], d["feature"]) or {}
            d["importance"] = ref.get("importance", 1.0)
            if "mean" in ref:
                d["reference_mean"] = ref["mean"]
            if "expected" in ref:
                d["reference_expected"], d["reference_count"] = ref["expected"], ref["count"]
            if "std" in ref:
                d["std_reference"] = ref["std"]
            quality = self._quality(d)
            if d["feature"] == "prediction:score" and "score_std" in quality:
                d["std_reference"] = quality["score_std"]  # over the labelled rows the metrics used
        elif table == "quality_metrics":
            for metric, v in self._quality(d).items():
                if metric != "score_std":  # a feature-row metric (prediction:score std), see above
                    d[f"{metric}_reference"] = v
        return d


class AlertProcessor(KeyedProcessFunction):
    """Runs the AlertEngine per model (its state: one JSON value in Flink keyed state), stores
    each notification, hands it to the Deliverer thread and runs the planned actions.

    Notifications and delivery records go straight to ClickHouse from here (they are rare), so
    this branch has no edge back into the metrics writer and cannot hold it up."""

    def __init__(self, alerting: dict | str | None, url: str, database: str, dry_run_actions: bool = False):
        self.alerting = alerting
        self.url = url
        self.database = database
        self.dry_run_actions = dry_run_actions

    def open(self, ctx: RuntimeContext) -> None:
        cfg = load_config(self.alerting or {"use_default_rules": True})
        self.engine = AlertEngine(
            cfg.rules,
            cfg.routing,
            correlation_window_ms=cfg.correlation_window_ms,
            resolve_stale_ms=cfg.resolve_stale_ms,
        )
        self.runner = ActionRunner(cfg.actions, dry_run=self.dry_run_actions)
        self.state = ctx.get_state(ValueStateDescriptor("alert_engine", Types.STRING()))
        self.last_rows = ctx.get_state(ValueStateDescriptor("last_rows", Types.LONG()))
        self.flush = FlushSchedule(1000)  # delivery records to ClickHouse, about once a second
        self.pending = ctx.get_list_state(ListStateDescriptor("pending_rows", Types.PICKLED_BYTE_ARRAY()))
        # At the end of a bounded run the watermark jumps to +inf: flush what falls due soon
        # after the last data (group_wait, the correlation hold, one group_interval) instead of
        # simulating hours of silence (repeats, stale resolutions).
        self.end_horizon_ms = cfg.correlation_window_ms + cfg.routing.group_wait_ms + cfg.routing.group_interval_ms
        self.records: list[list] = []
        self.lock = threading.Lock()
        self.delivered_before = self._load_delivered()
        self.deliverer = Deliverer(
            cfg.routing.receivers, on_attempt=self._attempt, already_delivered=self.delivered_before.__contains__
        )
        # Health of the monitor (mlvigil/health.py): Python gauges are read at the end of each
        # bundle; while notifications are pending the flush timer keeps bundles coming.
        health = ctx.get_metrics_group().add_group("mlvigil")
        health.gauge("notifications_pending", lambda: self.deliverer.pending())
        health.gauge("notifications_failed", lambda: self.deliverer.stats["failed"])

    def _load_delivered(self) -> set[str]:
        """Notifications delivered by earlier runs (before a restart), read once here: the
        delivery thread itself never touches the store."""
        rows = clickhouse.query_rows(
            self.url,
            f"SELECT DISTINCT notification_id FROM {self.database}.alert_deliveries"
            " WHERE status = 'delivered' AND attempted_at > now() - INTERVAL 30 DAY",
        )
        return {r[0] for r in rows}

    def _attempt(self, nid, receiver, attempt, status, http_status, error) -> None:
        with self.lock:
            self.records.append([nid, receiver, attempt, status, http_status, error, _now()])

    def _action_record(self, nid: str, rec: dict) -> None:
        with self.lock:
            self.records.append(
                [nid, f"action:{rec.get('action', '?')}", 0, rec.get("status", "?"), None, rec.get("error"), _now()]
            )

    def _store(self, alerts: list[list]) -> None:
        with self.lock:
            records, self.records = self.records, []

        def write(c) -> None:
            if alerts:
                c.insert("alerts", alerts, column_names=ALERT_COLUMNS["alerts"], database=self.database)
            if records:
                c.insert(
                    "alert_deliveries", records, column_names=ALERT_COLUMNS["alert_deliveries"], database=self.database
                )

        if alerts or records:
            clickhouse.run(self.url, write)

    def _load(self) -> dict:
        raw = self.state.value()
        return json.loads(raw) if raw else {}

    def _handle(self, st: dict, notes: list[Notification], ctx, register: bool = True) -> None:
        alerts = []
        for n in notes:
            labels = n.group_labels
            alerts.append([
                n.id, datetime.fromtimestamp(n.window_end_ms / 1000, UTC), n.status, n.severity, n.receiver,
                labels.get("model_id", ""), labels.get("model_version", ""), labels.get("segment", ""), n.group_key,
                n.title, n.text, json.dumps(n.alerts), list(n.actions), _now(),
            ])  # fmt: skip
            self.deliverer.submit(n)
            if n.actions and n.status == "firing":
                planned, skipped = self.runner.plan(n, st)
                for rec in skipped:
                    self._action_record(n.id, rec)
                for req in planned:
                    self._action_record(n.id, self.runner.execute(req))
        self.state.update(json.dumps(st, separators=(",", ":")))
        self._store(alerts)
        ts = ctx.timer_service()
        due = self.engine.next_due_ms(st)
        if due is not None and register:
            ts.register_event_time_timer(due)
        if notes and register:
            # Store the delivery records as they come in, and all of them at the end of a
            # bounded run (a timer that only the final watermark reaches).
            ts.register_event_time_timer(END_OF_INPUT - 1)
            self.flush.ensure(ctx.get_current_key(), ts)

    def process_element(self, value, ctx):
        # Rows reach this operator in no particular event-time order (windows of all keys fire
        # together, quality windows come again as labels arrive), but the engine's clock is
        # event time: hold each batch until the watermark passes its window end, then feed the
        # batches in window order.
        _, window_end, rows = value
        self.pending.add((window_end, rows))
        ctx.timer_service().register_event_time_timer(window_end)
        ctx.timer_service().register_event_time_timer(END_OF_INPUT - 1)
        return iter(())

    def _feed_pending(self, st: dict, upto: int, ctx, register: bool = True) -> None:
        batches = sorted(self.pending.get() or [], key=lambda b: b[0])
        ready = [b for b in batches if b[0] <= upto]
        if not ready:
            return
        self.pending.update([b for b in batches if b[0] > upto])
        for window_end, rows in ready:
            last = self.last_rows.value()
            self.last_rows.update(window_end if last is None else max(last, window_end))
            self._handle(st, self.engine.evaluate(st, rows, window_end), ctx, register)

    def _finish(self, st: dict, ctx) -> None:
        """The final watermark: feed what is left, then play the engine's timers that fall due
        soon after the last data (group_wait, the correlation hold, one group_interval), rather
        than hours of silence (repeats, stale resolutions); wait for the deliveries."""
        self._feed_pending(st, END_OF_INPUT, ctx, register=False)
        last = self.last_rows.value()
        due = self.engine.next_due_ms(st)
        while due is not None and last is not None and due <= last + self.end_horizon_ms:
            self._handle(st, self.engine.advance(st, due), ctx, register=False)
            due = self.engine.next_due_ms(st)
        self.deliverer.drain(timeout=60)
        self._store([])

    def on_timer(self, timestamp, ctx):
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.flush.fired(ctx.get_current_key())
            self._store([])
            if self.deliverer.pending():
                self.flush.ensure(ctx.get_current_key(), ctx.timer_service())
            return iter(())
        st = self._load()
        if timestamp >= END_OF_INPUT - 1:
            self._finish(st, ctx)
            return iter(())
        self._feed_pending(st, timestamp, ctx)
        self._handle(st, self.engine.advance(st, timestamp), ctx)
        return iter(())

    def close(self) -> None:
        deliverer = getattr(self, "deliverer", None)
        if deliverer is not None:
            deliverer.close()


def engine_columns() -> dict[str, list[str]]:
    return {"feature_metrics": FEATURE_COLUMNS, "service_metrics": SERVICE_COLUMNS}
