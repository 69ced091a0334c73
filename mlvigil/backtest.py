"""`mlvigil backtest`: replay alert rules over the metric history and score them (article 4.3:
"when PSI > 0.2, does accuracy really drop?").

The history is the per-minute tables (feature_metrics, service_metrics, quality_metrics, read
FINAL, so each window once with its latest values; kept 90 days). Rows become engine rows with
the job's own code (mlvigil.alert_operators.AlertInput: layer, importance and reference mean from
the profiles of --config) and go through the job's AlertEngine per model, window by window in
window order, with ``advance`` at every timer in between: the notifications are the ones the job
would have sent. One difference: the job evaluates a quality window as soon as it has
``min_samples`` labels, the backtest sees its final row (all labels in).

Ground truth, a "real quality drop" (``Truth``, all configurable): on the quality rows of a
target (model, version, segment matching ``segment``, default "*"), ``metric`` (default accuracy)
below ``reference x (1 - drop)`` (default drop 0.05: 5 % below) for ``windows`` consecutive
evaluated windows (default 3; a window with fewer than ``min_samples`` labels is skipped). The
reference is a number, ``initial:N`` (the mean of the target's first N evaluated windows in the
range, which are then not judged; default initial:60) or ``row`` (the row's ``{metric}_reference``).
A drop starts (onset) at the end of its first bad window and ends at the end of the first good one.

Scores per rule, from the alerts its notifications announce (an alert counts once, at the due
time of the first notification that lists it as firing; what the on-call saw):
* notifications: notifications with a firing alert of the rule (repeats included; one per group
  and tick, whatever the number of receivers), total and per week of the range;
* an alert matches a drop on the same model, version and segment when it was announced from
  ``horizon`` before the drop's onset to the drop's end (the drop followed within the horizon, or
  was going on); one announced earlier does not, even if it is still firing (otherwise an alert
  that never resolves would score best);
* precision: the share of alerts that match a drop;
* recall: the share of drops that an alert of the rule matches; the others are "missed" (no
  warning before or during the drop);
* median delay: first matching alert - onset over the detected drops (negative: an early warning);
* sweep: the rule alone (no inhibition by the others) with its threshold (every per-feature
  threshold too) or its detector's sensitivity parameter (registry ``sweep``) scaled by each of
  ``factors``; the F1-best value is reported.
"""

import json
import math
import statistics
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from mlvigil import clickhouse
from mlvigil.alerting.detectors import get_detector
from mlvigil.alerting.engine import AlertEngine, Notification
from mlvigil.alerting.rules import AlertingConfig, Rule, _glob, _num, load_config
from mlvigil.config import duration_ms

TABLES = ("feature_metrics", "service_metrics", "quality_metrics")
WEEK_MS = 7 * 86_400_000
DEFAULT_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


@dataclass(frozen=True)
class Truth:
    metric: str = "accuracy"
    drop: float = 0.05
    windows: int = 3
    reference: str = "initial:60"
    min_samples: int = 0
    segment: str = "*"

    def __post_init__(self) -> None:
        if not 0 < self.drop < 1 or self.windows < 1 or self.min_samples < 0:
            raise ValueError("truth: drop must be in (0, 1), windows >= 1, min_samples >= 0")
        if self.reference != "row" and not self.reference.startswith("initial:") and _num(self.reference) is None:
            raise ValueError(f"truth reference must be a number, initial:N or row, not {self.reference!r}")
        if self.reference.startswith("initial:") and int(self.reference.split(":", 1)[1]) < 1:
            raise ValueError("truth reference initial:N needs N >= 1")


@dataclass
class Drop:
    """One real quality drop on a target (times are window ends, ms)."""

    model_id: str
    model_version: str
    segment: str
    onset_ms: int
    confirmed_ms: int
    end_ms: int
    reference: float


@dataclass
class Alarm:
    rule: str
    model_id: str
    model_version: str
    segment: str
    fingerprint: str
    starts_ms: int
    announced_ms: int


# -- reading the history ----------------------------------------------------------------------------


