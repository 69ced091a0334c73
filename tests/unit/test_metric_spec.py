"""The metric spec (mlvigil.metric_spec) against everything that mirrors it: the checked-in rollup
SQL is what the spec generates, the DDL of 001/002 has the spec's columns and types in order,
the finishing functions produce exactly the spec's stored metrics, the series views have the
spec's columns, and the Grafana panels and the report use spec columns pooled with the spec's
weights. The pooled numbers themselves are checked on chDB in tests/integration
(test_history.py, test_metric_pooling.py)."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlvigil import metric_spec, rollups
from mlvigil.metric_spec import GRAFANA, HISTORY, LAYERS, REPORT, Rate, WeightedMean, repool_weight

ROOT = Path(__file__).resolve().parents[2]
SQL = ROOT / "sql" / "clickhouse"
DASHBOARDS = ROOT / "grafana" / "dashboards"
WEIGHTED = re.compile(r"sum\((\w+) \* (\w+)\) / nullIf\(sum\(if\((\w+) IS NULL, 0, (\w+)\)\), 0\)")
RATIO = re.compile(r"sum\((\w+)\)\s*/\s*nullIf\((?:sum\((\w+)\)|sumIf\((\w+), (\w+) IS NOT NULL\)), 0\)")
SQL_WORDS = set(
    """select from where and or not in is null as by group order limit with over partition rows between
    desc asc if ifnull nullif any sum sumif max min count avg argmax sumforeach arraymap arrayfirst arrayconcat
    arrayjoin arrayenumerate length tostartofinterval tostartofhour tostartofday todatetime todatetime64
    interval second minute hour day startswith jsonextract cast array float64 string tuple name expected edges
    categories first_value erfc abs sqrt pow greatest least round case when then else end distinct join on
    left inner full outer using final window unbounded preceding following current row true false like ilike sign
    tuple arrayelement indexof has range arrayslice concat tostring tofloat64 ifnotfinite isnull isnotnull
    nan inf multiif mlvigil""".split()
)


def create_tables(text: str) -> dict[str, list[tuple[str, str]]]:
    """CREATE TABLE name (col type, ...) blocks of a schema file -> [(column, type)]."""
    out = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)\s*\((.*?)\n\)", text, re.S):
        cols = []
        for line in body.strip().splitlines():
            col, typ = line.strip().rstrip(",").split(None, 1)
            cols.append((col, typ))
        out[name] = cols
    return out


def split_top(text: str) -> list[str]:
    """Comma-separated items at parenthesis depth 0."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*items, cur.strip()]


def view_columns(text: str) -> dict[str, list[str]]:
    """CREATE [OR REPLACE] VIEW name AS SELECT ... FROM -> the output column names."""
    out = {}
    for name, select in re.findall(r"CREATE (?:OR REPLACE )?VIEW (?:IF NOT EXISTS )?\{db\}\.(\w+) AS\nSELECT (.*?)\nFROM ",
                                   text, re.S):  # fmt: skip
        out[name] = [re.split(r"\s+AS\s+", item)[-1] if " AS " in item else item for item in split_top(select)]
    return out


def test_the_checked_in_rollup_sql_is_what_the_spec_generates():
    assert (SQL / "003_rollups.sql").read_text() == rollups.render(), "run: python -m mlvigil.rollups"
    assert rollups.main(["--check"]) == 0


def test_the_ddl_has_the_spec_columns_in_order_with_their_types():
    ddl = create_tables((SQL / "001_schema.sql").read_text()) | create_tables((SQL / "002_quality.sql").read_text())
    for layer in LAYERS.values():
        assert ddl[layer.table] == [(c.name, c.ch_type) for c in layer.columns], layer.table
    rolled = create_tables((SQL / "003_rollups.sql").read_text())
    for layer in LAYERS.values():  # the rollup tables: keys, then the spec's rollup columns
        cols = [c for c, _ in rolled[f"{layer.table}_hourly"]]
        assert cols == ["window_start", *layer.keys, *layer.carried, *(s.name for s in rollups.states(layer)),
                        "rolled_at"]  # fmt: skip


