"""`mlvigil compare` end to end on a real embedded store seeded with two versions.

Two hours of windows ending shortly before now (the per-minute tables' 90-day TTL applies at
insert), two versions with a designed difference (v2: accuracy up about 6 pp, conversion down
about 3 pp, slower), quality rows made by the job's own mlvigil.quality from per-window counts of
raw labels kept here. The command's numbers are checked against the raw arrays pooled with numpy
and tested with statsmodels; its table output for the wording and for escaped control characters.
"""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from mlvigil import clickhouse
from mlvigil.cli import main
from mlvigil.finalize import FEATURE_COLUMNS, SERVICE_COLUMNS
from mlvigil.quality import QUALITY_COLUMNS, quality_rows
from mlvigil.stattests.psi import psi_from_counts

pytestmark = pytest.mark.integration
DB = "mlvigil"
MINUTES = 120
SEGMENTS = ("*", "user_type=new")
ODD_FEATURE = "evil\x1b[2J\x07name"  # a name from event data that must not reach the terminal raw
DESIGN = {  # version -> (accuracy, ctr, conversion, latency median ms, error rate)
    "v1": (0.70, 0.20, 0.10, 40.0, 0.010),
    "v2": (0.76, 0.20, 0.07, 46.0, 0.012),
}


def _seed(url: str, end: datetime) -> dict:
    """Writes the windows; returns the raw per-version arrays (pooled over the windows) per segment."""
    rng = np.random.default_rng(11)
    start = end - timedelta(minutes=MINUTES)
    computed_at = datetime.now(UTC)
    raw = {(v, s): {k: [] for k in ("y", "yh", "click", "conv", "rev")} for v in DESIGN for s in SEGMENTS}
    service = {v: [] for v in DESIGN}  # (requests, errors, p95)
    q_rows, s_rows, f_rows = [], [], []
    expected_age = np.array([0.25, 0.25, 0.25, 0.25])
    for minute in range(MINUTES):
        ws = start + timedelta(minutes=minute)
        we = ws + timedelta(minutes=1)
        for v, (acc, ctr, conv, lat, err) in DESIGN.items():
            n = int(rng.integers(120, 180))
            y = (rng.random(n) < 0.4).astype(int)
            yh = np.where(rng.random(n) < acc, y, 1 - y)
            click = rng.random(n) < ctr
            converted = rng.random(n) < conv
            rev = np.where(converted, rng.gamma(2.0, 10.0, n), 0.0)
            new = rng.random(n) < 0.3
            labelled = rng.random(n) < 0.85
            score = np.clip(np.where(yh == 1, 0.75, 0.25) + rng.normal(0, 0.1, n), 0, 0.999)
            segs = []
            for seg in SEGMENTS:
                m = labelled & (new if seg != "*" else True)
                yy, hh = y[m], yh[m]
                bins = np.minimum(np.floor(score[m] * 10).astype(int), 9)
                tp, fp = int(((yy == 1) & (hh == 1)).sum()), int(((yy == 0) & (hh == 1)).sum())
                fn, tn = int(((yy == 1) & (hh == 0)).sum()), int(((yy == 0) & (hh == 0)).sum())
                segs.append({
                    "segment": seg, "predictions": int((new if seg != "*" else np.ones(n, bool)).sum()),
                    "labelled": int(m.sum()), "scored": int(m.sum()), "correct": tp + tn,
                    "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                    "cal_n": np.bincount(bins, minlength=10).tolist(),
                    "cal_sum": np.bincount(bins, weights=score[m], minlength=10).tolist(),
                    "cal_pos": np.bincount(bins, weights=yy, minlength=10).tolist(),
                    "clicked": int(click[m].sum()), "clicked_n": int(m.sum()),
                    "converted": int(converted[m].sum()), "converted_n": int(m.sum()),
                    "revenue": float(rev[m].sum()), "revenue_n": int(m.sum()),
                })  # fmt: skip
                r = raw[(v, seg)]
                r["y"].append(yy), r["yh"].append(hh), r["click"].append(click[m])
                r["conv"].append(converted[m]), r["rev"].append(rev[m])
            stats = orjson.dumps({"task": "binary", "segments": segs}).decode()
            q_rows += quality_rows(stats, ws, we, "recsys", v, 2 * n, computed_at)
            latency = rng.lognormal(np.log(lat), 0.4, n)
            errors = int((rng.random(n) < err).sum())
            p50, p95, p99 = np.percentile(latency, [50, 95, 99])
            service[v].append((n, errors, float(p95)))
            s_rows.append([ws, we, "recsys", v, n, errors, errors / n, n / 60, p50, p95, p99, 0.01, 0.5, computed_at])
            for seg in SEGMENTS:
                for feature, shift in (("age", 0.15 if v == "v1" else 0.0), ("income", 0.02), (ODD_FEATURE, 0.05)):
                    p = expected_age + np.array([-shift, 0, 0, shift])
                    counts = rng.multinomial(n, p)
                    f_rows.append([ws, we, "recsys", v, seg, feature, "numeric", n, n, 0, 0.0, 0, 0.0,
                                   psi_from_counts(expected_age, counts), None, None, None, None,
                                   (counts / n).tolist(), computed_at])  # fmt: skip
    clickhouse.apply_schema(url, DB)

    def write(c):
        c.insert("quality_metrics", q_rows, column_names=QUALITY_COLUMNS, database=DB)
        c.insert("service_metrics", s_rows, column_names=SERVICE_COLUMNS, database=DB)
        c.insert("feature_metrics", f_rows, column_names=FEATURE_COLUMNS, database=DB)

    clickhouse.run(url, write)
    pooled = {k: {name: np.concatenate(arrs) for name, arrs in d.items()} for k, d in raw.items()}
    psi = {}
    for r in f_rows:
        psi.setdefault((r[3], r[4], r[5]), []).append(r[13])
    return {"raw": pooled, "service": service, "psi": psi, "start": start}


