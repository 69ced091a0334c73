"""The Grafana dashboards, without Grafana: every panel's and variable's SQL is interpolated as
Grafana and the grafana-clickhouse-datasource plugin do it, then run on chDB with seeded data.

Grafana cannot run on these machines, so the two interpolation steps are reproduced here:
1. Grafana (frontend): template variables, `$var`, `${var}`, `${var:format}`, `[[var]]`, with the
   plugin's format function (a multi-value variable becomes 'a','b'; "All" means every option);
   names that are not variables (the plugin's `$__macros`) are left alone.
2. The plugin's backend: the macros of grafana/clickhouse-datasource pkg/macros/macros.go, found
   and expanded the way grafana-plugin-sdk-go data/sqlutil/macros.go does it (`\\$__name\\b`, then
   the first parenthesis group after it, arguments split on commas and trimmed; each match is
   replaced everywhere in the query). The quirks are kept: a macro without parentheses takes
   the next parenthesis group in the query unless a ')' comes first.
"""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlvigil import clickhouse
from mlvigil.quality import QUALITY_COLUMNS
from tests.integration.test_history import MINUTES, T0, seed_store

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
DS_UID = "mlvigil-clickhouse"
QUALITY_PREDICTIONS = QUALITY_COLUMNS.index("predictions")


# ---------------------------------------------------------------- step 1: Grafana template variables

# Grafana's variableRegex (public/app/features/variables/utils.ts)
VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\${(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?}")


def plugin_format(value) -> str:
    """CHDatasource.format: arrays become 'a','b'; anything else is inserted as it is."""
    if isinstance(value, list):
        return "'" + "','".join(value) + "'"
    return str(value)


def grafana_interpolate(sql: str, values: dict, builtins: dict) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in values:
            value = values[name]
        elif name in builtins:
            value = builtins[name]
        else:
            return m.group(0)  # not a variable (e.g. $__timeFilter): left for the datasource
        if fmt == "singlequote":
            return ",".join(f"'{v}'" for v in (value if isinstance(value, list) else [value]))
        if fmt not in (None, "raw"):
            raise AssertionError(f"format {fmt!r} not reproduced here")
        return plugin_format(value)

    return VARIABLE_RE.sub(repl, sql)


# ---------------------------------------------------------------- step 2: the plugin's macros


class Query:
    def __init__(self, start: datetime, end: datetime, interval_s: float):
        self.start, self.end, self.interval_s = start, end, interval_s


def _dt(t: datetime) -> str:
    return f"toDateTime({int(t.timestamp())})"


def _dt64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(t.timestamp() * 1000)})"


def _date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC):%Y-%m-%d}')"


def _n_args(args, n, name):
    if len(args) != n:
        raise AssertionError(f"$__{name}: unexpected number of arguments: expected {n}, received {len(args)}")


def _time_filter(q, a):
    _n_args(a, 1, "timeFilter")
    return f"{a[0]} >= {_dt(q.start)} AND {a[0]} <= {_dt(q.end)}"


def _time_filter_ms(q, a):
    _n_args(a, 1, "timeFilter_ms")
    return f"{a[0]} >= {_dt64(q.start)} AND {a[0]} <= {_dt64(q.end)}"


def _date_filter(q, a):
    _n_args(a, 1, "dateFilter")
    return f"{a[0]} >= {_date(q.start)} AND {a[0]} <= {_date(q.end)}"


def _date_time_filter(q, a):
    _n_args(a, 2, "dateTimeFilter")
    return (f"({a[0]} >= {_date(q.start)} AND {a[0]} <= {_date(q.end)}) AND "
            f"({a[1]} >= {_dt(q.start)} AND {a[1]} <= {_dt(q.end)})")  # fmt: skip


def _time_interval(q, a):
    _n_args(a, 1, "timeInterval")
    return f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {int(max(q.interval_s, 1))} second)"