def test_the_finishing_functions_write_exactly_the_spec_metrics():
    from mlvigil import finalize, quality

    assert finalize.FEATURE_COLUMNS == metric_spec.column_names("feature_metrics")
    assert quality.QUALITY_COLUMNS == metric_spec.column_names("quality_metrics")
    stored = {name: [m.name for m in layer.metrics if m.stored] for name, layer in LAYERS.items()}
    col = {"type": "categorical", "expected": [0.5, 0.5]}
    got = finalize.column_metrics(col, {"present": 2, "missing": 1, "cats": [1, 1]}, 3)
    assert list(got) == ["feature_type", *stored["feature"]]
    seg = dict(predictions=4, labelled=3, scored=3, correct=2, tp=1, fp=1, fn=0, tn=1, cal_n=[3] + [0] * 9,
               cal_sum=[0.2] + [0.0] * 9, cal_pos=[1] + [0] * 9, clicked=1, clicked_n=3, converted=0, converted_n=0,
               revenue=0.0, revenue_n=0, classes={})  # fmt: skip
    assert list(quality.segment_metrics(seg, "binary")) == ["task", *stored["quality"]]
    t = datetime.now(UTC)
    row = finalize.service_row(t, t + timedelta(minutes=1), "m", "v", 10, 1, [1.0, 2.0, 3.0], [], t)
    assert len(row) == len(finalize.SERVICE_COLUMNS) == len(LAYERS["service"].columns)


def test_series_views_have_the_spec_columns_and_history_reads_them():
    from mlvigil import history

    views = view_columns((SQL / "003_rollups.sql").read_text())
    for name in LAYERS:
        for g in metric_spec.GRANULARITIES:
            assert views[f"{name}_series_{g}"] == metric_spec.series_columns(name), (name, g)
        hist = history.LAYERS[name]
        assert hist.view == f"{name}_series" and set(hist.metrics) <= set(metric_spec.series_columns(name))
        assert set(hist.metrics) == set(metric_spec.shown_in(HISTORY, name))
        assert set(hist.keys) <= set(metric_spec.series_columns(name))
    assert set(history.FEATURE_TYPE_OF) <= set(history.LAYERS["feature"].metrics)


def test_every_rollup_column_a_series_view_reads_is_in_its_table():
    text = (SQL / "003_rollups.sql").read_text()
    tables = create_tables(text)
    for layer in LAYERS.values():
        cols = {c for c, _ in tables[f"{layer.table}_hourly"]}
        select = re.search(rf"VIEW \{{db\}}\.{layer.name}_series_hour AS\nSELECT (.*?)\nFROM ", text, re.S).group(1)
        names = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", re.sub(r" AS \w+", "", select))) - SQL_WORDS - {"x", "p"}
        assert names <= cols, (layer.name, names - cols)


def test_alert_input_layers_and_the_other_readers_use_spec_columns():
    from mlvigil import backtest, compare
    from mlvigil.alert_operators import LAYERS as ALERT_LAYERS
    from mlvigil.alerting.rules import LAYERS as RULE_LAYERS

    assert ALERT_LAYERS == {"feature_metrics": "data", "service_metrics": "service",
                            "quality_metrics": ["model", "business"]}  # fmt: skip
    for layer in LAYERS.values():
        for m in layer.metrics:
            assert (m.alert is not None) == m.stored, m.name  # every stored metric is a field of the alert rows
            assert m.alert is None or m.alert in RULE_LAYERS
    assert set(compare.QUALITY_COLS) <= set(metric_spec.column_names("quality_metrics"))
    assert set(compare.SERVICE_COLS) <= set(metric_spec.column_names("service_metrics"))
    assert set(backtest.TABLES) == set(metric_spec.BY_TABLE)


def layer_of(metric: str) -> str:
    (name,) = [n for n, layer in LAYERS.items() if metric in {m.name for m in layer.metrics}]
    return name


def check_pooling(sql: str, where: str) -> set[str]:
    """Every weighted mean and ratio in sql pools a spec metric the spec's way; returns the metrics."""
    used = set()
    for x, w, x2, w2 in WEIGHTED.findall(sql):
        assert x == x2 and w == w2, (where, x, w)
        if x == "p":  # bin proportions: arrayMap(p -> p * present, ...)
            continue
        layer = layer_of(x)
        want = repool_weight(metric_spec.find(x, layer), layer)
        assert w == want, f"{where}: {x} pooled by {w}, the spec says by {want}"
        used.add(x)
    rates = {(m.pool.numerator, m.pool.denominator): m.name for layer in LAYERS.values() for m in layer.metrics
             if isinstance(m.pool, Rate)}  # fmt: skip
    for num, den, den_if, _ in RATIO.findall(sql):
        assert (num, den or den_if) in rates, f"{where}: sum({num}) / sum({den or den_if}) is no spec rate"
        used.add(rates[(num, den or den_if)])
    return used


def panels():
    for path in sorted(DASHBOARDS.glob("*.json")):
        d = json.loads(path.read_text())
        stack = list(d["panels"])
        while stack:
            p = stack.pop(0)
            stack.extend(p.get("panels", []))
            for t in p.get("targets", []):
                yield path.stem, p["title"], t["rawSql"]