def _ref(a: tuple[int, int], b: tuple[int, int]) -> tuple[float, float, float, float]:
    """statsmodels on the pooled counts (count, n) of baseline a and version b: diff, lo, hi, p."""
    _, p = proportions_ztest([b[0], a[0]], [b[1], a[1]])
    lo, hi = confint_proportions_2indep(b[0], b[1], a[0], a[1], method="wald", compare="diff")
    return b[0] / b[1] - a[0] / a[1], lo, hi, p


def _counts(r: dict) -> dict[str, tuple[int, int]]:
    y, yh = r["y"], r["yh"]
    tp = int(((y == 1) & (yh == 1)).sum())
    return {"accuracy": (int((y == yh).sum()), len(y)), "precision": (tp, int(yh.sum())),
            "recall": (tp, int(y.sum())), "ctr": (int(r["click"].sum()), len(y)),
            "conversion_rate": (int(r["conv"].sum()), len(y))}  # fmt: skip


def test_compare_command(tmp_path, capsys):
    url = f"chdb://{tmp_path / 'clickhouse'}"
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    seed = _seed(url, end)
    period = ["--from", seed["start"].isoformat(), "--to", end.isoformat()]
    base_args = ["compare", "--clickhouse-url", url, "--model", "recsys", "--versions", "v1", "v2", *period]

    outs = {}
    for seg in SEGMENTS:
        assert main([*base_args, "--segment", seg, "--json"]) == 0
        outs[seg] = out = json.loads(capsys.readouterr().out)
        assert out["segment"] == seg
        ref = {v: _counts(seed["raw"][(v, seg)]) for v in DESIGN}
        diffs = {d["metric"]: d for d in out["differences"]}
        for metric in ("accuracy", "precision", "recall", "ctr", "conversion_rate"):
            for v in DESIGN:
                e = out["estimates"][v][metric]
                assert (e["count"], e["n"]) == ref[v][metric], (seg, v, metric)
            diff, lo, hi, p = _ref(ref["v1"][metric], ref["v2"][metric])
            d = diffs[metric]
            assert d["test"] == "two-proportion z-test" and d["version"] == "v2" and d["baseline"] == "v1"
            assert (d["difference"], d["ci_low"], d["ci_high"]) == (
                pytest.approx(diff, rel=1e-9), pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))  # fmt: skip
            assert d["p_value"] == pytest.approx(p, rel=1e-6, abs=1e-300), (seg, metric)
        for v in DESIGN:
            r = seed["raw"][(v, seg)]
            rev = out["estimates"][v]["revenue_per_request"]
            assert rev["value"] == pytest.approx(r["rev"].sum() / len(r["y"]), rel=1e-9) and rev["n"] == len(r["y"])
            top = {d["feature"]: d for d in out["drift"]}
            assert top["age"][v]["mean_psi"] == pytest.approx(np.mean(seed["psi"][(v, seg, "age")]), rel=1e-9)
            assert top["age"][v]["windows"] == MINUTES
        assert (
            diffs["revenue_per_request"]["p_value"] is None
            and "no sum of squares" in diffs["revenue_per_request"]["note"]
        )
        assert out["drift"][0]["feature"] == "age"  # v1's drift ranks it first
    # the designed effect is found: accuracy up, significantly
    out = outs["*"]
    diffs = {d["metric"]: d for d in out["differences"]}
    assert diffs["accuracy"]["difference"] > 0.03 and diffs["accuracy"]["p_value"] < 0.001
    for v in DESIGN:  # service metrics (all traffic): error rate pooled, p95 request-weighted
        svc = seed["service"][v]
        req, err = sum(s[0] for s in svc), sum(s[1] for s in svc)
        e = out["estimates"][v]
        assert (e["error_rate"]["count"], e["error_rate"]["n"]) == (err, req)
        assert e["latency_p95"]["value"] == pytest.approx(sum(s[0] * s[2] for s in svc) / req, rel=1e-9)
        assert e["latency_p95_max"]["value"] == pytest.approx(max(s[2] for s in svc), rel=1e-12)
        assert out["windows"][v] == {"quality": MINUTES, "service": MINUTES, "predictions": req}
    assert out["notes"] == []
    assert any("over all traffic" in n for n in outs["user_type=new"]["notes"])  # says what is not segmented

    # the table, worded as the article does it, and no raw control character from the data
    assert main([*base_args, "--top-features", "3"]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\x07" not in text and "evil\\x1b[2J\\x07name" in text
    ref = {v: _counts(seed["raw"][(v, "*")]) for v in DESIGN}
    acc, conv = (
        _ref(ref["v1"]["accuracy"], ref["v2"]["accuracy"]),
        _ref(ref["v1"]["conversion_rate"], ref["v2"]["conversion_rate"]),
    )
    summary = next(line for line in text.splitlines() if line.startswith("v2 vs v1: "))
    assert f"accuracy {acc[0] * 100:+.1f} pp (p < 0.001)" in summary
    conv_p = "p < 0.001" if conv[3] < 0.001 else f"p = {conv[3]:.2g}"
    assert f"conversion {conv[0] * 100:+.1f} pp ({conv_p})" in summary and conv[0] < -0.02
    assert "p95 latency +" in summary and "no test" in summary
    assert f"{ref['v1']['accuracy'][0] / ref['v1']['accuracy'][1]:.4f} (n={ref['v1']['accuracy'][1]})" in text

    # loud on what cannot be compared: an unknown version (exit 1), bad arguments (exit 2)
    assert main(["compare", "--clickhouse-url", url, "--model", "recsys", "--versions", "v1", "v9", *period]) == 1
    captured = capsys.readouterr()
    assert "no windows for version(s) v9" in captured.err and "v9 vs v1: " in captured.out
    assert main(["compare", "--clickhouse-url", url, "--model", "recsys", "--versions", "v1", "v1"]) == 2
    assert "two different versions" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the command is listed in the top-level help
        main(["--help"])
    assert "compare model versions over a period" in capsys.readouterr().out
    assert main([*base_args, "--database", "nothing_here"]) == 2
    assert "nothing_here has no metric tables" in capsys.readouterr().err
