"""Self-healing hooks: retrain, fallback, rollback (article section 2.3).

A firing notification names the actions of its rules (``Rule.actions``). ``ActionRunner.plan``
decides, deterministically and in event time, which of them to run; ``execute`` runs one:

* retrain: POST JSON to the configured endpoint (a training pipeline trigger), with the header
  ``Idempotency-Key: <action id>``;
* fallback, rollback: a control event on a Kafka topic, produced with confluent_kafka (key =
  model id, header ``idempotency-key``):
  ``{"action", "model_id", "from_version", "to_version", "reason", "alert_id", "ts",
  "action_id", "notification_id"}`` (ts = event time in ms).

Idempotent: the action id is derived from the notification id and the action name, and the ids
already planned are remembered in the state, so a replayed notification does not act twice
(consumers can dedup on action_id too). Rate-limited per (model, action) in event time (default:
retrain at most once per 6 h, fallback 1 h, rollback 6 h); the state lives in the dict passed in,
e.g. the engine's keyed state under "actions". Planning marks an action as done before it runs,
so an action whose execution fails is reported (status "failed") and not retried until the
rate limit has passed: at most once per interval. ``dry_run`` records what would be done and
touches nothing. ``execute`` blocks for up to the HTTP / Kafka timeout: run it off the hot path.
"""

import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mlvigil.alerting.delivery import redact, safe_url, secret_parts
from mlvigil.alerting.engine import Notification
from mlvigil.config import duration_ms

log = logging.getLogger(__name__)

ACTIONS = ("retrain", "fallback", "rollback")
DEFAULT_MIN_INTERVAL = {"retrain": "6h", "fallback": "1h", "rollback": "6h"}
DEFAULT_TO_VERSION = {"retrain": None, "fallback": "fallback", "rollback": "previous"}
DEFAULT_TOPIC = "mlvigil.control"
MAX_DONE_IDS = 500


@dataclass
class ActionRequest:
    action_id: str
    action: str
    model_id: str
    from_version: str
    to_version: str | None
    reason: str
    alert_id: str
    notification_id: str
    ts: int

    def event(self) -> dict:
        return {
            "action": self.action, "model_id": self.model_id, "from_version": self.from_version,
            "to_version": self.to_version, "reason": self.reason, "alert_id": self.alert_id, "ts": self.ts,
            "action_id": self.action_id, "notification_id": self.notification_id,
        }  # fmt: skip


def action_id(notification_id: str, action: str) -> str:
    return hashlib.sha256(f"action\n{notification_id}\n{action}".encode()).hexdigest()[:32]


