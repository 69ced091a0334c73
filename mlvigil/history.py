"""`mlvigil history`: one metric's series for a model (and version, segment, feature) over a range.

Reads the uniform series views of sql/clickhouse/003_rollups.sql: {layer}_series_{minute,hour,day},
so the same query serves the per-minute tables (kept 90 days) and the hourly (400 days) and daily
(5 years) rollups. Works on a server and on the embedded store while the job is writing: each
query opens the store, runs and closes it (mlvigil.clickhouse.run), waiting with backoff while
the job's writer holds the directory.
"""

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mlvigil import clickhouse, metric_spec
from mlvigil.safetext import visible_controls

GRANULARITIES = metric_spec.GRANULARITIES


@dataclass(frozen=True)
class Layer:
    view: str
    keys: tuple[str, ...]  # series keys after model_id, in output order
    metrics: tuple[str, ...]


# from the metric spec: the metrics it shows in history, per layer
LAYERS = {
    name: Layer(f"{name}_series", layer.keys[1:], metric_spec.shown_in(metric_spec.HISTORY, name))
    for name, layer in metric_spec.LAYERS.items()
}
METRICS = {m: name for name, layer in LAYERS.items() for m in layer.metrics}
# feature metrics defined for one feature type only (the others are NULL there)
FEATURE_TYPE_OF = {m.name: m.feature_type for m in metric_spec.FEATURE.metrics if m.feature_type}

_RELATIVE = re.compile(r"^(?:now)?\s*-\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (a date, or a date and time; UTC unless an offset is given), 'now', or relative to
    now: 'now-7d', 'now-12h', 'now-30m', 'now-2w' (or '-7d', as --from=-7d on the command line)."""
    now = now or datetime.now(UTC)
    t = text.strip()
    if t.lower() == "now":
        return now
    m = _RELATIVE.match(t.lower())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO 8601 like 2026-11-24T10:00, 'now', or 'now-7d')") from None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def choose_granularity(start: datetime, end: datetime) -> str:
    """auto: minutes up to 2 days, hours up to 60 days, days beyond."""
    span = end - start
    if span <= timedelta(days=2):
        return "minute"
    if span <= timedelta(days=60):
        return "hour"
    return "day"


def build_query(
    database: str,
    metric: str,
    model: str,
    start: datetime,
    end: datetime,
    granularity: str,
    version: str | None = None,
    segment: str | None = None,
    feature: str | None = None,
) -> tuple[str, dict, list[str]]:
    """SQL, its parameters and the output column names. Series keys not given are returned as
    columns (one series per value); segment defaults to '*' (all traffic); feature metrics leave
    out the prediction columns ('prediction:score') unless asked for by name, and the features
    of the other type for a type-specific metric (ks of a categorical feature). Every bucket that
    overlaps [start, end) is returned (start is rounded down to the granularity)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of: {', '.join(sorted(METRICS))}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}")
    layer_name = METRICS[metric]
    layer = LAYERS[layer_name]
    if segment is not None and "segment" not in layer.keys:
        raise ValueError(f"{metric} is a {layer_name} metric: it has no segments")
    if feature is not None and "feature" not in layer.keys:
        raise ValueError(f"{metric} is a {layer_name} metric: it has no features")
    where = ["model_id = {model:String}", "window_start >= {start:DateTime64(3)}", "window_start < {end:DateTime64(3)}"]
    params: dict = {"model": model, "start": _naive_utc(bucket_start(start, granularity)), "end": _naive_utc(end)}
    if version is not None:
        where.append("model_version = {version:String}")
        params["version"] = version
    if "segment" in layer.keys:
        where.append("segment = {segment:String}")
        params["segment"] = "*" if segment is None else segment
    if "feature" in layer.keys:
        if feature is not None:
            where.append("feature = {feature:String}")
            params["feature"] = feature
        else:
            where.append("NOT startsWith(feature, 'prediction:')")
            if metric in FEATURE_TYPE_OF:
                where.append(f"feature_type = '{FEATURE_TYPE_OF[metric]}'")
    columns = ["window_start", *layer.keys, metric]
    sql = (
        f"SELECT {', '.join(columns)} FROM {database}.{layer.view}_{granularity}\n"
        f"WHERE {' AND '.join(where)}\n"
        f"ORDER BY {', '.join(layer.keys)}, window_start"
    )
    return sql, params, columns


