"""Alerting in the Flink job: the engine's state in keyed state, delivery off the hot path.

    finished metric rows ─▶ AlertInput (rows -> engine rows, per model) ─▶ key_by(model_id)
        ─▶ AlertProcessor (AlertEngine + outbox in Flink keyed state; event-time timers;
           Deliverer: one queue and thread per receiver; ActionRunner) ─▶ ClickHouse (alerts)

The engine is driven by event time (window ends and watermark timers), so a replay from a
checkpoint recomputes the same notifications with the same ids. Each notification's content is
decided once and kept with its id (outbox state and the `alerts` table); unconfirmed ones are
re-submitted after a restore, confirmed ones never again (see AlertProcessor). A slow or dead
receiver never blocks metrics nor another receiver: delivery runs in background threads with
bounded queues and retries with backoff.
"""

import json
import logging
import threading
import time
import weakref
from datetime import UTC, datetime

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.functions import FlatMapFunction
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from mlvigil import clickhouse, metric_spec
from mlvigil.alerting.actions import ActionRunner
from mlvigil.alerting.delivery import Deliverer
from mlvigil.alerting.engine import AlertEngine, Notification
from mlvigil.alerting.rules import load_config
from mlvigil.config import duration_ms
from mlvigil.flush_schedule import FlushSchedule

log = logging.getLogger(__name__)