def _aware_utc(v: Any) -> Any:
    if isinstance(v, datetime):  # the store's DateTime64 columns are UTC
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    return v


def read_history(
    url: str, database: str, start: datetime, end: datetime, models: list[str] | None = None
) -> dict[str, list[list]]:
    """The rows of the three metric tables (FINAL) with window_start in [start, end), in the
    writer's column order, times as aware UTC datetimes (as the job's FinishRows emits them)."""
    from mlvigil.writer import COLUMNS

    out: dict[str, list[list]] = {}
    params: dict[str, Any] = {
        "start": start.astimezone(UTC).replace(tzinfo=None),
        "end": end.astimezone(UTC).replace(tzinfo=None),
    }
    where = "window_start >= {start:DateTime64(3)} AND window_start < {end:DateTime64(3)}"
    if models:
        where += " AND model_id IN {models:Array(String)}"
        params["models"] = list(models)

    def go(c: Any) -> None:
        for table in TABLES:
            cols = COLUMNS[table]
            sql = f"SELECT {', '.join(cols)} FROM {database}.{table} FINAL WHERE {where} ORDER BY window_end"
            rows = c.query(sql, parameters=params).result_rows
            out[table] = [[_aware_utc(v) for v in r] for r in rows]

    try:
        clickhouse.run(url, go)
    except Exception as e:
        if "UNKNOWN_TABLE" in str(e) or "UNKNOWN_DATABASE" in str(e) or "doesn't exist" in str(e):
            raise RuntimeError(f"{database} has no metric tables ({TABLES}): is this the job's store?") from e
        raise
    return out


def engine_batches(history: dict[str, list[list]], catalog: dict) -> dict[str, list[tuple[int, list[dict]]]]:
    """Per model: (window_end_ms, engine rows of every table for that window end), in window
    order. The rows are made by the job's AlertInput, the same code the streaming job runs."""
    from mlvigil.alert_operators import AlertInput
    from mlvigil.writer import COLUMNS

    to_rows = AlertInput(catalog, COLUMNS)
    to_rows.open(None)
    merged: dict[str, dict[int, list[dict]]] = {}
    for table in TABLES:
        for model, window_end, rows in to_rows.flat_map((table, history.get(table) or [])):
            merged.setdefault(model, {}).setdefault(int(window_end), []).extend(rows)
    return {m: sorted(by_w.items()) for m, by_w in sorted(merged.items())}


# -- replay ------------------------------------------------------------------------------------------


def replay(engine: AlertEngine, batches: dict[str, list[tuple[int, list[dict]]]], end_ms: int) -> list[Notification]:
    """The notifications of the engine over the batches, one state per model (as the job's keyed
    state): timers due before a window run through ``advance`` first, as the job's event-time
    timers do; after the last window, timers due up to ``end_ms``."""
    out: list[Notification] = []
    for _, items in batches.items():
        state: dict = {}
        for w, rows in items:
            while (due := engine.next_due_ms(state)) is not None and due < w:
                out += engine.advance(state, due)
            out += engine.evaluate(state, rows, w)
        while (due := engine.next_due_ms(state)) is not None and due <= end_ms:
            out += engine.advance(state, due)
    return out


def announced(notifications: Iterable[Notification]) -> tuple[list[Alarm], dict[str, int]]:
    """Alerts announced as firing (each at its first notification) and notifications per rule."""
    seen: set[tuple[str, int]] = set()
    alarms: dict[tuple[str, int], Alarm] = {}
    per_rule: dict[str, int] = {}
    for n in sorted(notifications, key=lambda n: (n.due_ms, n.group_key, n.receiver)):
        if (n.group_key, n.due_ms) in seen:  # the same notification for another receiver
            continue
        seen.add((n.group_key, n.due_ms))
        rules_here = set()
        for a in n.alerts:
            if a["status"] != "firing":
                continue
            labels = a["labels"]
            rules_here.add(labels["alertname"])
            key = (a["fingerprint"], a["starts_ms"])
            if key not in alarms:
                alarms[key] = Alarm(
                    labels["alertname"], labels.get("model_id", ""), labels.get("model_version", ""),
                    labels.get("segment", "*"), a["fingerprint"], a["starts_ms"], n.due_ms,
                )  # fmt: skip
        for r in rules_here:
            per_rule[r] = per_rule.get(r, 0) + 1
    return sorted(alarms.values(), key=lambda a: (a.announced_ms, a.rule, a.fingerprint)), per_rule