def test_grafana_panels_read_spec_columns_pooled_with_the_spec_weights():
    used: set[str] = set()
    other_tables = create_tables((SQL / "001_schema.sql").read_text())
    for dashboard, title, sql in panels():
        where = f"{dashboard} / {title}"
        layers = set(re.findall(r"mlvigil\.(\w+)_series_\$\{rollup\}", sql))
        assert layers and layers <= set(LAYERS), where
        used |= check_pooling(sql, where)
        plain = re.sub(r"'[^']*'", "''", sql)  # string literals
        plain = re.sub(r"\$\{\w+(?::\w+)?\}|\$__\w+", "", plain)  # Grafana variables and macros
        aliases = set(re.findall(r"\bAS\s+(\w+)", plain)) | set(re.findall(r"(\w+)\s*->", plain))
        aliases |= set(re.findall(r"\bWINDOW\s+(\w+)", plain)) | set(re.findall(r"\b(\w+)\s+AS\s*\(", plain))
        words = set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", plain))
        unknown = {w for w in words if w.lower() not in SQL_WORDS} - aliases - {f"{n}_series_" for n in layers}
        columns = {c for n in layers for c in metric_spec.series_columns(n)}
        for table, cols in other_tables.items():  # the reference profiles of the bins panels
            if f"mlvigil.{table}" in sql:
                columns |= {table} | {c for c, _ in cols}
        assert unknown <= columns, f"{where}: not columns of {layers}: {sorted(unknown - columns)}"
        used |= {w for w in unknown if w in {m.name for n in layers for m in LAYERS[n].metrics}}
    shown = {m for n in LAYERS for m in metric_spec.shown_in(GRAFANA, n)}
    assert used == shown, f"Grafana shows {sorted(used - shown)} beyond the spec, not {sorted(shown - used)}"


def pooled_or_weight(name: str, layer: str) -> str:
    try:
        return metric_spec.pooled_sql(name, layer)
    except ValueError:  # bin proportions: the report pools them itself, by their weight
        return repool_weight(metric_spec.find(name, layer), layer)


class _Recorder:
    """A client for report.load that records the SQL and returns no rows."""

    def __init__(self):
        self.sql: list[str] = []

    def query(self, sql, parameters=None):
        self.sql.append(sql)
        return type("R", (), {"result_rows": []})()


def test_the_report_pools_every_metric_with_the_spec_weights(monkeypatch):
    from mlvigil import report

    rec = _Recorder()
    monkeypatch.setattr(report.clickhouse, "run", lambda url, fn, *a, **k: fn(rec))
    end = datetime.now(UTC)
    report.load("chdb:///nowhere", "mlvigil", "m", end - timedelta(hours=3), end, "minute")
    used: dict[str, set[str]] = {name: set() for name in LAYERS}
    for sql in rec.sql:
        layers = re.findall(r"\.(\w+)_series_minute", sql)
        if not layers:
            continue
        used[layers[0]] |= check_pooling(sql, "report")
        used[layers[0]] |= {m.name for m in LAYERS[layers[0]].metrics if re.search(rf"\b{m.name}\b", sql)}
    for name in LAYERS:
        shown = set(metric_spec.shown_in(REPORT, name))
        inputs = {w for m in shown for w in re.findall(r"\w+", pooled_or_weight(m, name))} - SQL_WORDS
        assert shown <= used[name] <= shown | inputs, (name, used[name] ^ shown)
    assert any("sum(ece * calibrated)" in s for s in rec.sql)  # ECE over the rows it was computed over


def test_pooled_expressions_follow_the_pooling_kind():
    assert metric_spec.pooled_sql("requests", "service") == "sum(requests)"
    assert metric_spec.pooled_sql("error_rate", "service") == "sum(errors) / nullIf(sum(requests), 0)"
    assert metric_spec.pooled_sql("psi_max", "feature") == "max(psi_max)"
    assert metric_spec.pooled_sql("ece", "quality") == metric_spec.weighted_mean_sql("ece", "calibrated")
    assert metric_spec.pooled_sql("psi", "feature") == metric_spec.weighted_mean_sql("psi", "minutes")
    with pytest.raises(ValueError):
        metric_spec.pooled_sql("throughput_rps", "service")  # its seconds are not a series column
    with pytest.raises(ValueError):
        metric_spec.pooled_sql("std", "feature")
    for layer in LAYERS.values():  # a weight is a count column of the same layer
        for m in layer.metrics:
            if isinstance(m.pool, WeightedMean):
                assert m.pool.weight in metric_spec.series_columns(layer.name), m.name
