"""The rollup SQL (sql/clickhouse/003_rollups.sql), generated from mlvigil.metric_spec.

    python -m mlvigil.rollups          # rewrite sql/clickhouse/003_rollups.sql
    python -m mlvigil.rollups --check  # exit 1 if the checked-in file differs

The file stays checked in (readable SQL, applied like 001/002 by mlvigil.clickhouse), and
tests/unit/test_metric_spec.py fails when it is not what the spec generates.
"""

import argparse
import re
import sys
from dataclasses import dataclass

from mlvigil.clickhouse import SCHEMA_DIR
from mlvigil.metric_spec import (
    LAYERS,
    ArrayWeightedMean,
    Derived,
    Layer,
    Metric,
    PooledStd,
    Rate,
    RootMeanSquare,
    Sum,
    WeightedMean,
    WindowMean,
    Worst,
)

ROLLUPS_SQL = SCHEMA_DIR / "003_rollups.sql"
WIDTH = 116  # SQL lines wrap before this column
RETENTION_DAYS = {"hourly": 400, "daily": 1830}  # per-minute tables: 90 days (001, 002)


@dataclass(frozen=True)
class State:
    """A column of the hourly and daily tables: its type, its aggregate over the minutes (of m_
    columns) and how hours add up to a day (sum, max or sumForEach of the hours' values)."""

    name: str
    ch_type: str
    from_minutes: str
    over_hours: str = "sum"


def states(layer: Layer) -> list[State]:
    """The rollup columns of a layer, in order: the windows' own, then each metric's."""
    out = [State(n, t, e) for n, t, e in layer.window_states]
    seen = {s.name for s in out}

    def add(s: State) -> None:
        if s.name not in seen:  # a base shared by metrics over the same rows (latency_base, err_base)
            seen.add(s.name)
            out.append(s)

    for m in layer.metrics:
        p, x = m.pool, m.name
        if isinstance(p, Sum):
            add(State(x, m.ch_type, f"sum(m_{x})"))
        elif isinstance(p, Rate) and p.base:
            add(State(p.base, "UInt64", f"sumIf(m_{p.denominator}, m_{x} IS NOT NULL)"))
        elif isinstance(p, WeightedMean):
            add(State(p.base, "UInt64", f"sumIf(m_{p.weight}, m_{x} IS NOT NULL)"))
            add(State(p.wsum, "Float64", f"sum(ifNull(m_{x}, 0) * m_{p.weight})"))
        elif isinstance(p, PooledStd):
            w = layer.metric(p.mean).pool.weight
            add(State(p.sq_wsum, "Float64", f"sum((pow(ifNull(m_{x}, 0), 2) + pow(ifNull(m_{p.mean}, 0), 2)) * m_{w})"))
        elif isinstance(p, RootMeanSquare):
            w = layer.metric(p.like).pool.weight
            add(State(p.sq_wsum, "Float64", f"sum(pow(ifNull(m_{x}, 0), 2) * m_{w})"))
        elif isinstance(p, WindowMean):
            add(State(p.sum, "Float64", f"sum(ifNull(m_{x}, 0))"))
            add(State(p.n, "UInt32", f"toUInt32(count(m_{x}))"))
        elif isinstance(p, Worst):
            add(State(p.state, "Nullable(Float64)", f"max(m_{p.of})", "max"))
        elif isinstance(p, ArrayWeightedMean):
            add(State(p.base, "UInt64", f"sumIf(m_{p.weight}, length(m_{x}) > 0)"))
            add(State(p.wsum, "Array(Float64)", f"sumForEach(arrayMap(p -> p * m_{p.weight}, m_{x}))", "sumForEach"))
    return out


def series_expr(layer: Layer, m: Metric) -> str:
    """A series column of the hourly and daily views, from the rollup columns."""
    p, x = m.pool, m.name
    if isinstance(p, Sum):
        return x
    if isinstance(p, Rate):
        den = p.base or p.denominator
        return f"if({den} > 0, {p.numerator} / {den}, {p.empty}) AS {x}"
    if isinstance(p, WeightedMean):
        return f"if({p.base} > 0, {p.wsum} / {p.base}, NULL) AS {x}"
    if isinstance(p, PooledStd):
        mean = layer.metric(p.mean).pool
        return (f"if({mean.base} > 0, sqrt(greatest({p.sq_wsum} / {mean.base} - pow({mean.wsum} / {mean.base}, 2), 0)),"
                f" NULL) AS {x}")  # fmt: skip
    if isinstance(p, RootMeanSquare):
        base = layer.metric(p.like).pool.base
        return f"if({base} > 0, sqrt({p.sq_wsum} / {base}), NULL) AS {x}"
    if isinstance(p, WindowMean):
        return f"if({p.n} > 0, {p.sum} / {p.n}, NULL) AS {x}"
    if isinstance(p, Worst):
        return x if p.state == x else f"{p.state} AS {x}"
    if isinstance(p, ArrayWeightedMean):
        return f"if({p.base} > 0, arrayMap(x -> x / {p.base}, {p.wsum}), CAST([] AS Array(Float64))) AS {x}"
    if isinstance(p, Derived):
        return f"{p.rollup} AS {x}"
    raise TypeError(p)