# -- ground truth ------------------------------------------------------------------------------------


def quality_drops(batches: dict[str, list[tuple[int, list[dict]]]], truth: Truth) -> list[Drop]:
    """The real quality drops in the history (see the module docstring)."""
    series: dict[tuple[str, str, str], list[tuple[int, float, float | None]]] = {}
    for _, items in batches.items():
        for w, rows in items:
            for r in rows:
                if "labelled" not in r or not _glob(str(r.get("segment") or "*"), truth.segment):
                    continue  # quality rows only
                value = _num(r.get(truth.metric))
                if value is None or (truth.min_samples and (_num(r.get("labelled")) or 0) < truth.min_samples):
                    continue
                key = (str(r["model_id"]), str(r["model_version"]), str(r.get("segment") or "*"))
                series.setdefault(key, []).append((w, value, _num(r.get(f"{truth.metric}_reference"))))
    drops: list[Drop] = []
    for (model, version, segment), points in sorted(series.items()):
        points.sort()
        if truth.reference.startswith("initial:"):
            n = int(truth.reference.split(":", 1)[1])
            if len(points) <= n:
                continue
            fixed: float | None = sum(v for _, v, _ in points[:n]) / n
            points = points[n:]
        else:
            fixed = None if truth.reference == "row" else float(truth.reference)
        # stretches of consecutive bad windows: (first window end, reference, bad windows, end)
        stretches: list[list] = []
        current: list | None = None
        for w, value, row_ref in points:
            ref = fixed if fixed is not None else row_ref
            if ref is None:
                continue
            if value < ref * (1 - truth.drop):
                if current is None:
                    current = [w, ref, [], None]
                    stretches.append(current)
                current[2].append(w)
            elif current is not None:
                current[3], current = w, None
        for onset, ref, bad, end in stretches:
            if len(bad) >= truth.windows:
                end_ms = end if end is not None else points[-1][0]  # still going at the end of the range
                drops.append(Drop(model, version, segment, onset, bad[truth.windows - 1], end_ms, ref))
    return drops


# -- scores ------------------------------------------------------------------------------------------


def matches(a: Alarm, d: Drop, horizon_ms: int) -> bool:
    """Same model, version and segment, and announced from ``horizon`` before the drop's onset
    to its end (the drop followed within the horizon, or was going on). An alert that fires long
    before and stays firing does not count: otherwise one that never resolves would score best."""
    same = (a.model_id, a.model_version, a.segment) == (d.model_id, d.model_version, d.segment)
    return same and d.onset_ms - horizon_ms <= a.announced_ms <= d.end_ms


def score(alarms: list[Alarm], drops: list[Drop], horizon_ms: int) -> dict:
    """Precision (alerts that match a drop), recall (drops that an alert matches), F1, detected /
    missed drops and the median detection delay (first matching alert - onset)."""
    true_alarms = sum(any(matches(a, d, horizon_ms) for d in drops) for a in alarms)
    delays = []
    for d in drops:
        hits = [a.announced_ms for a in alarms if matches(a, d, horizon_ms)]
        if hits:
            delays.append(min(hits) - d.onset_ms)
    precision = true_alarms / len(alarms) if alarms else None
    recall = len(delays) / len(drops) if drops else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {
        "alerts": len(alarms),
        "true_alerts": true_alarms,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "detected": len(delays),
        "missed": len(drops) - len(delays),
        "median_delay_ms": statistics.median(delays) if delays else None,
    }


