"""`mlvigil report`: one self-contained HTML page with the three views of the Grafana dashboards
(overview, data drift, model performance by segment and version) for a model and time range.

For users without Grafana. The charts are inline SVG drawn here; the page has no script and no
external resource (fonts, styles, images), so it opens offline and can be mailed or archived.
It reads the series views of sql/clickhouse/003_rollups.sql at the range's granularity, with one
short open/query/close of the store per view (mlvigil.clickhouse.run), so it works while the
job is writing to the embedded store.
"""

import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mlvigil import clickhouse
from mlvigil.history import bucket_start, choose_granularity, parse_time, store_of
from mlvigil.metric_spec import find, pooled_sql, repool_weight

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]  # fmt: skip
MAX_POINTS = 400  # per series: longer ranges are averaged into wider steps
GRANULARITY_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def pooled(layer: str):
    """metric name -> its pooled expression over the layer's series rows (mlvigil.metric_spec):
    the report pools minutes, hours or days into its points the way the rollups pool minutes."""
    return lambda name: pooled_sql(name, layer)


# ---------------------------------------------------------------- data


@dataclass
class ReportData:
    model: str
    start: datetime
    end: datetime
    granularity: str
    step_s: int
    versions: list[str] = field(default_factory=list)
    quality_t: list = field(default_factory=list)  # (t, version, accuracy, ctr, conversion_rate)
    service_t: list = field(default_factory=list)  # (t, version, p95, p99, error_rate, requests)
    feature_t: list = field(default_factory=list)  # (t, version, feature, psi, ks)
    features: list = field(
        default_factory=list
    )  # (version, feature, type, psi, worst_psi, worst_ks, missing, outlier, unseen, w, n)
    segments: list = field(default_factory=list)  # (segment, version, predictions, coverage, acc, prec, rec, f1, ece)
    segment_t: list = field(default_factory=list)  # (t, version, segment, accuracy)
    profiles: dict = field(default_factory=dict)  # version -> profile
    quality_error: str | None = None


def load(url: str, database: str, model: str, start: datetime, end: datetime, granularity: str) -> ReportData:
    g = granularity
    step = max(GRANULARITY_SECONDS[g], math.ceil((end - start).total_seconds() / MAX_POINTS / 60) * 60)
    if g != "minute":
        step = max(step, GRANULARITY_SECONDS[g])
    d = ReportData(model, start, end, g, step)
    params = {
        "model": model,
        "start": bucket_start(start, g).replace(tzinfo=None),
        "end": end.astimezone(UTC).replace(tzinfo=None),
    }
    rng = "model_id = {model:String} AND window_start >= {start:DateTime64(3)} AND window_start < {end:DateTime64(3)}"
    t = f"toStartOfInterval(window_start, INTERVAL {step} second) AS t"

    f, s, q = pooled("feature"), pooled("service"), pooled("quality")
    bins_w = repool_weight(find("bin_proportions", "feature"), "feature")  # present values

    def service_and_features(c):
        d.service_t = c.query(
            f"""SELECT {t}, model_version, {s("latency_p95")} AS p95_, {s("latency_p99")} AS p99_,
                       {s("error_rate")} AS err_, {s("requests")} AS req_
                FROM {database}.service_series_{g} WHERE {rng}
                GROUP BY t, model_version ORDER BY model_version, t""",
            parameters=params,
        ).result_rows
        d.feature_t = c.query(
            f"""SELECT {t}, model_version, feature, {f("psi")} AS psi_, {f("ks")} AS ks_
                FROM {database}.feature_series_{g} WHERE {rng} AND segment = '*'
                GROUP BY t, model_version, feature ORDER BY model_version, feature, t""",
            parameters=params,
        ).result_rows
        d.features = c.query(
            f"""SELECT model_version, feature, any(feature_type), {f("psi")}, {f("psi_max")}, {f("ks_max")},
                       {f("missing_rate")}, {f("outlier_rate")}, {f("unseen_rate")},
                       sumForEach(arrayMap(p -> p * {bins_w}, bin_proportions)),
                       sumIf({bins_w}, length(bin_proportions) > 0)
                FROM {database}.feature_series_{g} WHERE {rng} AND segment = '*'
                GROUP BY model_version, feature ORDER BY model_version, feature""",
            parameters=params,
        ).result_rows
        rows = c.query(
            f"""SELECT model_version, argMax(profile, loaded_at) FROM {database}.reference_profiles
                WHERE model_id = {{model:String}} GROUP BY model_version""",
            parameters={"model": model},
        ).result_rows
        d.profiles = {v: json.loads(p) for v, p in rows}

    def quality(c):
        d.quality_t = c.query(
            f"""SELECT {t}, model_version, {q("accuracy")} AS acc_, {q("ctr")} AS ctr_,
                       {q("conversion_rate")} AS conv_
                FROM {database}.quality_series_{g} WHERE {rng} AND segment = '*'
                GROUP BY t, model_version ORDER BY model_version, t""",
            parameters=params,
        ).result_rows
        d.segments = c.query(
            f"""SELECT segment, model_version, {q("predictions")}, {q("label_coverage")},
                       {q("accuracy")}, {q("precision")}, {q("recall")}, {q("f1")}, {q("ece")}
                FROM {database}.quality_series_{g} WHERE {rng}
                GROUP BY segment, model_version ORDER BY segment = '*' DESC, segment, model_version""",
            parameters=params,
        ).result_rows
        d.segment_t = c.query(
            f"""SELECT {t}, model_version, segment, {q("accuracy")} AS acc_
                FROM {database}.quality_series_{g} WHERE {rng} AND segment != '*'
                GROUP BY t, model_version, segment ORDER BY model_version, segment, t""",
            parameters=params,
        ).result_rows

    clickhouse.run(url, service_and_features)
    try:
        clickhouse.run(url, quality)
    except Exception as e:  # a store without the quality tables (002): the report says so
        d.quality_error = str(e).splitlines()[0][:200]
    d.versions = sorted({r[1] for r in d.service_t} | {r[0] for r in d.features} | {r[1] for r in d.quality_t})
    return d