def minute_series_expr(m: Metric) -> str:
    """A series column of the per-minute view: the stored value (a minute is its own worst window)."""
    if isinstance(m.pool, Worst):
        return f"{m.pool.of} AS {m.name}"
    if isinstance(m.pool, Derived):
        return f"{m.pool.minute} AS {m.name}"
    return m.name


def _wrap(items: list[str], first: str, indent: str, own_lines: bool = False) -> str:
    """items joined by ', ', wrapped before WIDTH, the first line starting with `first`; with
    own_lines, each computed expression (one with a parenthesis) on a line of its own."""
    lines, line = [], first
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        alone = own_lines and "(" in item
        if line != first and line != indent and (alone or len(line) + len(piece) > WIDTH):
            lines.append(line.rstrip())
            line = indent
        line += piece + " "
        if alone:
            lines.append(line.rstrip())
            line = indent
    if line.strip():
        lines.append(line.rstrip())
    return "\n".join(lines)


def _table(layer: Layer) -> str:
    key_types = {c.name: c.ch_type for c in layer.head}
    cols = [("window_start", "DateTime64(3, 'UTC')")]
    cols += [(k, key_types[k]) for k in (*layer.keys, *layer.carried)]
    cols += [(s.name, s.ch_type) for s in states(layer)] + [("rolled_at", "DateTime64(3, 'UTC')")]
    body = ",\n".join(f"    {n.ljust(16)} {t}" for n, t in cols)
    order = ", ".join((*layer.keys, "window_start"))
    t = layer.table
    return f"""CREATE TABLE IF NOT EXISTS {{db}}.{t}_hourly
(
{body}
)
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY ({order})
TTL toDateTime(window_start) + INTERVAL {RETENTION_DAYS["hourly"]} DAY;

CREATE TABLE IF NOT EXISTS {{db}}.{t}_daily AS {{db}}.{t}_hourly
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYear(window_start)
ORDER BY ({order})
TTL toDateTime(window_start) + INTERVAL {RETENTION_DAYS["daily"]} DAY;"""


def _minute_inputs(layer: Layer) -> list[str]:
    """The minute columns the hourly aggregates read, as m_<name>, in first-use order."""
    used: list[str] = [*layer.carried]
    for s in states(layer):
        for name in re.findall(r"\bm_(\w+)", s.from_minutes):
            if name not in used:
                used.append(name)
    derived = {m.name: m.pool.minute for m in layer.metrics if isinstance(m.pool, Derived)}
    return [f"{derived.get(n, n)} AS m_{n}" for n in used]


def _rollup_view(layer: Layer, level: str) -> str:
    """The materialized view that recomputes every (key, hour) (level 'hourly', from the minutes)
    or (key, day) ('daily', from the hours) an insert touches, from the deduplicated rows."""
    t, keys = layer.table, ", ".join(layer.keys)
    if level == "hourly":
        src, dst, unit, interval, p, stamp = t, f"{t}_hourly", "minute", "HOUR", "m", "toStartOfHour"
        inputs, newest = _minute_inputs(layer), list(layer.newest)
        aggregates = [f"{s.from_minutes} AS {s.name}" for s in states(layer)]
    else:
        src, dst, unit, interval, p, stamp = f"{t}_hourly", f"{t}_daily", "hour", "DAY", "h", "toStartOfDay"
        inputs = [f"{n} AS h_{n}" for n in (*layer.carried, *(s.name for s in states(layer)))]
        newest = ["rolled_at"]
        aggregates = [f"{s.over_hours}(h_{s.name}) AS {s.name}" for s in states(layer)]
    head = [f"toDateTime64({stamp}(" + unit + "), 3, 'UTC') AS window_start", keys]
    head += [f"any({p}_{c}) AS {c}" for c in layer.carried]
    select = ",\n".join(f"    {x}" for x in [*head, *aggregates, "now64(3, 'UTC') AS rolled_at"])
    inner = _wrap([f"window_start AS {unit}", keys, *inputs, *newest], "        SELECT ", " " * 15)
    order = ", ".join(f"{c} DESC" for c in newest)
    return f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.{dst}_mv TO {{db}}.{dst} AS