def _time_interval_ms(q, a):
    _n_args(a, 1, "timeInterval_ms")
    return f"toStartOfInterval(toDateTime64({a[0]}, 3), INTERVAL {int(max(q.interval_s * 1000, 1))} millisecond)"


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MACROS = {
    # grafana/clickhouse-datasource pkg/macros/macros.go
    "fromTime": lambda q, a: _dt(q.start),
    "toTime": lambda q, a: _dt(q.end),
    "fromTime_ms": lambda q, a: _dt64(q.start),
    "toTime_ms": lambda q, a: _dt64(q.end),
    "timeFilter": _time_filter,
    "timeFilter_ms": _time_filter_ms,
    "dateFilter": _date_filter,
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "timeInterval": _time_interval,
    "timeInterval_ms": _time_interval_ms,
    "interval_s": lambda q, a: str(int(max(q.interval_s, 1))),
    # grafana-plugin-sdk-go sqlutil.DefaultMacros that the plugin does not override
    "timeFrom": lambda q, a: f"{a[0]} >= '{_rfc3339(q.start)}'",
    "timeTo": lambda q, a: f"{a[0]} <= '{_rfc3339(q.end)}'",
    "table": lambda q, a: "",
    "column": lambda q, a: "",
}


def macro_matches(sql: str, name: str) -> list[tuple[str, str]]:
    """sqlutil getMacroMatches: (macro text, argument text) of every `$__name`."""
    data = sql.encode()
    out = []
    for m in re.finditer(rf"\$__{re.escape(name)}\b".encode(), data):
        rest = data[m.start() :]
        macro_end = arg_start = 0
        depth = 0
        force_break = False
        for idx, ch in enumerate(rest):
            if (depth == 0 and macro_end > 0) or force_break:
                break
            if ch == ord("("):
                depth += 1
                if arg_start == 0:
                    arg_start = idx + 1
            elif ch == ord(")"):
                if depth == 0:
                    macro_end = 0
                    force_break = True
                    continue
                depth -= 1
                macro_end = idx + 1
        if macro_end == 0:
            macro_end = m.end() - m.start()
        args = rest[arg_start : macro_end - 1] if arg_start > 0 else b""
        out.append((rest[:macro_end].decode(), args.decode()))
    return out


def expand_macros(sql: str, q: Query) -> str:
    """sqlutil Interpolate with the plugin's macros (Go iterates a map; the order is fixed here)."""
    for name in sorted(MACROS):
        for text, args in macro_matches(sql, name):
            result = MACROS[name](q, [a.strip() for a in args.split(",")])
            sql = sql.replace(text, result)
    return sql


def test_macro_expansion_matches_the_plugin():
    q = Query(datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 11, tzinfo=UTC), 60)
    f, t = 1795514400, 1795518000
    assert (
        expand_macros("WHERE $__timeFilter(ts) AND x", q)
        == f"WHERE ts >= toDateTime({f}) AND ts <= toDateTime({t}) AND x"
    )
    assert (
        expand_macros("$__timeFilter_ms(ts)", q)
        == f"ts >= fromUnixTimestamp64Milli({f}000) AND ts <= fromUnixTimestamp64Milli({t}000)"
    )
    assert (
        expand_macros("SELECT $__timeInterval(ts) AS time", q)
        == "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS time"
    )
    assert (
        expand_macros("$__timeInterval_ms(ts)", q)
        == "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 60000 millisecond)"
    )
    assert (
        expand_macros("ts >= $__fromTime AND ts <= $__toTime", q) == f"ts >= toDateTime({f}) AND ts <= toDateTime({t})"
    )
    assert expand_macros("$__fromTime_ms", q) == f"fromUnixTimestamp64Milli({f}000)"
    assert expand_macros("$__dateFilter(d)", q) == "d >= toDate('2026-11-24') AND d <= toDate('2026-11-24')"
    assert expand_macros("$__interval_s", q) == "60"
    # the parser's quirk: a macro without parentheses takes the next group unless ')' comes first
    assert expand_macros("f($__fromTime) IN (1)", q) == f"f(toDateTime({f})) IN (1)"
    assert expand_macros("$__fromTime AND x IN (1, 2)", q) == f"toDateTime({f})"
    with pytest.raises(AssertionError):
        expand_macros("$__timeFilter(a, b)", q)


# ---------------------------------------------------------------- the dashboards


def load_dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels_of(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p["type"] != "row"]