# ---------------------------------------------------------------- SVG charts


def esc(s) -> str:
    return html.escape(str(s), quote=True)


def fmt(v, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if unit == "%":
        return f"{v * 100:.1f} %"
    if unit == "ms":
        return f"{v:.1f} ms"
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(ticks[-1] + step)
    return ticks


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def legend(names: list[str], colors: dict[str, str], dashed: set | None = None) -> str:
    items = []
    for name in names:
        style = "border-top: 3px dashed" if dashed and name in dashed else "border-top: 3px solid"
        items.append(f'<span class="key"><i style="{style} {colors[name]}"></i>{esc(name)}</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def line_chart(
    title: str,
    series: dict[str, list[tuple[datetime, float | None]]],
    start: datetime,
    end: datetime,
    unit: str = "",
    thresholds: tuple[tuple[float, str], ...] = (),
    zero: bool = True,
    note: str = "",
    w: int = 560,
    h: int = 230,
) -> str:
    left, right, top, bottom = 58, 12, 10, 28
    pw, ph = w - left - right, h - top - bottom
    values = [v for pts in series.values() for _, v in pts if v is not None and math.isfinite(v)]
    if not values:
        return _card(title, '<div class="empty">no data in this range</div>', note)
    lo, hi = min(values), max(values)
    for v, _ in thresholds:
        if v <= hi * 1.6:
            hi = max(hi, v)
    if zero:
        lo = min(lo, 0.0)
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    t0, t1 = _utc(start).timestamp(), _utc(end).timestamp()
    x = lambda t: left + (_utc(t).timestamp() - t0) / max(t1 - t0, 1) * pw  # noqa: E731
    y = lambda v: top + ph - (v - lo) / (hi - lo) * ph  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">']
    for tv in ticks:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(tv):.1f}" y2="{y(tv):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tv) + 4:.1f}" class="ylab">{esc(fmt(tv, unit))}</text>')
    span = t1 - t0
    for i in range(5):
        ts = t0 + span * i / 4
        d = datetime.fromtimestamp(ts, UTC)
        label = (
            d.strftime("%m-%d")
            if span > 4 * 86400
            else d.strftime("%m-%d %H:%M")
            if span > 86400
            else d.strftime("%H:%M")
        )
        anchor = ' style="text-anchor: end"' if i == 4 else ""
        parts.append(f'<text x="{left + pw * i / 4:.1f}" y="{h - 8}" class="xlab"{anchor}>{label}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    last_label_y = None
    for v, label in sorted(thresholds, reverse=True):
        if lo <= v <= hi:
            parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="thr"/>')
            if last_label_y is None or y(v) - last_label_y > 14:  # no overlapping labels
                parts.append(f'<text x="{left + pw - 4}" y="{y(v) - 4:.1f}" class="thrlab">{esc(label)}</text>')
                last_label_y = y(v)
    colors = {}
    for i, (name, pts) in enumerate(series.items()):
        color = colors[name] = PALETTE[i % len(PALETTE)]
        path, pen = [], "M"
        single = []
        for t, v in sorted(pts, key=lambda p: _utc(p[0])):
            if v is None or not math.isfinite(v):
                pen = "M"
                continue
            path.append(f"{pen}{x(t):.1f},{y(v):.1f}")
            single.append((x(t), y(v)))
            pen = "L"
        if len(single) == 1:
            parts.append(f'<circle cx="{single[0][0]:.1f}" cy="{single[0][1]:.1f}" r="3" fill="{color}"/>')
        elif path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2"/>')
    parts.append("</svg>")
    return _card(title, "".join(parts) + legend(list(series), colors), note)


def bar_chart(
    title: str,
    categories: list[str],
    series: dict[str, list[float | None]],
    unit: str = "",
    note: str = "",
    w: int = 560,
    h: int = 230,
) -> str:
    left, right, top, bottom = 58, 12, 10, 40
    pw, ph = w - left - right, h - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not categories or not values:
        return _card(title, '<div class="empty">no data in this range</div>', note)
    ticks = nice_ticks(min(0.0, min(values)), max(values))
    lo, hi = ticks[0], ticks[-1]
    y = lambda v: top + ph - (v - lo) / (hi - lo) * ph  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">']
    for tv in ticks:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(tv):.1f}" y2="{y(tv):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tv) + 4:.1f}" class="ylab">{esc(fmt(tv, unit))}</text>')
    group = pw / len(categories)
    bw = group * 0.8 / max(len(series), 1)
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    for ci, cat in enumerate(categories):
        gx = left + ci * group + group * 0.1
        for si, (name, vs) in enumerate(series.items()):
            v = vs[ci]
            if v is None or not math.isfinite(v):
                continue
            y0, y1 = y(max(v, lo)), y(0.0 if lo <= 0 <= hi else lo)
            parts.append(
                f'<rect x="{gx + si * bw:.1f}" y="{min(y0, y1):.1f}" width="{max(bw - 1, 1):.1f}" '
                f'height="{max(abs(y1 - y0), 0.5):.1f}" fill="{colors[name]}"><title>{esc(name)} {esc(cat)}: '
                f"{esc(fmt(v, unit))}</title></rect>"
            )
        label = cat if len(cat) <= 14 else cat[:13] + "…"
        parts.append(f'<text x="{gx + group * 0.4:.1f}" y="{h - bottom + 14}" class="xlab">{esc(label)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    parts.append("</svg>")
    return _card(title, "".join(parts) + legend(list(series), colors), note)


def _card(title: str, body: str, note: str = "") -> str:
    n = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<figure class="card"><figcaption>{esc(title)}</figcaption>{body}{n}</figure>'


def table(headers: list[str], rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        cells = "".join(
            f'<td class="{classes[i][j] if classes else ""}">{esc(v)}</td>' for j, v in enumerate(r)
        )  # fmt: skip
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ---------------------------------------------------------------- the page


def psi_class(v) -> str:
    if v is None:
        return ""
    return "bad" if v > 0.2 else "warn" if v > 0.1 else "ok"


def bin_labels(col: dict | None, n: int) -> list[str]:
    if not col:
        return [f"bin {i + 1}" for i in range(n)]
    if col.get("type") == "categorical":
        cats = list(col.get("categories", []))
        return (cats + ["other"])[:n] + [f"bin {i + 1}" for i in range(len(cats) + 1, n)]
    e = col.get("edges", [])
    g = lambda v: f"{v:.4g}"  # noqa: E731
    labels = (
        [f"< {g(e[0])}"] + [f"[{g(a)}, {g(b)})" for a, b in zip(e, e[1:], strict=False)] + [f">= {g(e[-1])}"]
        if e
        else []
    )
    return labels[:n] + [f"bin {i + 1}" for i in range(len(labels), n)]


def profile_column(profile: dict | None, feature: str) -> dict | None:
    if not profile:
        return None
    if feature.startswith("prediction:"):
        return next((c for c in profile.get("prediction", []) if c["name"] == feature[len("prediction:") :]), None)
    return next((c for c in profile.get("features", []) if c["name"] == feature), None)


def overview_section(d: ReportData) -> str:
    acc = defaultdict(list)
    ctr = defaultdict(list)
    for t, v, a, c, _ in d.quality_t:
        acc[v].append((t, a))
        ctr[v].append((t, c))
    worst = defaultdict(dict)
    for t, v, f, psi, _ in d.feature_t:
        if not f.startswith("prediction:") and psi is not None:
            worst[v][t] = max(worst[v].get(t, psi), psi)
    p95, err = defaultdict(list), defaultdict(list)
    for t, v, a95, _, e, _ in d.service_t:
        p95[v].append((t, a95))
        err[v].append((t, e))
    kpis = []
    by_version_features = defaultdict(list)
    for r in d.features:
        if not r[1].startswith("prediction:"):
            by_version_features[r[0]].append(r)
    quality_overall = {r[1]: r for r in d.segments if r[0] == "*"}
    for v in d.versions:
        worst_psi = max((r[4] for r in by_version_features[v] if r[4] is not None), default=None)
        svc = [r for r in d.service_t if r[1] == v]
        req = sum(r[5] or 0 for r in svc)
        lat = [(r[2], r[5]) for r in svc if r[2] is not None]
        p95_all = sum(a * n for a, n in lat) / sum(n for _, n in lat) if lat and sum(n for _, n in lat) else None
        q = quality_overall.get(v)
        kpis.append(
            f'<div class="kpi"><h3>version {esc(v)}</h3><dl>'
            f"<dt>accuracy</dt><dd>{esc(fmt(q[4] if q else None, '%'))}</dd>"
            f'<dt>worst PSI</dt><dd class="{psi_class(worst_psi)}">{esc(fmt(worst_psi))}</dd>'
            f"<dt>latency p95</dt><dd>{esc(fmt(p95_all, 'ms'))}</dd>"
            f"<dt>requests</dt><dd>{esc(fmt(req))}</dd></dl></div>"
        )
    charts = [
        line_chart(
            "Accuracy", {f"{v}": acc[v] for v in d.versions if v in acc}, d.start, d.end, "%", note=_quality_note(d)
        ),
        line_chart(
            "PSI, worst feature",
            {v: sorted(worst[v].items()) for v in d.versions if v in worst},
            d.start,
            d.end,
            thresholds=((0.1, "0.1 moderate"), (0.2, "0.2 significant")),
        ),
        line_chart("Latency p95", {v: p95[v] for v in d.versions if v in p95}, d.start, d.end, "ms"),
        line_chart(
            "Click-through rate",
            {v: ctr[v] for v in d.versions if v in ctr},
            d.start,
            d.end,
            "%",
            note=_quality_note(d),
        ),
        line_chart("Error rate", {v: err[v] for v in d.versions if v in err}, d.start, d.end, "%"),
    ]
    return (
        '<section id="overview"><h2>Overview</h2>'
        f'<div class="kpis">{"".join(kpis)}</div><div class="grid">{"".join(charts)}</div></section>'
    )


def _quality_note(d: ReportData) -> str:
    if d.quality_error:
        return "No model-quality tables in this store (they come with the labels stream)."
    return "" if d.quality_t else "No labelled predictions in this range."


def drift_section(d: ReportData) -> str:
    out = ['<section id="data-drift"><h2>Data drift</h2>']
    if not d.features:
        out.append('<p class="empty">No feature metrics in this range.</p></section>')
        return "".join(out)
    for v in d.versions:
        rows = [r for r in d.features if r[0] == v]
        if not rows:
            continue
        profile = d.profiles.get(v) or d.profiles.get("*")
        psi_s, ks_s = defaultdict(list), defaultdict(list)
        for t, vv, f, psi, ks in d.feature_t:
            if vv == v and not f.startswith("prediction:"):
                psi_s[f].append((t, psi))
                if ks is not None:
                    ks_s[f].append((t, ks))
        out.append(f"<h3>Version {esc(v)} (all traffic)</h3><div class='grid'>")
        out.append(line_chart("PSI by feature", dict(psi_s), d.start, d.end,
                              thresholds=((0.1, "0.1"), (0.2, "0.2"))))  # fmt: skip
        out.append(line_chart("KS by feature", dict(ks_s), d.start, d.end))
        out.append("</div>")
        ordered = sorted(rows, key=lambda r: -(r[4] if r[4] is not None else -1))
        out.append(
            table(
                ["feature", "type", "mean PSI", "worst PSI", "worst KS", "missing", "outliers", "unseen"],
                [
                    [r[1], r[2], fmt(r[3]), fmt(r[4]), fmt(r[5]), fmt(r[6], "%"), fmt(r[7], "%"), fmt(r[8], "%")]
                    for r in ordered
                ],
                [["", "", psi_class(r[3]), psi_class(r[4]), "", "", "", ""] for r in ordered],
            )  # fmt: skip
        )
        out.append("<div class='grid'>")
        for r in ordered:
            w, n = r[9], r[10]
            if not n or not w:
                continue
            col = profile_column(profile, r[1])
            expected = list(col["expected"]) if col else []
            k = max(len(w), len(expected))
            current = [w[i] / n if i < len(w) else None for i in range(k)]
            series = {"current": current}
            if expected:
                series = {"reference": expected + [None] * (k - len(expected)), "current": current}
            out.append(bar_chart(f"Bins of {r[1]}: current vs reference", bin_labels(col, k), series, "%",
                                 note=f"PSI mean {fmt(r[3])}, worst window {fmt(r[4])}"))  # fmt: skip
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def performance_section(d: ReportData) -> str:
    out = ['<section id="model-performance"><h2>Model performance by segment and version</h2>']
    note = _quality_note(d)
    if note:
        out.append(f'<p class="empty">{esc(note)}</p>')
    acc = defaultdict(list)
    for t, v, a, _, _ in d.quality_t:
        acc[v].append((t, a))
    segs = [s for s in dict.fromkeys(r[0] for r in d.segments)]
    by = {(r[0], r[1]): r for r in d.segments}
    charts = [
        line_chart(
            "Accuracy by version (all traffic)", {v: acc[v] for v in d.versions if v in acc}, d.start, d.end, "%"
        ),
        bar_chart(
            "Accuracy by segment and version",
            segs,
            {v: [by[(s, v)][4] if (s, v) in by else None for s in segs] for v in d.versions},
            "%",
        ),
        bar_chart(
            "Recall by segment and version",
            segs,
            {v: [by[(s, v)][6] if (s, v) in by else None for s in segs] for v in d.versions},
            "%",
        ),
    ]
    for v in d.versions:
        s_series = defaultdict(list)
        for t, vv, s, a in d.segment_t:
            if vv == v:
                s_series[s].append((t, a))
        if s_series:
            charts.append(line_chart(f"Accuracy by segment, version {v}", dict(list(s_series.items())[:8]),
                                     d.start, d.end, "%"))  # fmt: skip
    p95 = defaultdict(list)
    for t, v, a95, _, _, _ in d.service_t:
        p95[v].append((t, a95))
    charts.append(
        line_chart("Latency p95 by version", {v: p95[v] for v in d.versions if v in p95}, d.start, d.end, "ms")
    )
    out.append(f'<div class="grid">{"".join(charts)}</div>')
    if d.segments:
        out.append(
            table(
                ["segment", "version", "predictions", "label coverage", "accuracy", "precision", "recall", "F1", "ECE"],
                [
                    [
                        r[0],
                        r[1],
                        fmt(r[2]),
                        fmt(r[3], "%"),
                        fmt(r[4], "%"),
                        fmt(r[5], "%"),
                        fmt(r[6], "%"),
                        fmt(r[7], "%"),
                        fmt(r[8]),
                    ]
                    for r in d.segments
                ],
            )  # fmt: skip
        )
    out.append("</section>")
    return "".join(out)


CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2330;
       background: #f4f5f7; }
header { background: #1d2330; color: #fff; padding: 16px 24px; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header p { margin: 0; color: #c8ccd6; }
nav a { color: #9ecbff; margin-right: 16px; }
section { padding: 8px 24px 24px; }
h2 { border-bottom: 2px solid #d5d9e0; padding-bottom: 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; margin: 0; padding: 8px 10px; width: 580px; }
.card figcaption { font-weight: 600; margin-bottom: 4px; }
.note { color: #5b6478; font-size: 12px; margin: 4px 0 0; }
.empty { color: #5b6478; font-style: italic; padding: 24px 0; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; }
.key i { display: inline-block; width: 18px; margin-right: 5px; vertical-align: middle; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6478; }
svg .ylab { text-anchor: end; } svg .xlab { text-anchor: middle; }
svg .grid { stroke: #eceef2; } svg .frame { fill: none; stroke: #c9ced8; }
svg .thr { stroke: #e15759; stroke-dasharray: 5 4; } svg .thrlab { fill: #e15759; text-anchor: end; }
.kpis { display: flex; flex-wrap: wrap; gap: 16px; margin-bottom: 16px; }
.kpi { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px 14px; min-width: 220px; }
.kpi h3 { margin: 0 0 4px; font-size: 14px; }
.kpi dl { display: grid; grid-template-columns: auto auto; gap: 2px 12px; margin: 0; }
.kpi dd { margin: 0; font-weight: 600; text-align: right; }
table { border-collapse: collapse; background: #fff; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #dde1e7; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.ok { color: #2f7d32; } td.warn, dd.warn { color: #b86e00; font-weight: 600; } td.bad, dd.bad { color: #c62828; font-weight: 700; }
"""


def render(d: ReportData, source: str) -> str:
    fmt_t = "%Y-%m-%d %H:%M"
    step = (
        f"{d.step_s // 60} min"
        if d.step_s < 3600
        else f"{d.step_s // 3600} h"
        if d.step_s < 86400
        else f"{d.step_s // 86400} d"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mlvigil report: {esc(d.model)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>mlvigil report: model {esc(d.model)}</h1>
<p>{esc(d.start.astimezone(UTC).strftime(fmt_t))} to {esc(d.end.astimezone(UTC).strftime(fmt_t))} UTC,
{esc(d.granularity)} data, one point per {esc(step)}; versions {esc(", ".join(d.versions) or "none")};
from {esc(source)}; generated {esc(datetime.now(UTC).strftime(fmt_t))} UTC.
PSI above 0.2 is significant drift, 0.1 to 0.2 moderate.</p>
<nav><a href="#overview">Overview</a><a href="#data-drift">Data drift</a>
<a href="#model-performance">Model performance</a></nav></header>
{overview_section(d)}
{drift_section(d)}
{performance_section(d)}
</body></html>
"""


def build(url: str, database: str, model: str, start: datetime, end: datetime, granularity: str = "auto") -> str:
    g = choose_granularity(start, end) if granularity == "auto" else granularity
    return render(load(url, database, model, start, end, g), clickhouse.redact(url))


def cli(args) -> int:
    """`mlvigil report` (arguments in mlvigil/cli.py)."""
    from pathlib import Path

    url, database = store_of(args.config, args.clickhouse_url, args.database)
    end = parse_time(args.to)
    start = parse_time(args.from_) if args.from_ else end - timedelta(days=1)
    if start >= end:
        raise ValueError("--from must be before --to")
    page = build(url, database, args.model, start, end, args.granularity)
    Path(args.out).write_text(page, encoding="utf-8")
    print(f"wrote {args.out} ({len(page) // 1024} KB)")
    return 0