def bucket_start(d: datetime, granularity: str) -> datetime:
    """The start of the minute, hour or (UTC) day holding d."""
    d = d.astimezone(UTC)
    if granularity == "day":
        return d.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "hour":
        return d.replace(minute=0, second=0, microsecond=0)
    return d.replace(second=0, microsecond=0)


def _naive_utc(d: datetime) -> datetime:
    return d.astimezone(UTC).replace(tzinfo=None)


def fetch(url: str, database: str, **kwargs) -> tuple[list[str], list[tuple]]:
    sql, params, columns = build_query(database, **kwargs)
    try:
        rows = clickhouse.query_rows(url, sql, params)
    except Exception as e:
        if "UNKNOWN_TABLE" in str(e) or "doesn't exist" in str(e) or "Unknown table" in str(e):
            raise RuntimeError(
                f"{database} has no series views: the store predates sql/clickhouse/003_rollups.sql. "
                "Starting the job (mlvigil run) creates them."
            ) from e
        raise
    return columns, rows


def _time_text(d: datetime, granularity: str) -> str:
    d = d if d.tzinfo is None else d.astimezone(UTC).replace(tzinfo=None)
    return d.strftime("%Y-%m-%d") if granularity == "day" else d.strftime("%Y-%m-%d %H:%M")


def _value_text(v) -> str:
    """A cell as text; names from the data (features, segments) with control characters escaped,
    so none reaches the terminal (ESC sequences, CR overwriting, bidi reordering)."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return visible_controls(str(v))


def format_table(columns: list[str], rows: list[tuple], granularity: str) -> str:
    header = [("time (UTC)" if c == "window_start" else visible_controls(c)) for c in columns]
    body = [
        [_time_text(r[0], granularity)] + [_value_text(v) or "-" for v in r[1:]]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.ljust(w) if i < len(header) - 1 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for b in body:
        lines.append(
            "  ".join(
                v.ljust(w) if i < len(b) - 1 else v.rjust(w) for i, (v, w) in enumerate(zip(b, widths, strict=True))
            )
        )
    return "\n".join(lines) + "\n"


def format_csv(columns: list[str], rows: list[tuple]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([visible_controls(c) for c in columns])
    for r in rows:
        t = r[0] if r[0].tzinfo is None else r[0].astimezone(UTC).replace(tzinfo=None)
        w.writerow(
            [t.strftime("%Y-%m-%dT%H:%M:%SZ")]
            + [_value_text(v) if not isinstance(v, float) else repr(v) for v in r[1:]]
        )
    return out.getvalue()


def store_of(config: str | None, url: str | None, database: str | None) -> tuple[str, str]:
    """The ClickHouse URL and database from --clickhouse-url / --config (the URL wins)."""
    if config:
        from mlvigil.config import load_config

        overrides = {"clickhouse": {"url": url}} if url else None
        cfg = load_config(config, overrides)
        return cfg.clickhouse_url, database or cfg.clickhouse_database
    if not url:
        raise ValueError("give --config FILE or --clickhouse-url URL")
    if url.startswith("chdb://") and not url.startswith("chdb:///"):
        from pathlib import Path

        url = "chdb:///" + str(Path(url[len("chdb://") :]).resolve()).lstrip("/")
    return url, database or "mlvigil"


def cli(args) -> int:
    """`mlvigil history` (arguments in mlvigil/cli.py)."""
    import sys

    url, database = store_of(args.config, args.clickhouse_url, args.database)
    end = parse_time(args.to)
    start = parse_time(args.from_) if args.from_ else end - timedelta(days=1)
    if start >= end:
        raise ValueError(f"--from ({start:%Y-%m-%d %H:%M}) must be before --to ({end:%Y-%m-%d %H:%M})")
    granularity = choose_granularity(start, end) if args.granularity == "auto" else args.granularity
    columns, rows = fetch(
        url, database, metric=args.metric, model=args.model, start=start, end=end, granularity=granularity,
        version=args.version, segment=args.segment, feature=args.feature,
    )  # fmt: skip
    if args.format == "csv":
        sys.stdout.write(format_csv(columns, rows))
    else:
        sys.stdout.write(format_table(columns, rows, granularity))
    if not rows:
        print(
            visible_controls(
                f"no {args.metric} for model {args.model} from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC "
                f"at {granularity} granularity"
            ),
            file=sys.stderr,
        )
    return 0