# Each panel's columns (the time column first for time series). * = the rest as listed.
EXPECTED = {
    "overview": {
        "Accuracy": ["time", "model_version", "accuracy"],
        "Business: click-through and conversion": ["time", "model_version", "ctr", "conversion_rate"],
        "PSI, worst feature": ["time", "model_version", "psi"],
        "PSI of ${feature}": ["time", "model_version", "psi"],
        "Top drifting features": ["feature", "worst_psi", "mean_psi", "worst_ks"],
        "Latency p95 and p99": ["time", "model_version", "p95", "p99"],
        "Throughput and error rate": ["time", "model_version", "requests_per_s", "error_rate"],
    },
    "data-drift": {
        "PSI by feature": ["time", "feature", "psi"],
        "KS by feature": ["time", "feature", "ks"],
        "Drift per feature over the range (click a feature to drill down)": [
            "feature", "type", "mean_psi", "worst_psi", "worst_ks", "missing_rate", "outlier_rate", "unseen_rate"],
        "Bins of ${feature}: current vs reference": ["bin", "reference", "current"],
        "Bins of ${feature} over time": ["time", "bin", "share"],
        "PSI and KS of ${feature}": ["time", "psi", "psi_worst_window", "ks"],
        "Missing, outlier and unseen rates of ${feature}": ["time", "missing_rate", "outlier_rate", "unseen_rate"],
        "Prediction drift: PSI of the score and of the predicted label": ["time", "feature", "psi"],
    },
    "model-performance": {
        "Versions side by side over the range": [
            "model_version", "n_predictions", "n_scored", "accuracy", "precision", "recall", "n_labelled", "ctr",
            "conversion_rate", "n_requests", "latency_p95", "accuracy_vs_first_pp", "accuracy_p",
            "conversion_vs_first_pp", "conversion_p"],
        "Accuracy by version": ["time", "model_version", "accuracy"],
        "Precision, recall and F1 by version": ["time", "model_version", "precision", "recall", "f1"],
        "Calibration: mean prediction vs observed rate, ECE": [
            "time", "model_version", "mean_prediction", "mean_observed", "ece"],
        "Business outcomes by version": ["time", "model_version", "ctr", "conversion_rate", "revenue_per_request"],
        "Accuracy by segment": ["time", "segment", "model_version", "accuracy"],
        "Recall by segment": ["time", "segment", "model_version", "recall"],
        "Accuracy by segment and version (range)": ["segment", "model_version", "accuracy"],
        "Versions by segment over the range": [
            "segment", "model_version", "n_predictions", "label_coverage", "accuracy", "precision", "recall", "f1",
            "ece"],
        "Latency p95 and error rate by version": ["time", "model_version", "latency_p95", "error_rate"],
        "Prediction drift by version (score PSI)": ["time", "model_version", "score_psi"],
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return seed_store(tmp_path_factory.mktemp("grafana") / "clickhouse")


def test_dashboards_and_provisioning_are_consistent():
    ds = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yaml").read_text())["datasources"]
    assert [(d["type"], d["uid"]) for d in ds] == [("grafana-clickhouse-datasource", DS_UID)]
    assert ds[0]["jsonData"]["defaultDatabase"] == "mlvigil" and ds[0]["jsonData"]["protocol"] == "http"
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "mlvigil.yaml").read_text())["providers"]
    assert prov[0]["type"] == "file" and prov[0]["options"]["path"]
    dashboards = load_dashboards()
    assert sorted(dashboards) == ["data-drift", "model-performance", "overview"]
    assert len({d["uid"] for d in dashboards.values()}) == 3
    for name, d in dashboards.items():
        names = [v["name"] for v in d["templating"]["list"]]
        assert {"model", "version", "segment", "feature"} <= set(names), name
        panels = panels_of(d)
        assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
        assert sorted(p["title"] for p in panels) == sorted(EXPECTED[name]), name
        for p in panels:
            assert p["datasource"]["uid"] == DS_UID and p["datasource"]["type"] == "grafana-clickhouse-datasource"
            assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            (t,) = p["targets"]
            assert t["editorType"] == "sql" and t["datasource"]["uid"] == DS_UID and t["rawSql"]
            assert t["format"] == (0 if p["type"] == "timeseries" else 1)
            used = {m.group(1) or m.group(2) or m.group(4) for m in VARIABLE_RE.finditer(t["rawSql"])}
            unknown = {u for u in used if not u.startswith("__")} - set(names)
            assert not unknown, (name, p["title"], unknown)
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == DS_UID