class ActionRunner:
    def __init__(
        self,
        config: dict | None = None,
        *,
        dry_run: bool = False,
        producer=None,
        on_record: Callable[[dict], None] | None = None,
        http_timeout_s: float = 10.0,
        kafka_timeout_s: float = 10.0,
    ):
        """config: {"retrain": {"url", "min_interval", "headers"}, "fallback": {"to_version",
        "min_interval"}, "rollback": {"to_version": str or {model_id or "*": version}, "min_interval"},
        "kafka": {"bootstrap_servers", "topic", "properties"}}."""
        self.config = config or {}
        self.dry_run = dry_run
        self._producer = producer
        self.on_record = on_record
        self.http_timeout_s, self.kafka_timeout_s = http_timeout_s, kafka_timeout_s
        self.min_interval_ms = {
            a: duration_ms((self.config.get(a) or {}).get("min_interval", DEFAULT_MIN_INTERVAL[a])) for a in ACTIONS
        }
        self._secrets = secret_parts(str((self.config.get("retrain") or {}).get("url") or ""))

    # -- deciding (deterministic, event time) ------------------------------------------------------

    def plan(self, n: Notification, state: dict) -> tuple[list[ActionRequest], list[dict]]:
        """The actions to run for this notification, and records of those skipped (rate-limited,
        duplicate, unknown). Updates state["actions"]."""
        st = state.setdefault("actions", {"last": {}, "done": []})
        todo: list[ActionRequest] = []
        skipped: list[dict] = []
        if n.status != "firing":
            return todo, skipped
        model = n.group_labels.get("model_id") or _first_label(n, "model_id")
        version = n.group_labels.get("model_version") or _first_label(n, "model_version")
        firing = [a for a in n.alerts if a["status"] == "firing"]
        alert_id = firing[0]["fingerprint"] if firing else ""
        for name in n.actions:
            req = ActionRequest(
                action_id(n.id, name), name, model, version, self._to_version(name, model), n.title, alert_id,
                n.id, n.due_ms,
            )  # fmt: skip
            if name not in ACTIONS:
                skipped.append(self._record(req, "unknown_action"))
                continue
            if req.action_id in st["done"]:
                skipped.append(self._record(req, "duplicate"))
                continue
            key = f"{model}|{name}"
            last = st["last"].get(key)
            if last is not None and n.due_ms - last < self.min_interval_ms[name]:
                skipped.append(self._record(req, "rate_limited", f"last {name} at {last}"))
                continue
            st["last"][key] = n.due_ms
            st["done"] = (st["done"] + [req.action_id])[-MAX_DONE_IDS:]
            todo.append(req)
        return todo, skipped

    def _to_version(self, action: str, model: str) -> str | None:
        to = (self.config.get(action) or {}).get("to_version", DEFAULT_TO_VERSION.get(action))
        if isinstance(to, dict):
            to = to.get(model, to.get("*", DEFAULT_TO_VERSION.get(action)))
        return None if to is None else str(to)

    # -- doing -------------------------------------------------------------------------------------

    def execute(self, req: ActionRequest) -> dict:
        if self.dry_run:
            log.info(
                "dry run: would %s model %s (%s -> %s): %s",
                req.action,
                req.model_id,
                req.from_version,
                req.to_version,
                req.reason,
            )
            return self._record(req, "dry_run")
        try:
            if req.action == "retrain":
                self._post_retrain(req)
            else:
                self._produce(req)
        except Exception as e:
            error = redact(f"{type(e).__name__}: {e}", self._secrets)
            log.error("action %s %s for %s failed: %s", req.action, req.action_id, req.model_id, error)
            return self._record(req, "failed", error)
        log.info("action %s for %s done (%s)", req.action, req.model_id, req.action_id)
        return self._record(req, "done")

    def run(self, n: Notification, state: dict) -> list[dict]:
        """plan + execute; returns one record per action (also given to on_record)."""
        todo, skipped = self.plan(n, state)
        return skipped + [self.execute(r) for r in todo]

    def _post_retrain(self, req: ActionRequest) -> None:
        cfg = self.config.get("retrain") or {}
        url = cfg.get("url")
        if not url:
            raise ValueError("retrain needs actions.retrain.url")
        body = json.dumps(req.event()).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": req.action_id, **(cfg.get("headers") or {})}
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout_s) as resp:
                if not 200 <= resp.status < 300:
                    raise RuntimeError(f"HTTP {resp.status} from {safe_url(url)}")
        except urllib.error.HTTPError as e:
            e.close()
            raise RuntimeError(f"HTTP {e.code} from {safe_url(url)}") from None
        except urllib.error.URLError as e:
            raise RuntimeError(f"{type(e.reason).__name__} from {safe_url(url)}: {e.reason}") from None

    def producer(self):
        if self._producer is None:
            from confluent_kafka import Producer

            kafka = self.config.get("kafka") or {}
            conf = {"bootstrap.servers": kafka.get("bootstrap_servers", "127.0.0.1:9092"), "acks": "all"}
            conf.update({str(k): str(v) for k, v in (kafka.get("properties") or {}).items()})
            self._producer = Producer(conf)
        return self._producer

    def _produce(self, req: ActionRequest) -> None:
        topic = (self.config.get("kafka") or {}).get("topic", DEFAULT_TOPIC)
        errors: list[str] = []

        def delivered(err, msg) -> None:
            if err is not None:
                errors.append(str(err))

        p = self.producer()
        p.produce(
            topic, key=req.model_id.encode(), value=json.dumps(req.event()).encode(),
            headers=[("idempotency-key", req.action_id.encode())], on_delivery=delivered,
        )  # fmt: skip
        deadline = time.monotonic() + self.kafka_timeout_s
        while p.flush(0.1) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"control event not acknowledged within {self.kafka_timeout_s} s")
        if errors:
            raise RuntimeError(f"control event not delivered: {errors[0]}")

    def _record(self, req: ActionRequest, status: str, error: str | None = None) -> dict:
        rec = {**asdict(req), "status": status, "error": error, "dry_run": self.dry_run}
        if self.on_record is not None:
            try:
                self.on_record(rec)
            except Exception as e:
                log.error("on_record failed: %s", redact(repr(e), self._secrets))
        return rec


def _first_label(n: Notification, name: str) -> str:
    for a in n.alerts:
        if a["labels"].get(name):
            return str(a["labels"][name])
    return ""
