"""`mlvigil compare`: model versions side by side over a period (seed article, section 4.4).

For each version: accuracy, precision, recall, click-through, conversion, error rate, revenue per
request, p95 latency and drift, with sample sizes; for each version against the baseline (the
first one given): the difference, a 95 % confidence interval and a two-proportion z-test, e.g.
"v2 vs v1: accuracy +5.0 pp (p < 0.001), conversion -3.0 pp (p = 0.02)".

Read from the per-minute tables (quality_metrics, service_metrics, feature_metrics, with FINAL),
so the period must lie within their retention (90 days). Every rate is pooled from counts over
the windows, never a mean of window rates:

- accuracy = sum(correct) / sum(scored); correct = accuracy * scored of each window (an integer:
  the table stores the ratio and its denominator).
- precision = sum(tp) / sum(tp + fp), recall = sum(tp) / sum(tp + fn). The table keeps no
  confusion counts, but for a binary model they follow from a window's accuracy, precision,
  recall and scored (confusion_counts below; exact, checked against the stored ratios). When a
  window's counts cannot be recovered (multi-class macro averages; a degenerate window whose
  positives are unknown), precision and recall are the scored-weighted mean of the windows'
  values and get no test (said in the output).
- ctr = sum(clicks) / sum(labelled), conversion = sum(conversions) / sum(labelled), over the
  windows whose labels reported that outcome; error rate = sum(errors) / sum(requests).
- revenue per request = sum(revenue) / sum(labelled): a difference only, no interval or p-value,
  because the tables keep no sum of squared revenue (a Welch interval needs the variance).
- p95 latency: the request-weighted mean of the windows' p95 (as the hourly rollups do) and the
  worst window's p95; no test (percentiles of windows cannot be pooled into a test).
- drift: the mean of the windows' PSI per feature (and of the score's PSI) per version.

Differences of proportions are version minus baseline in percentage points (pp); the interval is
the unpooled Wald interval, the test the pooled two-proportion z-test (two-sided), as
statsmodels' confint_proportions_2indep(method="wald") and proportions_ztest compute them.
"""

import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy.stats import norm

from mlvigil import clickhouse
from mlvigil.history import bucket_start, parse_time, store_of

MINUTE_RETENTION = timedelta(days=90)  # TTL of the per-minute tables (sql/clickhouse/001, 002)
# rows of the side-by-side table: (key, label, kind); kind "proportion" has a z-test
METRICS = (
    ("accuracy", "accuracy", "proportion"),
    ("precision", "precision", "proportion"),
    ("recall", "recall", "proportion"),
    ("ctr", "click-through", "proportion"),
    ("conversion_rate", "conversion", "proportion"),
    ("error_rate", "error rate", "proportion"),
    ("revenue_per_request", "revenue per request", "mean"),
    ("latency_p95", "p95 latency (ms)", "percentile"),
    ("latency_p95_max", "p95 latency, worst window (ms)", "percentile"),
    ("score_psi", "score PSI (mean)", "drift"),
)
SUMMARY_NAMES = {"ctr": "CTR", "conversion_rate": "conversion", "error_rate": "error rate",
                 "revenue_per_request": "revenue/request", "latency_p95": "p95 latency"}  # fmt: skip


# ---------------------------------------------------------------- statistics on counts (pure)