def variable_values(c, d: dict, q: Query, overrides: dict) -> dict:
    """Run the dashboard's variable queries in order, as Grafana does, and pick the current values:
    the override, else the saved current value ("All" = every option), else the first option."""
    values: dict = {}
    for v in d["templating"]["list"]:
        if v["type"] == "custom":
            options = v["query"].split(",")
        else:
            sql = expand_macros(grafana_interpolate(v["query"], values, {}), q)
            assert "$" not in sql, sql
            options = [str(r[0]) for r in c.query(sql).result_rows]
            assert options, f"variable {v['name']} has no options: {sql}"
        current = (v.get("current") or {}).get("value")
        if v["name"] in overrides:
            value = overrides[v["name"]]
            for x in value if isinstance(value, list) else [value]:
                assert x in options, (v["name"], x, options)
        elif current in (["$__all"], "$__all"):
            value = options
        elif current:
            assert current in options, (v["name"], current, options)
            value = current
        else:
            value = options[0]
        if v.get("multi") and not isinstance(value, list):
            value = [value]
        values[v["name"]] = value
    return values


def run_panel(c, panel: dict, values: dict, q: Query):
    sql = grafana_interpolate(panel["targets"][0]["rawSql"], values, {"__interval_ms": int(q.interval_s * 1000)})
    sql = expand_macros(sql, q)
    assert "$" not in sql, sql
    return c.query(sql)


CASES = [
    # (dashboard, variable overrides, interval seconds)
    ("overview", {}, 10),
    ("overview", {"segment": "user_type=new", "version": ["v2"], "feature": "device"}, 3600),
    ("data-drift", {"version": "v1", "feature": "age"}, 60),
    ("data-drift", {"version": "v2", "feature": "device", "segment": "user_type=returning"}, 600),
    ("data-drift", {"version": "v1", "feature": "prediction:score"}, 3600),
    ("model-performance", {}, 60),
    ("model-performance", {"segment": "user_type=new", "version": ["v1"]}, 86400),
]


@pytest.mark.parametrize("rollup", ["minute", "hour", "day"])
@pytest.mark.parametrize("name, overrides, interval", CASES)
def test_every_panel_returns_its_columns(store, name, overrides, interval, rollup):
    d = load_dashboards()[name]
    q = Query(T0, T0 + timedelta(minutes=MINUTES), interval)
    with clickhouse.client(store.url) as c:
        values = variable_values(c, d, q, {**overrides, "rollup": rollup})
        results = [(p, run_panel(c, p, values, q)) for p in panels_of(d)]
    for p, result in results:
        title = p["title"]
        assert list(result.column_names) == EXPECTED[name][title], title
        assert result.result_rows, f"{title}: no rows ({rollup}, {overrides})"
        if p["type"] == "timeseries":
            assert result.column_types[0].name.startswith("DateTime"), (title, result.column_types[0].name)
            times = [r[0] for r in result.result_rows]
            assert times == sorted(times), title
        numeric = [i for i, t in enumerate(result.column_types) if "Float" in t.name or "Int" in t.name]
        assert numeric and any(r[i] is not None for r in result.result_rows for i in numeric), title


def test_panels_show_the_numbers_of_the_store(store):
    """Spot checks of values: the drill-down bins against numpy over the seeded samples and the
    reference profile, accuracy per hour against the seeded outcomes, at every resolution."""
    s = store
    q = Query(T0, T0 + timedelta(minutes=MINUTES), 3600)
    d = {p["title"]: p for p in panels_of(load_dashboards()["data-drift"])}
    perf = {p["title"]: p for p in panels_of(load_dashboards()["model-performance"])}
    col = next(c for c in s.profile["features"] if c["name"] == "age")
    x = np.concatenate([s.samples[("v1", "*", "age", m)] for m in range(MINUTES)])
    counts = np.bincount(np.searchsorted(col["edges"], x, side="right"), minlength=len(col["edges"]) + 1)
    hours = sorted({(T0 + timedelta(minutes=m)).replace(minute=0) for m in range(MINUTES)})
    with clickhouse.client(s.url) as c:
        _check_values(c, s, q, d, perf, col, counts, hours)


