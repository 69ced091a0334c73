"""The alert engine: a deterministic state machine over a plain JSON state dict, in event time.

One state dict per model (the job keeps it in Flink keyed state, keyed by model_id). Time is
the event time of the metric windows (window end, ms), never the wall clock, so a replay of the
same rows gives the same alerts, the same notifications and the same notification ids.

Per (rule, target) the engine keeps a streak of consecutive windows where the condition held;
at ``for_windows`` the alert fires (startsAt = end of the first window of the streak); the
first evaluated window where it does not hold resolves it (endsAt = that window's end). A
window where the rule cannot be evaluated (too few samples, no value, no baseline) breaks a
streak but does not resolve a firing alert; a firing alert whose target has not been evaluated
for ``resolve_stale_ms`` resolves then (annotation ``stale``).

Notifications follow Alertmanager's aggregation groups, on event time:

* alerts are grouped by ``group_by`` labels (default model_id, model_version, segment);
* a new group is flushed ``group_wait`` after its first alert, then its timer ticks every
  ``group_interval`` after each flush;
* at a tick the group is sent if a firing alert is new since the last notification, if alerts
  resolved (send_resolved), if all alerts resolved, or, unchanged and firing, if more than
  ``repeat_interval`` passed since the last notification (Alertmanager's dedup stage); resolved
  alerts are then forgotten and an empty group is deleted. Unlike Alertmanager, a resolved
  alert is only mentioned if its firing was announced (not one that fired and resolved between
  two ticks, or stayed inhibited);
* inhibited alerts (Alertmanager inhibit_rules, evaluated against all firing alerts) are left
  out of notifications before that comparison.

Two changes to Alertmanager, both for this use:

* routing happens after grouping: a notification goes to the receivers of the highest severity
  among its alerts, so a drift alert and the quality drop it explains are one notification, and
  a group that escalates above the severity it last notified is flushed ``group_wait`` after the
  escalation instead of at the next ``group_interval`` tick;
* correlation: a group whose alerts are all data-layer (drift) waits
  ``max(group_wait, correlation_window_ms)`` before its first notification, so that a
  model/service/business alert of the same model, version and segment arriving in that window
  joins it (the group is then flushed ``group_wait`` after that alert): one notification, with
  the drifted features ranked by PSI x importance as the likely cause.

Rows of one window should come in one ``evaluate`` call (several work, but a timer tick exactly
at the window end then runs between them). Timer ticks before the window end are processed
before its rows, ticks at the window end after them. A replayed or duplicated window is ignored
per target (each target remembers the last window it evaluated).
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from string import Formatter
from typing import Any

from mlvigil.alerting.rules import (
    SEVERITY_RANK,
    InhibitRule,
    Observation,
    Routing,
    Rule,
    _num,
    default_routing,
    default_rules,
    fdr_decisions,
)

STATE_VERSION = 1
CONTEXT_FIELDS = ("psi", "ks", "mean", "std", "reference_mean", "importance", "missing_rate", "outlier_rate")
MAX_CAUSES_IN_TEXT = 3
MAX_DRIFT_IN_TEXT = 5
SEEN_WINDOWS = 16
"""Per target, the window ends already judged (duplicates and replays of them are ignored)."""


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fmt_num(x: Any) -> str:
    """Short human number: 0.35, 2.1, 10.0, 2350, 1.2e-05."""
    f = _num(x)
    if f is None:
        return "n/a"
    if f.is_integer() and abs(f) < 1e15:
        return f"{f:.1f}" if abs(f) < 1000 else f"{f:.0f}"
    if abs(f) >= 1000:
        return f"{f:.0f}"
    return f"{f:.4g}"


def _hash(*parts: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:n]


def fingerprint(rule_name: str, target: dict) -> str:
    """Stable id of an alert: rule name + target labels (model, version, segment, feature)."""
    return _hash("alert", rule_name, sorted(target.items()))


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def render(template: str, fields: dict) -> str:
    """str.format with the given fields; a template that does not fit is returned as it is."""
    try:
        return Formatter().vformat(template, (), _Fields(fields))
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return template


@dataclass
class Notification:
    id: str  # idempotency key: receiver + group key + due tick
    status: str  # "firing" | "resolved"
    severity: str
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[dict]
    title: str
    text: str
    window_end_ms: int  # window end of the evaluate/advance call that emitted it
    due_ms: int  # the group timer tick it belongs to (event time)
    actions: list[str] = field(default_factory=list)
    valid_for_ms: int = 0  # a still-firing group is re-sent within this time (repeat + group interval)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Notification":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def new_state() -> dict:
    return {"v": STATE_VERSION, "now": None, "targets": {}, "groups": {}}


class AlertEngine:
    def __init__(
        self,
        rules: list[Rule] | None = None,
        routing: Routing | None = None,
        correlation_window_ms: int = 300_000,
        resolve_stale_ms: int | None = 3_600_000,
        target_ttl_ms: int = 86_400_000,
    ):
        self.rules = list(default_rules() if rules is None else rules)
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        self.by_name = {r.name: r for r in self.rules}
        self.routing = routing or default_routing()
        self.correlation_window_ms = int(correlation_window_ms)
        self.resolve_stale_ms = resolve_stale_ms
        self.target_ttl_ms = int(target_ttl_ms)

    # -- public API --------------------------------------------------------------------------------

    def evaluate(self, state: dict, rows: list[dict], window_end_ms: int) -> list["Notification"]:
        """Feed the metric rows of the window ending at window_end_ms; returns notifications due."""
        self._init(state)
        w = int(window_end_ms)
        out = self._run(state, w, inclusive=False, emitted=w)
        # Benjamini-Hochberg needs every row of the window at once (rules with fdr).
        fdr = fdr_decisions(self.rules, rows)
        for i, row in enumerate(rows):
            for rule in self.rules:
                if rule.matches(row):
                    self._observe(state, rule, row, w, fdr.get((rule.name, i)))
        state["now"] = w if state["now"] is None else max(state["now"], w)
        out += self._run(state, w, inclusive=True, emitted=w)
        self._prune(state)
        return out

    def advance(self, state: dict, now_ms: int) -> list["Notification"]:
        """Event time moved to now_ms without new rows: flush the timers due at or before now_ms.

        Call it only once every row of the windows ending at or before now_ms has been fed, e.g.
        from an event-time timer downstream of the window operators (Flink emits a window's rows
        before the watermark that passes its end); a timer tick at a window end is processed after
        that window's rows, which is what keeps results independent of how often this is called."""
        self._init(state)
        now = int(now_ms)
        out = self._run(state, now, inclusive=True, emitted=now)
        state["now"] = now if state["now"] is None else max(state["now"], now)
        self._prune(state)
        return out

    def next_due_ms(self, state: dict) -> int | None:
        """The next event time at which advance() would do something (for a Flink timer)."""
        times = [g["next"] for g in state.get("groups", {}).values() if g["next"] is not None]
        times += [t for t, _ in self._stale_deadlines(state)]
        return min(times) if times else None

    def firing(self, state: dict) -> list[dict]:
        """The firing alerts in the state (for dashboards and tests)."""
        return [a for g in state.get("groups", {}).values() for a in g["alerts"].values() if a["status"] == "firing"]

    # -- rows -> alerts ----------------------------------------------------------------------------

    def _init(self, state: dict) -> None:
        if "v" not in state:
            for k, v in new_state().items():
                state.setdefault(k, v)
        elif state["v"] != STATE_VERSION:
            raise ValueError(f"alert state version {state.get('v')!r}, expected {STATE_VERSION}")

    def _observe(self, state: dict, rule: Rule, row: dict, w: int, fdr_reject: bool | None = None) -> None:
        target = rule.target(row)
        key = json.dumps([rule.name, sorted(target.items())], separators=(",", ":"))
        t = state["targets"].get(key) or {"streak": 0, "since": None, "hist": [], "last": None}
        seen = t.get("seen", [])
        if w in seen or (len(seen) >= SEEN_WINDOWS and w < seen[0]):
            return  # this window was already judged: a duplicate or replayed row
        # A window older than one already judged: a quality window that got enough labels only
        # after a later window did (labels arrive late, rows come again as they do).
        late = t["last"] is not None and w < t["last"]
        if rule.detector:  # detector rules keep their detector's state in the target's entry
            if late:
                return  # a detector sees each target's windows once, in order
            obs, det = rule.observe_detector(row, t.get("det"), window_time_ms(row, w))
            if det is not None:
                t["det"] = det
        else:
            obs = rule.observe(row, t["hist"], fdr_reject)
        if obs.evaluated:
            # Only an evaluated window is final: quality rows come again as labels arrive, and a
            # window with too few labels yet must be looked at again when it has enough.
            t["last"] = w if t["last"] is None else max(t["last"], w)
            t["seen"] = sorted(seen + [w])[-SEEN_WINDOWS:]
        fp = fingerprint(rule.name, target)
        alert = self._alert(state, fp)
        if late:
            # It may raise an alert (a one-window rule) but neither breaks a streak nor resolves
            # what a later window decided.
            if obs.evaluated and obs.hit and rule.for_windows == 1 and not (alert and alert["status"] == "firing"):
                self._fire(state, rule, row, target, fp, obs, w, w)
        elif obs.evaluated and obs.hit:
            t["streak"] += 1
            if t["since"] is None:
                t["since"] = w
            if t["streak"] >= rule.for_windows:
                if alert is not None and alert["status"] == "firing":
                    self._refresh(alert, rule, row, obs, w)
                else:
                    self._fire(state, rule, row, target, fp, obs, t["since"], w)
        else:
            t["streak"], t["since"] = 0, None
            if obs.evaluated and alert is not None and alert["status"] == "firing":
                self._refresh(alert, rule, row, obs, w)
                self._resolve(state, alert, w, stale=False)
        n = rule.trailing_windows
        trailing = obs.baseline_source != "reference"  # a reference baseline needs no history
        if n and trailing and obs.value is not None and obs.reason not in ("no value", "too few samples"):
            # One value per window: a window seen again before it could be evaluated (a quality
            # row updated as labels arrive, while there is no baseline yet) replaces its value.
            ws = t.get("hist_ws", [])
            if w in ws:
                t["hist"][ws.index(w)] = obs.value
            else:
                t["hist"], ws = t["hist"] + [obs.value], ws + [w]
            t["hist"], t["hist_ws"] = t["hist"][-n:], ws[-n:]
        state["targets"][key] = t

    def _alert(self, state: dict, fp: str) -> dict | None:
        for g in state["groups"].values():
            if fp in g["alerts"]:
                return g["alerts"][fp]
        return None

    def _fields(self, rule: Rule, row: dict, obs: Observation) -> dict:
        f: dict[str, Any] = {k: row.get(k) for k in CONTEXT_FIELDS}
        f.update(
            rule=rule.name, metric=rule.metric, severity=rule.severity, layer=rule.layer,
            model_id=row.get("model_id", ""), model_version=row.get("model_version", ""),
            segment=row.get("segment") or "*", feature=row.get("feature") or "",
            value=obs.value, observed=obs.observed, baseline=obs.baseline, threshold=obs.threshold,
            samples=obs.samples, p_value=obs.p_value, baseline_source=obs.baseline_source,
            change_pct=None if obs.observed is None or not rule.relative else 100.0 * obs.observed,
        )  # fmt: skip
        return f

    def _refresh(self, alert: dict, rule: Rule, row: dict, obs: Observation, w: int) -> None:
        alert.update(value=obs.value, observed=obs.observed, baseline=obs.baseline, threshold=obs.threshold)
        alert["context"] = {k: v for k in CONTEXT_FIELDS if (v := _num(row.get(k))) is not None}
        if obs.samples is not None:
            alert["context"]["samples"] = obs.samples
        fields = self._fields(rule, row, obs)
        alert["annotations"] = {k: render(v, fields) for k, v in rule.annotations.items()}
        alert["last_eval"] = w

    def _fire(self, state: dict, rule: Rule, row: dict, target: dict, fp: str, obs: Observation, since: int, w: int):
        fields = self._fields(rule, row, obs)
        labels = {"alertname": rule.name, "severity": rule.severity, "layer": rule.layer, "metric": rule.metric}
        labels.update(target)
        labels.update({k: render(v, fields) for k, v in rule.labels.items()})
        alert = {
            "fingerprint": fp, "rule": rule.name, "status": "firing", "severity": rule.severity,
            "layer": rule.layer, "metric": rule.metric, "op": rule.op, "labels": labels, "starts": since, "ends": None,
        }  # fmt: skip
        self._refresh(alert, rule, row, obs, w)
        gkey, glabels = self._group_of(labels)
        groups = state["groups"]
        g = groups.get(gkey)
        if g is None:
            hold = self.correlation_window_ms if rule.layer == "data" else 0
            g = groups[gkey] = {
                "labels": glabels, "created": w, "next": w + max(self.routing.group_wait_ms, hold),
                "last_flush": None, "sent": None, "announced": [], "alerts": {},
            }  # fmt: skip
        elif g["last_flush"] is None:
            if rule.layer != "data":  # a quality/service/business alert ends the correlation hold
                g["next"] = min(g["next"], w + self.routing.group_wait_ms)
        else:
            sent_rank = SEVERITY_RANK[g["sent"]["severity"]] if g["sent"] else -1
            if SEVERITY_RANK[rule.severity] > sent_rank:  # escalation
                g["next"] = _min(g["next"], w + self.routing.group_wait_ms)
        g["alerts"][fp] = alert
        self._changed(state, w)

    def _resolve(self, state: dict, alert: dict, t: int, stale: bool) -> None:
        alert["status"], alert["ends"] = "resolved", t
        if stale:
            alert["annotations"]["stale"] = "no evaluated data since " + str(rfc3339(alert["last_eval"]))
        self._changed(state, t)

    def _changed(self, state: dict, t: int) -> None:
        """Something changed at t: every flushed group looks at it at its next tick >= t
        (Alertmanager's groups tick every group_interval; ticks where nothing changed send nothing,
        so they are skipped here)."""
        gi = self.routing.group_interval_ms
        for g in state["groups"].values():
            lf = g["last_flush"]
            if lf is not None:
                k = max(1, -(-(t - lf) // gi))
                g["next"] = _min(g["next"], lf + k * gi)

    def _group_of(self, labels: dict) -> tuple[str, dict]:
        glabels = {k: str(labels.get(k, "")) for k in self.routing.group_by}
        key = "{" + ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in glabels.items()) + "}"
        return key, glabels

    # -- timers ------------------------------------------------------------------------------------

    def _stale_deadlines(self, state: dict) -> list[tuple[int, str]]:
        if self.resolve_stale_ms is None:
            return []
        return sorted(
            (a["last_eval"] + self.resolve_stale_ms, a["fingerprint"])
            for g in state.get("groups", {}).values()
            for a in g["alerts"].values()
            if a["status"] == "firing"
        )

    def _run(self, state: dict, limit: int, inclusive: bool, emitted: int) -> list["Notification"]:
        out: list[Notification] = []

        def due(t: int | None) -> bool:
            return t is not None and (t <= limit if inclusive else t < limit)

        while True:
            ticks = sorted((g["next"], k) for k, g in state["groups"].items() if due(g["next"]))
            stale = [s for s in self._stale_deadlines(state) if due(s[0])]
            if not ticks and not stale:
                return out
            if stale and (not ticks or stale[0][0] <= ticks[0][0]):
                t, fp = stale[0]
                self._resolve(state, self._alert(state, fp), t, stale=True)
                continue
            t, key = ticks[0]
            out += self._flush(state, key, t, emitted)

    def _inhibited(self, alert: dict, sources: list[dict], rules: list[InhibitRule]) -> bool:
        labels = alert["labels"]
        for r in rules:
            if not all(m.matches(labels) for m in r.target_matchers):
                continue
            for s in sources:
                if s["fingerprint"] == alert["fingerprint"]:
                    continue
                if all(m.matches(s["labels"]) for m in r.source_matchers) and all(
                    s["labels"].get(e, "") == labels.get(e, "") for e in r.equal
                ):
                    return True
        return False

    def _flush(self, state: dict, key: str, tick: int, emitted: int) -> list["Notification"]:
        g = state["groups"][key]
        g["last_flush"], g["next"] = tick, None
        sources = self.firing(state)
        alerts = [g["alerts"][fp] for fp in sorted(g["alerts"])]
        visible = [a for a in alerts if not self._inhibited(a, sources, self.routing.inhibit_rules)]
        firing = [a for a in visible if a["status"] == "firing"]
        # Resolved alerts are mentioned only if their firing was announced: an alert that fired and
        # resolved between two ticks, or stayed inhibited, is not news to anyone.
        announced = set(g["announced"])
        resolved = [a for a in visible if a["status"] == "resolved" and a["fingerprint"] in announced]
        out: list[Notification] = []
        if self._needs_update(g["sent"], firing, resolved, tick) and (firing or resolved):
            # (Nothing to say when every alert of the group is inhibited.)
            shown_resolved = resolved if self.routing.send_resolved else []
            severity = max((a["severity"] for a in firing + resolved), key=SEVERITY_RANK.__getitem__)
            if firing or shown_resolved:
                out = self._notifications(key, g, firing, shown_resolved, severity, tick, emitted)
            g["sent"] = {
                "ts": tick, "severity": severity,
                "firing": [a["fingerprint"] for a in firing], "resolved": [a["fingerprint"] for a in resolved],
            }  # fmt: skip
            announced |= set(g["sent"]["firing"])
        for a in alerts:
            if a["status"] == "resolved":
                del g["alerts"][a["fingerprint"]]
                announced.discard(a["fingerprint"])
        g["announced"] = sorted(announced)
        if not g["alerts"]:
            del state["groups"][key]
        elif g["sent"] and g["sent"]["firing"]:
            # Nothing to do before the repeat (unless something changes, see _changed): the first
            # tick strictly after last notification + repeat_interval.
            gi, target = self.routing.group_interval_ms, g["sent"]["ts"] + self.routing.repeat_interval_ms + 1
            g["next"] = tick + max(1, -(-(target - tick) // gi)) * gi
        return out

    def _needs_update(self, sent: dict | None, firing: list[dict], resolved: list[dict], tick: int) -> bool:
        """Alertmanager's DedupStage.needsUpdate, on event time."""
        f = {a["fingerprint"] for a in firing}
        if sent is None:
            return bool(f)
        if not f <= set(sent["firing"]):
            return True
        if not f:
            return bool(sent["firing"])
        if self.routing.send_resolved and not {a["fingerprint"] for a in resolved} <= set(sent["resolved"]):
            return True
        return tick > sent["ts"] + self.routing.repeat_interval_ms

    # -- notification ------------------------------------------------------------------------------

    def _notifications(self, key, g, firing, resolved, severity, tick, emitted) -> list["Notification"]:
        title, text, causes = describe(g["labels"], firing, resolved)
        alerts = []
        for a in firing + resolved:
            ann = dict(a["annotations"])
            ann.setdefault("summary", alert_summary(a))
            if a["layer"] != "data" and a["status"] == "firing" and causes:
                ann["likely_cause"] = causes
            alerts.append({
                "fingerprint": a["fingerprint"], "status": a["status"], "labels": dict(a["labels"]),
                "annotations": ann, "startsAt": rfc3339(a["starts"]), "endsAt": rfc3339(a["ends"]),
                "starts_ms": a["starts"], "ends_ms": a["ends"], "value": a.get("value"),
                "observed": a.get("observed"), "baseline": a.get("baseline"), "threshold": a.get("threshold"),
            })  # fmt: skip
        actions: list[str] = []
        for a in firing:
            rule = self.by_name.get(a["rule"])
            for name in rule.actions if rule else []:
                if name not in actions:
                    actions.append(name)
        status = "firing" if firing else "resolved"
        valid = self.routing.repeat_interval_ms + self.routing.group_interval_ms
        return [
            Notification(
                id=_hash("notification", receiver, key, tick, n=32),
                status=status,
                severity=severity,
                receiver=receiver,
                group_key=key,
                group_labels=dict(g["labels"]),
                alerts=alerts,
                title=title,
                text=text,
                window_end_ms=emitted,
                due_ms=tick,
                actions=actions,
                valid_for_ms=valid,
            )  # fmt: skip
            for receiver in self.routing.receivers_for(severity)
        ]

    def _prune(self, state: dict) -> None:
        now = state["now"]
        firing_fps = {a["fingerprint"] for a in self.firing(state)}
        for key in list(state["targets"]):
            t = state["targets"][key]
            rule_name = json.loads(key)[0]
            rule = self.by_name.get(rule_name)
            if rule is None or (now is not None and t["last"] is not None and now - t["last"] > self.target_ttl_ms):
                del state["targets"][key]
            elif t["streak"] == 0 and not t["hist"] and not t.get("det"):
                target = dict(json.loads(key)[1])
                if fingerprint(rule_name, target) not in firing_fps:
                    del state["targets"][key]


def window_time_ms(row: dict, window_end_ms: int) -> int:
    """The time a detector files a row under (seasonal slots): its window start, else just
    before its window end."""
    start = _num(row.get("window_start"))
    return int(start) if start is not None else int(window_end_ms) - 1


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


# -- text ------------------------------------------------------------------------------------------


def alert_summary(a: dict) -> str:
    """'accuracy -12 % (0.91 -> 0.8)', 'latency_p95 2350 > 2000.0', 'age missing_rate 0.12 > 0.05'."""
    feature = a["labels"].get("feature")
    prefix = f"{feature} " if feature else ""
    if a.get("baseline") is not None and a.get("observed") is not None:
        if a["baseline"] == 0:  # a detector's learned mean can be 0 (error rate, PSI): no percentage
            return f"{prefix}{a['metric']} {fmt_num(a['baseline'])} -> {fmt_num(a['value'])}"
        pct = 100.0 * (a["value"] - a["baseline"]) / abs(a["baseline"])
        return f"{prefix}{a['metric']} {pct:+.0f} % ({fmt_num(a['baseline'])} -> {fmt_num(a['value'])})"
    if a.get("status") == "resolved":
        return f"{prefix}{a['metric']} {fmt_num(a.get('value'))} (threshold {fmt_num(a.get('threshold'))})"
    return f"{prefix}{a['metric']} {fmt_num(a.get('value'))} {a.get('op', '>')} {fmt_num(a.get('threshold'))}"


def drift_score(a: dict) -> float:
    """PSI x importance (importance defaults to 1): how the root-cause hint ranks features."""
    ctx = a.get("context") or {}
    psi = ctx.get("psi") or 0.0
    importance = ctx.get("importance")
    return psi * (1.0 if importance is None else importance)


def drift_descriptor(a: dict) -> str:
    """'browsing_duration PSI 0.35 (reference mean 10.0, now 2.1)'; other data metrics: summary."""
    ctx = a.get("context") or {}
    feature = a["labels"].get("feature", "?")
    if a["metric"] not in ("psi", "ks") or ctx.get("psi") is None:
        return alert_summary(a)
    s = f"{feature} PSI {fmt_num(ctx['psi'])}"
    mean, ref = ctx.get("mean"), ctx.get("reference_mean")
    if mean is not None and ref is not None:
        s += f" (reference mean {fmt_num(ref)}, now {fmt_num(mean)})"
    elif mean is not None:
        s += f" (mean now {fmt_num(mean)})"
    return s


def rank_drift(data_alerts: list[dict]) -> list[dict]:
    """One alert per feature (the highest score), ranked by PSI x importance, then name."""
    best: dict[str, dict] = {}
    for a in data_alerts:
        f = a["labels"].get("feature", "")
        if f not in best or (drift_score(a), a["metric"] == "psi") > (drift_score(best[f]), best[f]["metric"] == "psi"):
            best[f] = a
    return sorted(best.values(), key=lambda a: (-drift_score(a), a["labels"].get("feature", "")))


def _listing(items: list[str], limit: int) -> str:
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" (+{more} more)" if more > 0 else "")


def describe(group_labels: dict, firing: list[dict], resolved: list[dict]) -> tuple[str, str, str]:
    """Title, text and the likely-cause hint of a group's notification."""
    by_sev = sorted(firing, key=lambda a: (-SEVERITY_RANK[a["severity"]], a["rule"], a["fingerprint"]))
    quality = [a for a in by_sev if a["layer"] != "data"]
    ranked = rank_drift([a for a in firing if a["layer"] == "data"])
    inputs = [a for a in ranked if not a["labels"].get("feature", "").startswith("prediction:")]
    causes = _listing([drift_descriptor(a) for a in (inputs or ranked)], MAX_CAUSES_IN_TEXT) if ranked else ""
    lines = []
    if quality:
        head = "; ".join(alert_summary(a) for a in quality)
        lines.append(head + (f"; likely cause: {causes}" if causes else ""))
        headline = alert_summary(quality[0]) + (
            f", drift on {(inputs or ranked)[0]['labels'].get('feature')}" if ranked else ""
        )
    elif ranked:
        lines.append("drift: " + _listing([drift_descriptor(a) for a in ranked], MAX_DRIFT_IN_TEXT))
        headline = "drift on " + _listing([a["labels"].get("feature", "?") for a in ranked], MAX_CAUSES_IN_TEXT)
    else:
        headline = "resolved: " + _listing(sorted({a["rule"] for a in resolved}), MAX_CAUSES_IN_TEXT)
    if resolved:
        lines.append("resolved: " + _listing([alert_summary(a) for a in resolved], MAX_DRIFT_IN_TEXT))
    where = f"{group_labels.get('model_id', '')} {group_labels.get('model_version', '')}".strip()
    seg = group_labels.get("segment")
    if seg and seg != "*":
        where += f" [{seg}]"
    status = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    severity = max((a["severity"] for a in firing + resolved), key=SEVERITY_RANK.__getitem__, default="info")
    return f"[{status}] {severity} {where}: {headline}", "\n".join(lines), causes