def sweep_parameter(rule: Rule) -> tuple[str, float] | None:
    """The parameter a sweep scales and its current value (None when there is nothing to scale)."""
    if rule.detector:
        name = get_detector(rule.detector).sweep
        value = float(rule.detector_params.get(name, get_detector(rule.detector).defaults[name]))
        return (f"detector_params.{name}", value) if value else None
    return ("threshold", rule.threshold) if rule.threshold else None


def scaled(rule: Rule, factor: float) -> Rule:
    if rule.detector:
        name = get_detector(rule.detector).sweep
        value = float(rule.detector_params.get(name, get_detector(rule.detector).defaults[name]))
        return replace(rule, detector_params={**rule.detector_params, name: value * factor})
    return replace(
        rule,
        threshold=rule.threshold * factor,
        feature_thresholds={k: v * factor for k, v in rule.feature_thresholds.items()},
    )


# -- the whole backtest ------------------------------------------------------------------------------


@dataclass
class Backtest:
    config: AlertingConfig
    truth: Truth = field(default_factory=Truth)
    horizon_ms: int = 6 * 3_600_000
    factors: tuple[float, ...] = DEFAULT_FACTORS

    def engine(self, rules: list[Rule]) -> AlertEngine:
        c = self.config
        return AlertEngine(rules, c.routing, c.correlation_window_ms, c.resolve_stale_ms)

    def end_horizon_ms(self) -> int:
        """After the last window, the timers due this soon still run (as at the end of a bounded
        job run: group_wait, the correlation hold, one group_interval)."""
        r = self.config.routing
        return self.config.correlation_window_ms + r.group_wait_ms + r.group_interval_ms

    def run(self, batches: dict[str, list[tuple[int, list[dict]]]], start_ms: int, end_ms: int) -> dict:
        last = max((items[-1][0] for items in batches.values() if items), default=start_ms)
        until = last + self.end_horizon_ms()
        weeks = max(end_ms - start_ms, 1) / WEEK_MS
        drops = quality_drops(batches, self.truth)
        alarms, per_rule = announced(replay(self.engine(self.config.rules), batches, until))
        results = []
        for rule in self.config.rules:
            mine = [a for a in alarms if a.rule == rule.name]
            matched = sum(rule.matches(r) for items in batches.values() for _, rows in items for r in rows)
            res = {"rule": rule.name, "rows": matched, "notifications": per_rule.get(rule.name, 0)}
            res["notifications_per_week"] = res["notifications"] / weeks
            res.update(score(mine, drops, self.horizon_ms))
            res["sweep"] = self.sweep(rule, batches, drops, until, weeks)
            results.append(res)
        return {
            "from": _iso(start_ms), "to": _iso(end_ms), "weeks": weeks, "truth": asdict(self.truth),
            "horizon_ms": self.horizon_ms, "windows": sum(len(v) for v in batches.values()),
            "drops": [asdict(d) for d in drops], "rules": results,
        }  # fmt: skip

    def sweep(self, rule: Rule, batches, drops: list[Drop], until: int, weeks: float) -> dict | None:
        param = sweep_parameter(rule)
        if param is None or not self.factors:
            return None
        name, base = param
        mine = {m: [(w, [r for r in rows if rule.matches(r)]) for w, rows in items] for m, items in batches.items()}
        mine = {m: [(w, rows) for w, rows in items if rows] for m, items in mine.items()}
        points = []
        for factor in self.factors:
            variant = scaled(rule, factor)
            alarms, per_rule = announced(replay(self.engine([variant]), mine, until))
            s = score(alarms, drops, self.horizon_ms)
            points.append({
                "factor": factor, "value": base * factor, "notifications": per_rule.get(rule.name, 0),
                "notifications_per_week": per_rule.get(rule.name, 0) / weeks, **s,
            })  # fmt: skip
        best = max(points, key=lambda p: (p["f1"], -abs(math.log(p["factor"]))))
        return {"parameter": name, "points": points, "best": best}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- output ------------------------------------------------------------------------------------------