SELECT
{select}
FROM
(
    SELECT *
    FROM
    (
{inner}
        FROM {{db}}.{src}
        UNION ALL
{inner}
        FROM {{db}}.{src}_final
        WHERE window_start >= (SELECT {stamp}(min(window_start)) FROM {{db}}.{src})
          AND window_start < (SELECT {stamp}(max(window_start)) + INTERVAL 1 {interval} FROM {{db}}.{src})
          AND ({keys}, {stamp}(window_start)) IN
              (SELECT {keys}, {stamp}(window_start) FROM {{db}}.{src})
    )
    ORDER BY {order}
    LIMIT 1 BY {keys}, {unit}
)
GROUP BY window_start, {keys};"""


def _series_views(layer: Layer) -> str:
    """{layer}_series_{minute,hour,day}: one shape at every granularity. Plain views, so
    CREATE OR REPLACE: a store made by an older version gets this file's columns."""
    lead = ["window_start", *layer.keys, *layer.carried]
    minute = _wrap([*lead, "toUInt32(1) AS minutes", *(minute_series_expr(m) for m in layer.metrics)],
                   "SELECT ", " " * 7)  # fmt: skip
    rolled = _wrap([*lead, "minutes", *(series_expr(layer, m) for m in layer.metrics)], "SELECT ", " " * 7, True)
    out = [f"CREATE OR REPLACE VIEW {{db}}.{layer.name}_series_minute AS\n{minute}\nFROM {{db}}.{layer.table} FINAL;"]
    for granularity, level in (("hour", "hourly"), ("day", "daily")):
        out.append(f"CREATE OR REPLACE VIEW {{db}}.{layer.name}_series_{granularity} AS\n{rolled}\n"
                   f"FROM {{db}}.{layer.table}_{level} FINAL;")  # fmt: skip
    return "\n\n".join(out)


HEADER = """\
-- GENERATED by `python -m mlvigil.rollups` from mlvigil/metric_spec.py: edit the spec, not this file.
-- Hourly and daily rollups of the per-minute metrics, and uniform "series" views over all three
-- granularities. {db} is replaced by the configured database name.
--
-- Retention (TTL on window_start; rows go when their part is merged):
--   feature_metrics, service_metrics, quality_metrics (per minute)    90 days
--   feature_metrics_hourly, service_metrics_hourly, quality_...      400 days
--   feature_metrics_daily, service_metrics_daily, quality_..._daily  1830 days (5 years)
--
-- Correct under replays and updates. A minute row may be written again: after a restart
-- (at-least-once, same values, later computed_at) or with new values. Adding every insert into
-- a running sum (AggregatingMergeTree with sumState) would count a replayed minute twice, and
-- argMax/-State per hour cannot forget a minute's old contribution. So each insert into a minute
-- table recomputes every (key, hour) it touches from the deduplicated minutes: the inserted
-- block together with the stored rows of those hours (newest row per minute wins, as FINAL
-- does), and writes the whole hour again. The hourly tables are ReplacingMergeTree on
-- rolled_at (the time of the recompute), so the newest recompute of an hour is the one kept.
-- The daily tables are recomputed the same way from the hourly rows. Read all of them with
-- FINAL (the *_series_* views do).
-- Trade-offs: each flush re-reads at most an hour of minutes (a day of hours) for the keys it
-- touches (a few thousand rows, milliseconds); recomputes of one hour must not run concurrently,
-- which holds because the job has one writer (parallelism 1); an hour can only be recomputed
-- while its minutes are still kept (90 days), which is far longer than any replay.
-- How each metric pools (the spec's docstring has the reasons): counts are sums; rates are
-- recomputed from the pooled counts; means and std are pooled over the minutes' counts (exact);
-- bin proportions are pooled weighted by present values; psi and ks are the mean of the minutes'
-- values, psi_max and ks_max the worst minute. Latency percentiles are the request-weighted mean
-- of the minutes' percentiles (not the hour's exact percentile), with the worst minute's p95 and
-- p99 alongside. Precision, recall and F1 are the scored-weighted mean of the minutes' values
-- (their confusion counts are not stored: close to, not equal to, the pooled hour's values); ECE
-- is the calibrated-weighted mean (the ECE with each minute's bins kept apart). Quality rows are
-- versioned by `updates` (002_quality.sql): the newest row of a minute is the one with the most
-- updates, as FINAL picks it. Hours and days are UTC.
-- Existing minutes (written before this file was applied) are rolled up by replaying them to
-- their own table, which is harmless for the same reason:
--   INSERT INTO {db}.feature_metrics SELECT * FROM {db}.feature_metrics FINAL WHERE window_start >= ...
-- The series views ({layer}_series_{minute,hour,day}) serve the CLI (`mlvigil history`), the
-- report and the Grafana dashboards."""


def render() -> str:
    """The whole of 003_rollups.sql."""
    parts = [HEADER]
    for layer in LAYERS.values():
        t = layer.table
        parts.append(
            f"-- {t}: the stored rows, each key once. Inside a materialized view every mention of its\n"
            f"-- source table means the inserted block, so the views read the stored rows through these.\n"
            f"CREATE VIEW IF NOT EXISTS {{db}}.{t}_final AS SELECT * FROM {{db}}.{t} FINAL;"
        )
        parts.append(_table(layer))
        parts.append(f"CREATE VIEW IF NOT EXISTS {{db}}.{t}_hourly_final AS SELECT * FROM {{db}}.{t}_hourly FINAL;")
        parts.append(_rollup_view(layer, "hourly"))
        parts.append(_rollup_view(layer, "daily"))
        parts.append(_series_views(layer))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlvigil.rollups", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in file is not what the spec gives")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if ROLLUPS_SQL.read_text() != text:
            print(f"{ROLLUPS_SQL} is out of date: run python -m mlvigil.rollups", file=sys.stderr)
            return 1
        return 0
    ROLLUPS_SQL.write_text(text)
    print(f"wrote {ROLLUPS_SQL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