def two_proportion_ztest(x1, n1, x2, n2) -> tuple[np.ndarray, np.ndarray]:
    """Pooled two-proportion z-test of p2 - p1 (p = x / n), two-sided; NaN where the pooled
    proportion is 0 or 1 (no variation: nothing to test) or a sample is empty."""
    x1, n1, x2, n2 = (np.asarray(a, dtype=np.float64) for a in (x1, n1, x2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = np.where(se > 0, (x2 / n2 - x1 / n1) / se, np.nan)
    return z, 2 * norm.sf(np.abs(z))


def proportion_diff_confint(x1, n1, x2, n2, confidence: float = 0.95) -> tuple[np.ndarray, ...]:
    """p2 - p1 and its unpooled (Wald) confidence interval."""
    x1, n1, x2, n2 = (np.asarray(a, dtype=np.float64) for a in (x1, n1, x2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p1, p2 = x1 / n1, x2 / n2
        half = norm.ppf(0.5 + confidence / 2) * np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    diff = p2 - p1
    return diff, diff - half, diff + half


def weighted_mean(values, weights) -> float | None:
    """Mean of the non-NaN values weighted by weights; None when no weight remains."""
    v, w = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    keep = ~np.isnan(v) & (w > 0)
    total = w[keep].sum()
    return float((v[keep] * w[keep]).sum() / total) if total > 0 else None


def confusion_counts(scored, accuracy, precision, recall, calibrated, mean_observed) -> tuple[np.ndarray, ...]:
    """tp, fp, fn of binary windows from their stored ratios (NaN = NULL), and a mask of the
    windows where they are determined.

    With e = fp + fn = scored * (1 - accuracy), precision P = tp / (tp + fp) and recall
    R = tp / (tp + fn): fp = tp (1 - P) / P, fn = tp (1 - R) / R, so tp = e / ((1-P)/P + (1-R)/R)
    whenever P > 0, R > 0 and not P = R = 1. A NULL precision means no predicted positive
    (tp = fp = 0), a NULL recall no actual positive (tp = fn = 0). Left are P = R = 1 (no error:
    tp unknown) and P = 0 (no hit: fp and fn split unknown); there the positives tp + fn are the
    calibrated rows times their observed positive rate when every scored row was calibrated
    (had a score). Every recovered window is checked against its stored ratios."""
    n = np.asarray(scored, dtype=np.float64)
    a, p, r = (np.asarray(x, dtype=np.float64) for x in (accuracy, precision, recall))
    cal, obs = np.asarray(calibrated, dtype=np.float64), np.asarray(mean_observed, dtype=np.float64)
    e = np.round(n * (1 - a))
    tp, fp, fn = (np.full(n.shape, np.nan) for _ in range(3))
    no_pred = np.isnan(p)
    no_pos = ~no_pred & np.isnan(r)
    tp[no_pred | no_pos] = 0
    fp[no_pred], fn[no_pred] = 0, e[no_pred]
    fn[no_pos], fp[no_pos] = 0, e[no_pos]
    ratios = ~no_pred & ~no_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        general = ratios & (p > 0) & (r > 0) & ~((p == 1) & (r == 1))
        odds_p, odds_r = (1 - p) / p, (1 - r) / r
        t = e / (odds_p + odds_r)
        tp[general], fp[general], fn[general] = t[general], (t * odds_p)[general], (t * odds_r)[general]
        positives = np.where(cal == n, np.round(obs * cal), np.nan)
        perfect = ratios & (p == 1) & (r == 1)
        tp[perfect], fp[perfect], fn[perfect] = positives[perfect], 0, 0
        miss = ratios & (p == 0)
        tp[miss], fn[miss], fp[miss] = 0, positives[miss], (e - positives)[miss]
        tp, fp, fn = np.round(tp), np.round(fp), np.round(fn)
        ok = ~np.isnan(tp + fp + fn) & (tp >= 0) & (fp >= 0) & (fn >= 0) & (tp + fp + fn <= n) & ~np.isnan(a)
        ok &= np.abs((n - fp - fn) / n - a) <= 1e-9
        ok &= np.where(no_pred, tp + fp == 0, np.abs(tp / (tp + fp) - p) <= 1e-9)
        ok &= np.where(np.isnan(r), tp + fn == 0, np.abs(tp / (tp + fn) - r) <= 1e-9)
    return np.nan_to_num(tp), np.nan_to_num(fp), np.nan_to_num(fn), ok


# ---------------------------------------------------------------- estimates per version


@dataclass
class Estimate:
    value: float | None
    n: int  # the sample size: the proportion's denominator, requests, or windows (drift)
    count: int | None = None  # the proportion's numerator; None when the value is not pooled from counts
    note: str = ""


@dataclass
class Difference:
    metric: str
    version: str
    baseline: str
    difference: float | None
    relative: float | None  # difference / baseline value
    ci_low: float | None = None
    ci_high: float | None = None
    z: float | None = None
    p_value: float | None = None
    test: str | None = None  # "two-proportion z-test", or None with the reason in note
    note: str = ""


@dataclass
class Comparison:
    model: str
    segment: str
    start: datetime
    end: datetime
    versions: list[str]
    confidence: float
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)  # version -> metric -> estimate
    windows: dict[str, dict[str, int]] = field(default_factory=dict)  # version -> {quality, service, predictions}
    differences: list[Difference] = field(default_factory=list)
    drift: list[dict] = field(default_factory=list)  # per feature: {feature, <version>: mean PSI, ...}
    notes: list[str] = field(default_factory=list)


def _floats(rows: list[tuple], i: int) -> np.ndarray:
    return np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.float64)


QUALITY_COLS = ("task", "predictions", "labelled", "scored", "accuracy", "precision", "recall", "calibrated",
                "mean_observed", "clicks", "conversions", "revenue", "ctr", "conversion_rate", "revenue_per_request")  # fmt: skip


def quality_estimates(rows: list[tuple]) -> tuple[dict[str, Estimate], list[str]]:
    """Pooled accuracy, precision, recall, ctr, conversion, revenue per request of one version's
    quality windows (rows in QUALITY_COLS order), and notes on what could not be pooled."""
    c = {name: _floats(rows, i) for i, name in enumerate(QUALITY_COLS) if name != "task"}
    tasks = {r[0] for r in rows}
    notes: list[str] = []
    out: dict[str, Estimate] = {}
    has_acc = ~np.isnan(c["accuracy"])
    n_acc = c["scored"][has_acc].sum()
    correct = np.round(c["accuracy"][has_acc] * c["scored"][has_acc]).sum()
    out["accuracy"] = Estimate(float(correct / n_acc) if n_acc else None, int(n_acc), int(correct))
    binary = tasks == {"binary"}
    tp, fp, fn, ok = confusion_counts(c["scored"], c["accuracy"], c["precision"], c["recall"],
                                      c["calibrated"], c["mean_observed"])  # fmt: skip
    if binary and ok[has_acc].all():
        for name, den in (("precision", tp + fp), ("recall", tp + fn)):
            d = den.sum()
            out[name] = Estimate(float(tp.sum() / d) if d else None, int(d), int(tp.sum()))
    else:
        why = ("macro averages over classes (multi-class)" if not binary else
               f"confusion counts not recoverable in {int((~ok & has_acc).sum())} window(s)")  # fmt: skip
        for name in ("precision", "recall"):
            out[name] = Estimate(weighted_mean(c[name], c["scored"]), int(c["scored"][~np.isnan(c[name])].sum()),
                                 note=f"scored-weighted mean of window values: {why}; no test")  # fmt: skip
        if rows and tasks != {"regression"}:
            notes.append(f"precision and recall are weighted means, not pooled counts: {why}")
    for name, num in (("ctr", "clicks"), ("conversion_rate", "conversions")):
        has = ~np.isnan(c[name])
        n, x = c["labelled"][has].sum(), c[num][has].sum()
        out[name] = Estimate(x / n if n else None, int(n), int(x))
    has = ~np.isnan(c["revenue_per_request"])
    n, revenue = c["labelled"][has].sum(), c["revenue"][has].sum()
    out["revenue_per_request"] = Estimate(revenue / n if n else None, int(n),
                                          note="no sum of squares stored: difference only, no interval or test")  # fmt: skip
    return out, notes


SERVICE_COLS = ("requests", "errors", "latency_p95", "score_psi")


def service_estimates(rows: list[tuple]) -> dict[str, Estimate]:
    """Error rate, p95 latency (request-weighted mean and worst window) and mean score PSI of one
    version's service windows (rows in SERVICE_COLS order)."""
    req, err, p95, score_psi = (_floats(rows, i) for i in range(4))
    with_p95 = ~np.isnan(p95)
    return {
        "error_rate": Estimate(err.sum() / req.sum() if req.sum() else None, int(req.sum()), int(err.sum())),
        "latency_p95": Estimate(weighted_mean(p95, req), int(req[with_p95].sum()),
                                note="request-weighted mean of window p95s; no test"),
        "latency_p95_max": Estimate(float(p95[with_p95].max()) if with_p95.any() else None, int(with_p95.sum()),
                                    note="worst window's p95; no test"),
        "score_psi": Estimate(float(np.nanmean(score_psi)) if (~np.isnan(score_psi)).any() else None,
                              int((~np.isnan(score_psi)).sum()), note="mean of window PSIs; no test"),
    }  # fmt: skip


def differences(estimates: dict[str, dict[str, Estimate]], versions: list[str], confidence: float) -> list[Difference]:
    """Each version after the first against the first, metric by metric."""
    base, out = versions[0], []
    for v in versions[1:]:
        for key, _label, kind in METRICS:
            a, b = estimates[base].get(key), estimates[v].get(key)
            if a is None or b is None or a.value is None or b.value is None:
                out.append(Difference(key, v, base, None, None, note="no data for one of the versions"))
                continue
            diff = b.value - a.value
            d = Difference(key, v, base, diff, diff / a.value if a.value else None)
            if kind == "proportion" and a.count is not None and b.count is not None:
                z, p = two_proportion_ztest(a.count, a.n, b.count, b.n)
                _, lo, hi = proportion_diff_confint(a.count, a.n, b.count, b.n, confidence)
                d.ci_low, d.ci_high = float(lo), float(hi)
                if np.isnan(z):
                    d.note = "no variation in either version: nothing to test"
                else:
                    d.z, d.p_value, d.test = float(z), float(p), "two-proportion z-test"
                    if min(a.count, a.n - a.count, b.count, b.n - b.count) < 5:
                        d.note = "fewer than 5 events or non-events in a version: the normal approximation is rough"
            else:
                d.note = b.note or a.note or "no test"
            out.append(d)
    return out


# ---------------------------------------------------------------- reading the store


def _naive_utc(d: datetime) -> datetime:
    return d.astimezone(UTC).replace(tzinfo=None)


def load(
    url: str,
    database: str,
    model: str,
    versions: list[str],
    start: datetime,
    end: datetime,
    segment: str = "*",
    top_features: int = 5,
    confidence: float = 0.95,
    now: datetime | None = None,
) -> Comparison:
    """Read the windows of each version that overlap [start, end) and compare them."""
    start = bucket_start(start, "minute")  # the windows are minutes: keep the one holding start, as history does
    cmp = Comparison(model, segment, start, end, list(versions), confidence)
    params = {"model": model, "versions": list(versions), "segment": segment,
              "start": _naive_utc(start), "end": _naive_utc(end)}  # fmt: skip
    where = ("model_id = {model:String} AND model_version IN {versions:Array(String)} "
             "AND window_start >= {start:DateTime64(3)} AND window_start < {end:DateTime64(3)}")  # fmt: skip
    db = database

    def read(c) -> tuple[list, list, list]:
        q = c.query(f"SELECT model_version, {', '.join(QUALITY_COLS)} FROM {db}.quality_metrics FINAL "
                    f"WHERE {where} AND segment = {{segment:String}} ORDER BY model_version, window_start",
                    parameters=params).result_rows  # fmt: skip
        s = c.query(f"SELECT model_version, {', '.join(SERVICE_COLS)} FROM {db}.service_metrics FINAL "
                    f"WHERE {where} ORDER BY model_version, window_start", parameters=params).result_rows  # fmt: skip
        f = c.query(f"SELECT feature, model_version, avg(psi), max(psi), count(psi) FROM {db}.feature_metrics FINAL "
                    f"WHERE {where} AND segment = {{segment:String}} AND NOT startsWith(feature, 'prediction:') "
                    "GROUP BY feature, model_version ORDER BY feature, model_version", parameters=params).result_rows  # fmt: skip
        return q, s, f

    try:
        quality, service, features = clickhouse.run(url, read)
    except Exception as e:
        if any(m in str(e) for m in ("UNKNOWN_TABLE", "UNKNOWN_DATABASE", "doesn't exist", "does not exist")):
            raise RuntimeError(f"{database} has no metric tables here: {str(e).splitlines()[0][:300]}") from e
        raise
    now = now or datetime.now(UTC)
    if start < now - MINUTE_RETENTION:
        cmp.notes.append(f"per-minute rows are kept {MINUTE_RETENTION.days} days: windows before "
                         f"{now - MINUTE_RETENTION:%Y-%m-%d %H:%M} UTC are gone from the tables read here")  # fmt: skip
    if segment != "*":
        cmp.notes.append(
            "error rate, p95 latency and score PSI are over all traffic (service metrics have no segments)"
        )
    for v in versions:
        q = [r[1:] for r in quality if r[0] == v]
        s = [r[1:] for r in service if r[0] == v]
        est, notes = quality_estimates(q)
        est.update(service_estimates(s))
        cmp.estimates[v] = est
        cmp.windows[v] = {"quality": len(q), "service": len(s), "predictions": int(sum(r[1] for r in q))}
        cmp.notes += [f"{v}: {n}" for n in notes]
        if not q and not s:
            cmp.notes.append(f"{v}: no windows of model {model} in the period")
    cmp.differences = differences(cmp.estimates, cmp.versions, confidence)
    psi: dict[str, dict] = {}
    for feature, version, mean_psi, max_psi, windows in features:
        if windows:
            psi.setdefault(feature, {"feature": feature})[version] = {"mean_psi": mean_psi, "max_psi": max_psi,
                                                                     "windows": windows}  # fmt: skip
    ranked = sorted(psi.values(), key=lambda d: -max(x["mean_psi"] for k, x in d.items() if k != "feature"))
    cmp.drift = ranked[:top_features]
    return cmp


# ---------------------------------------------------------------- output

# C0 and C1 controls (incl. ESC, DEL) and the bidirectional overrides: names come from event data
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """text with control characters shown as escapes (\\x1b), so names from data cannot drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                        str(text))  # fmt: skip


def p_text(p: float | None) -> str:
    if p is None:
        return "-"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _value_text(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if key.startswith("latency"):
        return f"{v:.1f}"
    return f"{v:.4f}"


def _diff_text(key: str, kind: str, d: float | None) -> str:
    if d is None:
        return "-"
    if kind == "proportion":
        return f"{d * 100:+.2f} pp"
    if key.startswith("latency"):
        return f"{d:+.1f} ms"
    return f"{d:+.4f}"


def summary(cmp: Comparison, version: str) -> str:
    """One line: "v2 vs v1: accuracy +5.0 pp (p < 0.001), conversion -3.0 pp (p = 0.02), ..."."""
    kinds = {k: kind for k, _, kind in METRICS}
    parts = []
    for d in cmp.differences:
        if d.version != version or d.difference is None or d.metric in ("latency_p95_max", "score_psi"):
            continue
        name = SUMMARY_NAMES.get(d.metric, d.metric)
        if kinds[d.metric] == "proportion":
            text = f"{name} {d.difference * 100:+.1f} pp"
        elif d.metric == "latency_p95":
            text = f"{name} {d.difference:+.1f} ms"
        else:
            text = f"{name} {d.difference:+.4g}"
        if d.relative is not None and kinds[d.metric] != "proportion":
            text += f" ({d.relative * 100:+.1f} %, no test)"
        elif d.p_value is not None:
            text += f" ({p_text(d.p_value)})"
        else:
            text += " (no test)"
        parts.append(text)
    return f"{printable(version)} vs {printable(cmp.versions[0])}: " + (", ".join(parts) or "no data to compare")


def _table(header: list[str], rows: list[list[str]], left_last: bool = False) -> list[str]:
    """Columns padded to width: the first left-aligned, numbers right-aligned, a text last column left."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    last = len(header) - 1

    def fmt(r: list[str]) -> str:
        cells = [
            c.ljust(w) if i == 0 or (left_last and i == last) else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [fmt(header)] + [fmt(r) for r in rows]


def format_text(cmp: Comparison) -> str:
    vs = [printable(v) for v in cmp.versions]
    pct = f"{cmp.confidence * 100:g} %"
    lines = [
        f"model {printable(cmp.model)}, segment {printable(cmp.segment)}, windows starting "
        f"{cmp.start:%Y-%m-%d %H:%M} to {cmp.end:%Y-%m-%d %H:%M} UTC; baseline {vs[0]}",
        "",
    ]
    rows = [["windows (quality / service)", *(f"{cmp.windows[v]['quality']} / {cmp.windows[v]['service']}"
                                               for v in cmp.versions)],
            ["predictions", *(str(cmp.windows[v]["predictions"]) for v in cmp.versions)]]  # fmt: skip
    for key, label, _ in METRICS:
        cells = []
        for v in cmp.versions:
            e = cmp.estimates[v][key]
            cells.append(f"{_value_text(key, e.value)} (n={e.n})" if e.value is not None else "-")
        rows.append([label, *cells])
    lines += _table(["metric", *vs], rows)
    lines.append("n: scored labels (accuracy), predicted positives (precision), actual positives (recall), labels")
    lines.append("   (click-through, conversion, revenue), requests (error rate, p95), windows (worst p95, PSI)")
    kinds = {k: (label, kind) for k, label, kind in METRICS}
    for v in cmp.versions[1:]:
        lines += ["", f"{printable(v)} - {vs[0]}:"]
        body = []
        for d in (d for d in cmp.differences if d.version == v):
            label, kind = kinds[d.metric]
            ci = "-" if d.ci_low is None else f"[{d.ci_low * 100:+.2f}, {d.ci_high * 100:+.2f}] pp"
            rel = "-" if d.relative is None else f"{d.relative * 100:+.1f} %"
            body.append([label, _diff_text(d.metric, kind, d.difference), rel, ci,
                         "; ".join(x for x in (p_text(d.p_value) if d.p_value is not None else "", d.note) if x)])  # fmt: skip
        lines += _table(["metric", "difference", "relative", f"{pct} CI", "test"], body, left_last=True)
    if cmp.drift:
        lines += ["", f"drift: mean PSI over the windows (worst window), top {len(cmp.drift)} features"]
        body = []
        for d in cmp.drift:
            cells = [f"{d[v]['mean_psi']:.4f} ({d[v]['max_psi']:.4f})" if v in d else "-" for v in cmp.versions]
            body.append([printable(d["feature"]), *cells])
        lines += _table(["feature", *vs], body)
    lines += ["", *(summary(cmp, v) for v in cmp.versions[1:])]
    lines += [f"note: {printable(n)}" for n in cmp.notes]
    return "\n".join(lines) + "\n"


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def to_json(cmp: Comparison) -> str:
    d = asdict(cmp)
    d["start"], d["end"] = cmp.start.isoformat(), cmp.end.isoformat()
    d["summary"] = {v: summary(cmp, v) for v in cmp.versions[1:]}
    return json.dumps(_clean(d), indent=2, allow_nan=False) + "\n"


def cli(args) -> int:
    """`mlvigil compare` (arguments in mlvigil/cli.py). Exit 1 when a version has no windows."""
    url, database = store_of(args.config, args.clickhouse_url, args.database)
    if len(args.versions) < 2 or len(set(args.versions)) != len(args.versions):
        raise ValueError("give at least two different versions: --versions BASELINE OTHER [...]")
    if args.top_features < 0:
        raise ValueError("--top-features must be 0 or more")
    if not 0 < args.confidence < 1:
        raise ValueError("--confidence must be between 0 and 1")
    end = parse_time(args.to)
    start = parse_time(args.from_) if args.from_ else end - timedelta(days=1)
    if start >= end:
        raise ValueError(f"--from ({start:%Y-%m-%d %H:%M}) must be before --to ({end:%Y-%m-%d %H:%M})")
    cmp = load(url, database, args.model, args.versions, start, end, args.segment, args.top_features, args.confidence)
    sys.stdout.write(to_json(cmp) if args.json else format_text(cmp))
    missing = [v for v in cmp.versions if not cmp.windows[v]["quality"] and not cmp.windows[v]["service"]]
    if missing:
        print(f"mlvigil compare: no windows for version(s) {', '.join(map(printable, missing))} of model "
              f"{printable(args.model)} in the period", file=sys.stderr)  # fmt: skip
        return 1
    return 0