ALERT_COLUMNS = {
    "alerts": [
        "notification_id", "window_end", "status", "severity", "receiver", "model_id", "model_version",
        "segment", "group_key", "title", "text", "alerts", "actions", "created_at", "notification",
    ],
    "alert_deliveries": ["notification_id", "receiver", "attempt", "status", "http_status", "error", "attempted_at"],
}  # fmt: skip
END_OF_INPUT = 2**63 - 1  # Flink's final watermark
# the rules layers of each metric table's rows, from the metric spec (quality rows: ["model", "business"])
LAYERS = {table: metric_spec.alert_layers(table) for table in metric_spec.BY_TABLE}


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
    """Runs the AlertEngine per model (its state: one JSON value in Flink keyed state), records
    each notification, hands it to the Deliverer (one queue per receiver) and runs the planned
    actions.

    Exactly once in effect, across crashes:

    * A notification is decided once. The first time its id comes out of the engine, its whole
      content goes into the keyed outbox (MapState id -> content + outcome) and into ClickHouse
      (an `alerts` row with the content, a `pending` delivery record) before the first attempt.
      If the engine emits that id again (a restore from an older checkpoint, a replay of the same
      input) the stored content is what is sent and stored, not the recomputed one.
    * Unconfirmed notifications stay in the outbox, so a restore re-submits them (at the model's
      first element or timer after the restore; at parallelism 1 already at open, from the
      store, see open). Confirmed ones (delivered, or a stored give-up) are never sent again:
      the outcomes stored in `alert_deliveries`, read at open, win over an older checkpoint's
      outbox.
    * What stays open: a kill after the receiver answered and before the outcome was stored
      (a thread stores outcomes as they come: one store write, about 0.1 s) sends it once more
      after the restore, with the same content and the same Idempotency-Key for the receiver
      to drop.

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
        self.outbox = ctx.get_map_state(MapStateDescriptor("alert_outbox", Types.STRING(), Types.STRING()))
        self.flush = FlushSchedule(1000)  # delivery records to ClickHouse, about once a second
        self.pending = ctx.get_list_state(ListStateDescriptor("pending_rows", Types.PICKLED_BYTE_ARRAY()))
        # At the end of a bounded run the watermark jumps to +inf: flush what falls due soon
        # after the last data (group_wait, the correlation hold, one group_interval) instead of
        # simulating hours of silence (repeats, stale resolutions).
        self.end_horizon_ms = cfg.correlation_window_ms + cfg.routing.group_wait_ms + cfg.routing.group_interval_ms
        opts = delivery_options(self.alerting)
        self.end_wait_s = opts["end_wait_s"]
        self.records: list[list] = []
        self.lock = threading.Lock()
        self.outcomes: dict[str, dict[str, str]] = {}  # key -> {notification id: final status}, not yet in state
        self.in_flight: dict[str, set[str]] = {}  # key -> notification ids submitted and not confirmed
        self.key_of: dict[str, str] = {}  # notification id -> key
        self.resumed: set[str] = set()  # keys whose outbox was re-submitted since open
        self.ended_at: float | None = None  # monotonic time the final watermark arrived
        self.known, unconfirmed = self._load_known()
        self.deliverer = Deliverer(
            cfg.routing.receivers,
            on_attempt=self._attempt,
            on_dropped=self._dropped,
            max_total_s=opts["max_total_s"],
            queue_size=opts["queue_size"],
            connect_timeout_s=opts["connect_timeout_s"],
        )
        # Health of the monitor (mlvigil/health.py): Python gauges are read at the end of each
        # bundle; while notifications are pending the flush timer keeps bundles coming.
        health = ctx.get_metrics_group().add_group("mlvigil")
        health.gauge("notifications_pending", lambda: self.deliverer.pending())
        health.gauge("notifications_failed", lambda: self.deliverer.stats["failed"])
        # Outcomes are stored as they come, by a thread of their own (not the delivery lanes,
        # which a slow store must not hold up; not only the operator's flush timers, which need
        # an element or a timer of the key, and a key may have gone quiet).
        self._recorder_stop = threading.Event()
        self._record_due = threading.Event()
        self._recorder = threading.Thread(target=self._record_loop, name="mlvigil-alert-records", daemon=True)
        self._recorder.start()
        self._close_lock = threading.Lock()
        self._closed = False
        _LIVE_PROCESSORS.add(self)
        if ctx.get_number_of_parallel_subtasks() == 1 and unconfirmed:
            # This instance owns every key: send what earlier runs recorded and did not confirm
            # now, rather than at each model's next element (a model may have gone quiet, and
            # PyFlink does not always fire restored timers). The outbox catches up at the key's
            # next element (the deliverer drops the repeat). At a higher parallelism a subtask
            # cannot tell its keys here, so the outbox alone re-submits them.
            restored = self._load_contents(unconfirmed)
            log.info("alerts: %d unconfirmed notifications of earlier runs re-submitted", len(restored))
            for n in restored.values():
                self.deliverer.submit(n)

    # -- the store -------------------------------------------------------------------------------

    def _load_known(self) -> tuple[dict[str, str], list[str]]:
        """Notifications recorded by earlier runs (before a restart): id -> its final outcome
        ("delivered", "failed") or "" (recorded, not confirmed); and the unconfirmed ones
        recorded in the last day. Read once here: the delivery threads never touch the store."""
        db = self.database

        def read(c) -> tuple[dict[str, str], list[str]]:
            recorded = c.query(
                f"SELECT notification_id, max(created_at) > now() - INTERVAL 1 DAY FROM {db}.alerts"
                " WHERE created_at > now() - INTERVAL 30 DAY GROUP BY notification_id"
            ).result_rows
            known = {nid: "" for nid, _ in recorded}
            for nid, delivered in c.query(
                f"SELECT notification_id, max(status = 'delivered') FROM {db}.alert_deliveries"
                " WHERE status IN ('delivered', 'failed') AND receiver NOT LIKE 'action:%'"
                " AND attempted_at > now() - INTERVAL 30 DAY GROUP BY notification_id"
            ).result_rows:
                known[nid] = "delivered" if delivered else "failed"
            return known, sorted(nid for nid, recent in recorded if recent and not known[nid])

        return clickhouse.run(self.url, read)

    def _load_contents(self, ids: list[str]) -> dict[str, Notification]:
        """The content stored with each notification when it was first decided."""
        if not ids:
            return {}
        rows = clickhouse.query_rows(
            self.url,
            f"SELECT notification_id, any(notification) FROM {self.database}.alerts"
            " WHERE notification_id IN {ids:Array(String)} AND notification != '' GROUP BY notification_id",
            {"ids": ids},
        )
        return {nid: Notification.from_dict(json.loads(text)) for nid, text in rows}

    def _attempt(self, nid, receiver, attempt, status, http_status, error) -> None:
        with self.lock:
            self.records.append([nid, receiver, attempt, status, http_status, error, _now()])
            if status in FINAL_STATUSES:
                self.known[nid] = status
                key = self.key_of.get(nid)
                if key is not None:
                    self.outcomes.setdefault(key, {})[nid] = status
        if status == "delivered":
            _forget_undelivered(nid)
        if status != "pending":  # pending records are stored with their alerts row, before the send
            self._record_due.set()

    def _record_loop(self) -> None:
        while not self._recorder_stop.is_set():
            self._record_due.wait(1.0)
            self._record_due.clear()
            try:
                self._store([])
            except Exception as e:  # kept for the next try (_store puts them back)
                log.warning("alert delivery records not stored yet: %s", clickhouse.redact(str(e)))
                self._recorder_stop.wait(1.0)

    def _dropped(self, n: Notification, reason: str) -> None:
        """A give-up (its "failed" record came through _attempt), or "shutdown": handed back
        unconfirmed; it stays pending in the outbox, and a restore sends it."""
        with self.lock:
            ended = self.ended_at is not None
        if reason == "shutdown" and ended:
            # The end of a bounded run: nothing will send it any more. A stored give-up.
            reason = "run_ended"
            self._attempt(n.id, n.receiver, 0, "failed", None, RUN_ENDED)
        elif reason == "shutdown":  # a failover, or the end of a run whose final timer did not fire
            with _UNDELIVERED_LOCK:
                _HANDED_BACK.append((self, n))
        _note_undelivered(n.id, reason)

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
            try:
                clickhouse.run(self.url, write)
            except Exception:
                with self.lock:  # not lost: written with the next flush (or the job fails loudly)
                    self.records[:0] = records
                raise

    # -- the outbox ------------------------------------------------------------------------------

    def _submit(self, key: str, n: Notification) -> None:
        with self.lock:
            self.key_of[n.id] = key
            self.in_flight.setdefault(key, set()).add(n.id)
        self.deliverer.submit(n)

    def _resume(self, key: str, ctx) -> None:
        """First touch of a key since open (a restore, a failover): re-submit its unconfirmed
        notifications, unless the store says they were confirmed after the checkpoint."""
        if key in self.resumed:
            return
        self.resumed.add(key)
        resubmitted = 0
        for nid, raw in list(self.outbox.items()):
            entry = json.loads(raw)
            if entry["done"]:
                continue
            final = self.known.get(nid) or ("delivered" if self.deliverer.delivered(nid) else "")
            if final:
                entry["done"] = final
                self.outbox.put(nid, json.dumps(entry))
                continue
            self._submit(key, Notification.from_dict(entry["n"]))
            resubmitted += 1
        if resubmitted:
            log.info("alerts for %s: %d unconfirmed notifications re-submitted", key, resubmitted)
            self.flush.ensure(key, ctx.timer_service())

    def _apply_outcomes(self, key: str, ctx) -> None:
        """Stores the outcomes of the key's deliveries, then marks them in the outbox; drops
        confirmed entries a day of event time old (the store keeps them for restarts)."""
        with self.lock:
            done = self.outcomes.pop(key, {})
            flying = self.in_flight.get(key, set())
            for nid in done:
                flying.discard(nid)
                self.key_of.pop(nid, None)
        self._store([])  # their records (unless the recorder thread has them in hand right now)
        for nid, status in done.items():
            raw = self.outbox.get(nid)
            if raw is not None:
                entry = json.loads(raw)
                entry["done"] = status
                self.outbox.put(nid, json.dumps(entry))
        horizon = ctx.timer_service().current_watermark() - OUTBOX_KEEP_MS
        for nid, raw in list(self.outbox.items()):
            entry = json.loads(raw)
            if entry["done"] and entry["n"]["window_end_ms"] < horizon:
                self.outbox.remove(nid)

    def _has_open_deliveries(self, key: str) -> bool:
        with self.lock:
            return bool(self.in_flight.get(key)) or bool(self.outcomes.get(key))

    # -- the engine ------------------------------------------------------------------------------

    def _load(self) -> dict:
        raw = self.state.value()
        return json.loads(raw) if raw else {}

    def _handle(self, st: dict, notes: list[Notification], ctx, register: bool = True) -> None:
        key = ctx.get_current_key()
        self._resume(key, ctx)
        fresh = {n.id for n in notes if not self.outbox.contains(n.id)}
        contents = self._load_contents(sorted(nid for nid in fresh if nid in self.known))
        alerts, submit = [], []
        for n in notes:
            if n.id not in fresh:  # decided before in this state: its content, its outcome
                entry = json.loads(self.outbox.get(n.id))
                if not entry["done"]:
                    submit.append(Notification.from_dict(entry["n"]))
                continue
            first_time = n.id not in self.known
            n = contents.get(n.id, n)  # decided by an earlier run: what it stored
            final = self.known.get(n.id) or None
            self.outbox.put(n.id, json.dumps({"n": n.to_dict(), "done": final}))
            if final:
                continue  # confirmed: never sent again
            submit.append(n)
            if not first_time:
                continue
            self.known[n.id] = ""
            labels = n.group_labels
            alerts.append([
                n.id, datetime.fromtimestamp(n.window_end_ms / 1000, UTC), n.status, n.severity, n.receiver,
                labels.get("model_id", ""), labels.get("model_version", ""), labels.get("segment", ""), n.group_key,
                n.title, n.text, json.dumps(n.alerts), list(n.actions), _now(), json.dumps(n.to_dict()),
            ])  # fmt: skip
            self._attempt(n.id, n.receiver, 0, "pending", None, None)
            if n.actions and n.status == "firing":
                planned, skipped = self.runner.plan(n, st)
                for rec in skipped:
                    self._action_record(n.id, rec)
                for req in planned:
                    self._action_record(n.id, self.runner.execute(req))
        self.state.update(json.dumps(st, separators=(",", ":")))
        self._store(alerts)  # recorded before the first attempt
        for n in submit:
            self._submit(key, n)
        ts = ctx.timer_service()
        due = self.engine.next_due_ms(st)
        if due is not None and register:
            ts.register_event_time_timer(due)
        if submit:
            self.flush.ensure(key, ts)
        if notes and register:
            # Store the delivery records at the end of a bounded run (a timer that only the
            # final watermark reaches).
            ts.register_event_time_timer(END_OF_INPUT - 1)

    def process_element(self, value, ctx):
        # Rows reach this operator in no particular event-time order (windows of all keys fire
        # together, quality windows come again as labels arrive), but the engine's clock is
        # event time: hold each batch until the watermark passes its window end, then feed the
        # batches in window order.
        self._resume(ctx.get_current_key(), ctx)
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
        than hours of silence (repeats, stale resolutions); then wait for the deliveries, at
        most end_wait after the final watermark came (for all keys together)."""
        with self.lock:
            if self.ended_at is None:
                self.ended_at = time.monotonic()
        self._feed_pending(st, END_OF_INPUT, ctx, register=False)
        last = self.last_rows.value()
        due = self.engine.next_due_ms(st)
        while due is not None and last is not None and due <= last + self.end_horizon_ms:
            self._handle(st, self.engine.advance(st, due), ctx, register=False)
            due = self.engine.next_due_ms(st)
        self.deliverer.drain(timeout=self._end_wait_left())
        self._apply_outcomes(ctx.get_current_key(), ctx)

    def _end_wait_left(self) -> float:
        """What is left of end_wait since the final watermark, but at least a few seconds: a key
        whose end comes after another key used up the budget still gets its quick deliveries."""
        return max(self.ended_at + self.end_wait_s - time.monotonic(), min(END_GRACE_S, self.end_wait_s))

    def on_timer(self, timestamp, ctx):
        key = ctx.get_current_key()
        self._resume(key, ctx)
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.flush.fired(key)
            self._apply_outcomes(key, ctx)
            if self._has_open_deliveries(key):
                self.flush.ensure(key, ctx.timer_service())
            return iter(())
        st = self._load()
        if timestamp >= END_OF_INPUT - 1:
            self._finish(st, ctx)
            return iter(())
        self._feed_pending(st, timestamp, ctx)
        self._handle(st, self.engine.advance(st, timestamp), ctx)
        return iter(())

    def end_of_run(self) -> None:
        """The job has ended (main() after a local run, if close() was not called): wait what
        is left of end_wait, then every notification still undelivered is a stored give-up."""
        with self.lock:
            if self.ended_at is None:
                self.ended_at = time.monotonic()
        self.close()

    def close(self) -> None:
        deliverer = getattr(self, "deliverer", None)
        if deliverer is None:
            return
        # Flink's close and main()'s finish_deliveries may come at once (a local run's
        # execute() returns while the worker still closes): the second waits for the first.
        with self._close_lock:
            if self._closed:
                return
            with self.lock:
                ended = self.ended_at
            if ended is not None:
                deliverer.drain(timeout=self._end_wait_left())
            deliverer.close()  # what is left goes to _dropped("shutdown")
            self._recorder_stop.set()
            self._record_due.set()
            self._recorder.join(10)
            try:
                self._store([])
            except Exception as e:  # closing: the records are lost, say so
                log.error("alert delivery records not stored at close: %s", clickhouse.redact(str(e)))
            self._closed = True
            _LIVE_PROCESSORS.discard(self)

    def record_run_ended(self, notes: list[Notification]) -> None:
        """Stored give-ups for notifications handed back at close when the run has ended."""
        for n in notes:
            self._attempt(n.id, n.receiver, 0, "failed", None, RUN_ENDED)
            _note_undelivered(n.id, "run_ended")
        self._store([])