def _check_values(c, s, q, d, perf, col, counts, hours):
    for rollup in ("minute", "hour", "day"):
        values = {"model": "recsys", "version": "v1", "segment": "*", "feature": "age", "rollup": rollup}
        rows = run_panel(c, d["Bins of ${feature}: current vs reference"], values, q).result_rows
        assert [r[0] for r in rows] == ["< 26", "[26, 36)", "[36, 46)", ">= 46"]
        assert [r[1] for r in rows] == col["expected"]
        assert [r[2] for r in rows] == pytest.approx((counts / counts.sum()).tolist(), rel=1e-9)
        if rollup == "day":
            continue  # an hourly interval over daily rows: one point per day
        values["version"] = ["v1", "v2"]
        rows = run_panel(c, perf["Accuracy by version"], values, q).result_rows
        expected = []
        for version in ("v1", "v2"):
            for h in hours:
                outs = [
                    s.outcomes[(version, "*", m)]
                    for m in range(MINUTES)
                    if h <= T0 + timedelta(minutes=m) < h + timedelta(hours=1)
                ]
                expected.append((h.replace(tzinfo=None), version, sum(o[0] for o in outs) / sum(o[1] for o in outs)))
        got = sorted((r[0].replace(tzinfo=None), r[1], r[2]) for r in rows)
        assert [g[:2] for g in got] == sorted(e[:2] for e in expected)
        assert [g[2] for g in got] == pytest.approx([e[2] for e in sorted(expected)], rel=1e-12)


def test_versions_side_by_side_panel_pools_counts_and_tests_against_the_first_version(store):
    """The side-by-side table against the seeded outcomes pooled over the range, and its z-test
    p-values against statsmodels on the same counts, at every resolution."""
    from statsmodels.stats.proportion import proportions_ztest

    s = store
    q = Query(T0, T0 + timedelta(minutes=MINUTES), 60)
    panel = next(p for p in panels_of(load_dashboards()["model-performance"])
                 if p["title"] == "Versions side by side over the range")  # fmt: skip
    expected = {}
    for version in ("v1", "v2"):
        outs = [s.outcomes[(version, "*", m)] for m in range(MINUTES)]
        correct, scored = sum(o[0] for o in outs), sum(o[1] for o in outs)
        clicks, labelled = sum(o[2] for o in outs), sum(o[3] for o in outs)
        conversions = sum(o[2] // 3 for o in outs)  # the seed converts a third of the clicks per minute
        svc = [r for r in s.service_rows if r[3] == version]
        requests = sum(r[4] for r in svc)
        predictions = sum(r[QUALITY_PREDICTIONS] for r in s.quality_rows if r[3] == version and r[4] == "*")
        expected[version] = dict(n_predictions=predictions, n_scored=scored, accuracy=correct / scored,
                                 n_labelled=labelled, ctr=clicks / labelled, conversion_rate=conversions / labelled,
                                 n_requests=requests, latency_p95=sum(r[4] * r[9] for r in svc) / requests,
                                 counts=(correct, scored, conversions, labelled))  # fmt: skip
    (c1, n1, k1, m1), (c2, n2, k2, m2) = expected["v1"]["counts"], expected["v2"]["counts"]
    acc_p, conv_p = proportions_ztest([c2, c1], [n2, n1])[1], proportions_ztest([k2, k1], [m2, m1])[1]
    v1, v2 = expected["v1"], expected["v2"]
    with clickhouse.client(s.url) as c:
        for rollup in ("minute", "hour", "day"):
            values = {"model": "recsys", "version": ["v1", "v2"], "segment": "*", "rollup": rollup}
            result = run_panel(c, panel, values, q)
            rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
            assert [r["model_version"] for r in rows] == ["v1", "v2"]
            for r in rows:
                e = expected[r["model_version"]]
                for k in ("n_predictions", "n_scored", "n_labelled", "n_requests"):
                    assert r[k] == e[k], (rollup, k)
                for k in ("accuracy", "ctr", "conversion_rate", "latency_p95"):
                    assert r[k] == pytest.approx(e[k], rel=1e-9), (rollup, k)
            assert rows[0]["accuracy_p"] is None and rows[0]["accuracy_vs_first_pp"] is None
            assert rows[1]["accuracy_vs_first_pp"] == pytest.approx((v2["accuracy"] - v1["accuracy"]) * 100, rel=1e-9)
            assert rows[1]["conversion_vs_first_pp"] == pytest.approx(
                (v2["conversion_rate"] - v1["conversion_rate"]) * 100, rel=1e-9
            )
            assert rows[1]["accuracy_p"] == pytest.approx(acc_p, rel=1e-6, abs=1e-300)
            assert rows[1]["conversion_p"] == pytest.approx(conv_p, rel=1e-6)