def _duration_text(ms: float | None) -> str:
    if ms is None:
        return "-"
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    if ms < 60_000:
        return f"{sign}{ms / 1000:.0f}s"
    if ms < 3_600_000:
        return f"{sign}{ms / 60_000:.1f}m".replace(".0m", "m")
    if ms < 86_400_000:
        return f"{sign}{ms / 3_600_000:.1f}h"
    return f"{sign}{ms / 86_400_000:.1f}d"


def _ratio_text(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_table(result: dict) -> str:
    t = result["truth"]
    lines = [
        f"backtest {result['from']} .. {result['to']} ({result['weeks']:.2f} weeks, {result['windows']} model windows)",
        f"truth: {t['metric']} {t['drop'] * 100:g} % below reference ({t['reference']}) for {t['windows']} windows, "
        f"segment {t['segment']}: {len(result['drops'])} drops; horizon {_duration_text(result['horizon_ms'])}",
        "",
    ]
    header = ["rule", "notifications", "per week", "alerts", "precision", "recall", "missed", "median delay", "F1-best"]
    body = []
    for r in result["rules"]:
        sw = r["sweep"]
        best = "-" if not sw else f"{sw['parameter']}={sw['best']['value']:.4g} (F1 {sw['best']['f1']:.2f})"
        body.append([
            r["rule"], str(r["notifications"]), f"{r['notifications_per_week']:.1f}", str(r["alerts"]),
            _ratio_text(r["precision"]), _ratio_text(r["recall"]), str(r["missed"]),
            _duration_text(r["median_delay_ms"]), best,
        ])  # fmt: skip
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    for row in [header, *body]:
        lines.append("  ".join(v.ljust(w) if i == 0 or i == len(row) - 1 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip())  # fmt: skip
    idle = [r["rule"] for r in result["rules"] if not r["rows"]]
    if idle:  # a typo in a metric or a filter looks like a quiet rule otherwise
        lines += ["", f"matched no rows in the range: {', '.join(idle)}"]
    return "\n".join(lines) + "\n"


# -- CLI ---------------------------------------------------------------------------------------------


def load_backtest_config(path: str) -> AlertingConfig:
    """The alerting file as the job loads it, with every receiver turned into a "log" receiver:
    a backtest sends nothing and needs none of the receivers' secrets (${...} in their URLs)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if isinstance(raw, dict) and raw.get("receivers"):
        raw = {**raw, "receivers": [{"name": r["name"], "type": "log"} for r in raw["receivers"]]}
    raw = {k: v for k, v in raw.items() if k != "actions"} if isinstance(raw, dict) else raw
    return load_config(raw)


def cli(args) -> int:
    """`mlvigil backtest` (arguments in mlvigil/cli.py)."""
    from mlvigil.history import parse_time, store_of

    url, database = store_of(args.config, args.clickhouse_url, args.database)
    end = parse_time(args.to)
    start = parse_time(args.from_) if args.from_ else end - timedelta(days=7)
    if start >= end:
        raise ValueError(f"--from ({start:%Y-%m-%d %H:%M}) must be before --to ({end:%Y-%m-%d %H:%M})")
    truth = Truth(args.truth_metric, args.truth_drop, args.truth_windows, args.truth_reference,
                  args.truth_min_samples, args.truth_segment)  # fmt: skip
    factors = () if args.no_sweep else tuple(float(f) for f in args.sweep_factors.split(","))
    if any(f <= 0 for f in factors):
        raise ValueError("--sweep-factors must be positive")
    bt = Backtest(load_backtest_config(args.rules), truth, duration_ms(args.horizon), factors)
    catalog: dict = {"profiles": [], "models": {}}
    if args.config:
        from mlvigil.catalog import compile_catalog
        from mlvigil.config import load_config as load_job_config

        catalog = compile_catalog(load_job_config(args.config))
    history = read_history(url, database, start, end, args.model)
    batches = engine_batches(history, catalog)
    if not batches:
        print(f"mlvigil backtest: no metric rows from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC "
              f"in {database} (the minute tables keep 90 days)", file=sys.stderr)  # fmt: skip
        return 1
    result = bt.run(batches, int(start.timestamp() * 1000), int(end.timestamp() * 1000))
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.json else format_table(result))
    return 0