FINAL_STATUSES = ("delivered", "failed")
END_GRACE_S = 5.0
OUTBOX_KEEP_MS = 86_400_000  # confirmed entries stay a day of event time (the store keeps them longer)
_LIVE_PROCESSORS: "weakref.WeakSet[AlertProcessor]" = weakref.WeakSet()
_UNDELIVERED: dict[str, str] = {}  # notification id -> why it was not delivered, in this process
_UNDELIVERED_LOCK = threading.Lock()
_HANDED_BACK: list[tuple["AlertProcessor", Notification]] = []  # handed back at a close before the run's end
RUN_ENDED = "run_ended: the bounded run ended before delivery"


def _note_undelivered(nid: str, reason: str) -> None:
    with _UNDELIVERED_LOCK:
        _UNDELIVERED[nid] = reason


def _forget_undelivered(nid: str) -> None:
    with _UNDELIVERED_LOCK:
        _UNDELIVERED.pop(nid, None)


def finish_deliveries() -> dict[str, str]:
    """After a local run has ended (jobs/monitor.py calls it; in Flink's local mode the Python
    operators run in the driver): ends the processors not closed yet, then returns the
    notifications of this process that were not delivered, id -> reason."""
    for p in list(_LIVE_PROCESSORS):
        p.end_of_run()
    with _UNDELIVERED_LOCK:
        # Handed back by a close that did not know the run was ending, and not delivered since.
        left = [(p, n) for p, n in _HANDED_BACK if _UNDELIVERED.get(n.id) == "shutdown"]
        _HANDED_BACK.clear()
    by_processor: dict[int, tuple[AlertProcessor, list[Notification]]] = {}
    for p, n in left:
        by_processor.setdefault(id(p), (p, []))[1].append(n)
    for p, notes in by_processor.values():
        p.record_run_ended(notes)
    with _UNDELIVERED_LOCK:
        return dict(_UNDELIVERED)


def delivery_options(alerting: dict | str | None) -> dict:
    """The `delivery` section of the alerting config: max_total (retry budget per notification,
    default 10m), end_wait (how long a bounded run waits for deliveries at its end, default
    max_total), queue_size (per receiver, default 1000), connect_timeout (default 5s)."""
    raw = (alerting.get("delivery") if isinstance(alerting, dict) else None) or {}
    unknown = set(raw) - {"max_total", "end_wait", "queue_size", "connect_timeout"}
    if unknown:
        raise ValueError(f"alerting.delivery: unknown keys {sorted(unknown)}")
    max_total_s = duration_ms(raw.get("max_total", "10m")) / 1000
    return {
        "max_total_s": max_total_s,
        "end_wait_s": duration_ms(raw["end_wait"]) / 1000 if "end_wait" in raw else max_total_s,
        "queue_size": int(raw.get("queue_size", 1000)),
        "connect_timeout_s": duration_ms(raw.get("connect_timeout", "5s")) / 1000,
    }
