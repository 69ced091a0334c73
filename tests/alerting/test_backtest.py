"""`mlvigil backtest` on a real embedded store: a small history written through mlvigil.clickhouse
(dates relative to now: the minute tables' TTL applies at insert), replayed by the CLI in a
subprocess, and every figure compared with a hand computation (below)."""

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlvigil import clickhouse
from mlvigil.cli import main
from mlvigil.finalize import FEATURE_COLUMNS
from mlvigil.profile import build_profile, save_profile
from mlvigil.quality import QUALITY_COLUMNS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DB = "mlvigil"
MIN_MS = 60_000
WINDOWS = 120

# One model, version v1, all traffic. Window i spans [T0 + i min, T0 + (i + 1) min); w(i) is its end.
#   accuracy: 0.90, except 0.84 in windows 70-74 and 90-91, and 0.80 from 105 to the end (119)
#   psi of feature "age": 0.05, except 0.30 in windows 66-68 and 95-96
# Truth (accuracy 5 % below the mean of the first 60 windows = 0.90, i.e. < 0.855, 3 windows):
#   drop A: onset w(70), end w(75);  drop B: onset w(105), still going (end w(119)).
#   (90-91 is only two windows: no drop.)
# Routing: group_by includes alertname (one group per rule), group_wait 30 s, group_interval 1 m,
# no correlation hold: an alert firing at w(i) is announced at w(i) + 30 s.
#   psi_high (psi > 0.2): fires w(66), w(95) -> announced w(66)+30s, w(95)+30s.
#   acc_low (accuracy < 0.86): fires w(70), w(90), w(105).
#   acc_cusum (CUSUM down, mean 0.9, std 0.01, k 0.5, h 5, cap 2): u = -6 at 0.84 -> S = 5.5 > 5
#     at w(70) and w(90), -10 at 0.80 -> w(105); it resolves only after S decays (w(84), w(101)),
#     so it alerts exactly when acc_low does, three times.
# Horizon 10 min: an alert is true if a drop has onset <= alert + 10 min and is not over.
#   psi_high: w66.5 -> A (onset w70 <= w76.5) true; w95.5 -> B (w105 <= w105.5) true: precision 1.
#     recall: A has psi in [w60, w75] (w66.5), B in [w95, w119] (w95.5): 1; delays -3.5, -9.5 min,
#     median -6.5 min.
#   acc_low / acc_cusum: w70.5 true (A), w90.5 false (A over at w75, B starts after w100.5),
#     w105.5 true (B): precision 2/3; recall 1; delays 0.5 and 0.5 min.
# Sweep factors 0.5, 1, 2:
#   psi_high: 0.1 and 0.2 give the same alerts (F1 1), 0.4 none (F1 0): best 0.2 (the tie goes to
#     the factor nearest 1).
#   acc_low: 0.43 never fires (F1 0); 0.86 F1 = 2 (2/3) 1 / (2/3 + 1) = 0.8; 1.72 fires at w(0) and
#     never resolves (one false alert, both drops missed: F1 0): best 0.86.
# psi_weighted (psi > 0.2 x (1 - importance)) shows that --config brings the profiles' feature
# importance to the rows, as in the job: with the profile (age has importance 0) it alerts like
# psi_high; with only --clickhouse-url there is no profile, importance is 1, the threshold 0, and
# it fires at w(0) and never resolves (one alert).
RULES = """
rules:
  - name: psi_weighted
    layer: data
    metric: psi
    condition: {op: ">", threshold: 0.2}
    importance_weight: 1.0
  - name: psi_high
    layer: data
    metric: psi
    condition: {op: ">", threshold: 0.2}
  - name: acc_low
    layer: model
    metric: accuracy
    condition: {op: "<", threshold: 0.86}
  - name: acc_cusum
    layer: model
    metric: accuracy
    detector: cusum
    detector_params: {direction: down, mean: 0.9, std: 0.01}
  - name: latency_typo
    layer: service
    metric: latency_p59
    condition: {op: ">", threshold: 2000}
receivers:
  - name: chat
    type: slack
    url: ${BACKTEST_UNSET_WEBHOOK}   # never read: the backtest sends nothing
route:
  by_severity: {warning: chat}
  group_by: [model_id, model_version, segment, alertname]
  group_wait: 30s
  group_interval: 1m
correlation_window: 0s
"""


def _accuracy(i: int) -> float:
    return 0.84 if 70 <= i <= 74 or 90 <= i <= 91 else 0.80 if i >= 105 else 0.90


def _psi(i: int) -> float:
    return 0.30 if 66 <= i <= 68 or 95 <= i <= 96 else 0.05


def _seed(url: str, t0: datetime) -> None:
    clickhouse.apply_schema(url, DB)
    now = datetime.now(UTC)
    feature_rows, quality_rows = [], []
    for i in range(WINDOWS):
        ws, we = t0 + timedelta(minutes=i), t0 + timedelta(minutes=i + 1)
        f = dict.fromkeys(FEATURE_COLUMNS)
        f.update(window_start=ws, window_end=we, model_id="recsys", model_version="v1", segment="*", feature="age",
                 feature_type="numeric", events=500, present=500, missing=0, missing_rate=0.0, outliers=0,
                 outlier_rate=0.0, psi=_psi(i), ks=0.01, mean=30.0, std=5.0, unseen_rate=None,
                 bin_proportions=[0.1] * 10, computed_at=now)  # fmt: skip
        feature_rows.append([f[c] for c in FEATURE_COLUMNS])
        q = dict.fromkeys(QUALITY_COLUMNS, 0)
        q.update(window_start=ws, window_end=we, model_id="recsys", model_version="v1", segment="*", task="binary",
                 predictions=1000, labelled=1000, label_coverage=1.0, scored=1000, accuracy=_accuracy(i),
                 precision=None, recall=None, f1=None, ece=None, mean_prediction=None, mean_observed=None, mae=None,
                 rmse=None, revenue=0.0, ctr=None, conversion_rate=None, revenue_per_request=None, updates=2000,
                 computed_at=now)  # fmt: skip
        quality_rows.append([q[c] for c in QUALITY_COLUMNS])
    # a stale duplicate of one quality window (fewer updates): FINAL must keep the newer row
    stale = list(quality_rows[72])
    stale[QUALITY_COLUMNS.index("accuracy")], stale[QUALITY_COLUMNS.index("updates")] = 0.99, 1

    def write(c) -> None:  # one session: each open of the embedded store costs about a second
        c.insert("feature_metrics", feature_rows, column_names=FEATURE_COLUMNS, database=DB)
        c.insert("quality_metrics", quality_rows + [stale], column_names=QUALITY_COLUMNS, database=DB)

    clickhouse.run(url, write)


def test_backtest_cli_figures_equal_the_hand_computation(tmp_path):
    url = f"chdb://{tmp_path / 'store'}"
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    _seed(url, t0)
    rules = tmp_path / "alerts.yaml"
    rules.write_text(textwrap.dedent(RULES))
    profile = build_profile({"age": [float(a) for a in range(18, 80)]}, "recsys", "v1", importance={"age": 0.0})
    save_profile(profile, tmp_path / "recsys-v1.json")
    config = tmp_path / "mlvigil.yaml"
    config.write_text(
        f"models: {{recsys: {{profiles: {{v1: recsys-v1.json}}}}}}\nclickhouse: {{url: '{url}', database: {DB}}}\n"
    )
    t_from, t_to = t0.isoformat(), (t0 + timedelta(minutes=WINDOWS)).isoformat()
    common = ["--rules", str(rules), "--from", t_from, "--to", t_to, "--horizon", "10m", "--sweep-factors", "0.5,1,2"]
    args = ["backtest", "--clickhouse-url", url, *common]
    proc = subprocess.run(
        [sys.executable, "-m", "mlvigil.cli", "backtest", "--config", str(config), *common, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)

    def w(i: int, seconds: int = 0) -> int:  # end of window i (+ seconds), ms
        return int((t0 + timedelta(minutes=i + 1, seconds=seconds)).timestamp() * 1000)

    assert [(d["onset_ms"], d["confirmed_ms"], d["end_ms"]) for d in result["drops"]] == [
        (w(70), w(72), w(75)),
        (w(105), w(107), w(119)),
    ]
    assert all(d["reference"] == pytest.approx(0.90) for d in result["drops"])
    weeks = (WINDOWS * MIN_MS) / (7 * 86_400_000)
    assert result["weeks"] == pytest.approx(weeks)
    by_rule = {r["rule"]: r for r in result["rules"]}
    psi, acc, cusum = by_rule["psi_high"], by_rule["acc_low"], by_rule["acc_cusum"]
    assert by_rule["latency_typo"]["rows"] == 0 and by_rule["latency_typo"]["alerts"] == 0
    assert {k: v for k, v in by_rule["psi_weighted"].items() if k not in ("rule", "sweep")} == {
        k: v for k, v in psi.items() if k not in ("rule", "sweep")
    }
    assert (psi["rows"], acc["rows"], cusum["rows"]) == (WINDOWS, WINDOWS, WINDOWS)
    assert (psi["notifications"], psi["alerts"], psi["true_alerts"]) == (2, 2, 2)
    assert psi["notifications_per_week"] == pytest.approx(2 / weeks)
    assert (psi["precision"], psi["recall"], psi["missed"]) == (1.0, 1.0, 0)
    assert psi["median_delay_ms"] == ((w(66, 30) - w(70)) + (w(95, 30) - w(105))) / 2 == -6.5 * MIN_MS
    for r in (acc, cusum):
        assert (r["notifications"], r["alerts"], r["true_alerts"]) == (3, 3, 2), r["rule"]
        assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == 1.0 and r["missed"] == 0
        assert r["median_delay_ms"] == 30_000
        assert r["f1"] == pytest.approx(0.8)

    sweep = psi["sweep"]
    assert sweep["parameter"] == "threshold"
    assert [(p["value"], p["alerts"], p["f1"]) for p in sweep["points"]] == [
        (0.1, 2, 1.0),
        (0.2, 2, 1.0),
        (0.4, 0, 0.0),
    ]
    assert sweep["best"]["value"] == 0.2
    sweep = acc["sweep"]
    assert [(p["value"], p["alerts"], p["recall"]) for p in sweep["points"]] == [(0.43, 0, 0.0), (0.86, 3, 1.0),
                                                                                 (1.72, 1, 0.0)]  # fmt: skip
    assert [p["f1"] for p in sweep["points"]] == pytest.approx([0.0, 0.8, 0.0])
    assert sweep["best"]["value"] == 0.86
    sweep = cusum["sweep"]
    assert sweep["parameter"] == "detector_params.h" and [p["value"] for p in sweep["points"]] == [2.5, 5.0, 10.0]
    one = next(p for p in sweep["points"] if p["factor"] == 1.0)  # the rule alone = the rule among the others
    assert {k: one[k] for k in ("alerts", "precision", "recall", "median_delay_ms", "notifications")} == {
        k: cusum[k] for k in ("alerts", "precision", "recall", "median_delay_ms", "notifications")
    }

    # the table, in this process through main(); and the errors are loud
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    table = out.getvalue()
    assert "2 drops" in table and "horizon 10m" in table
    weighted = next(x for x in table.splitlines() if x.startswith("psi_weighted "))
    assert weighted.split()[1:5] == ["1", f"{1 / weeks:.1f}", "1", "0.00"]  # no profile: importance 1
    line = next(x for x in table.splitlines() if x.startswith("acc_low "))
    assert line.split()[1:8] == ["3", f"{3 / weeks:.1f}", "3", "0.67", "1.00", "0", "30s"]
    assert "threshold=0.86 (F1 0.80)" in line
    assert table.rstrip().endswith("matched no rows in the range: latency_typo")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([*args[:5], "--from", t_to, "--to", t_from]) == 2  # an empty range
        assert main([*args[:5], "--from", "now-400d", "--to", "now-300d"]) == 1  # nothing stored then
        assert main([*args[:5], "--truth-reference", "median"]) == 2
        assert main([*args[:5], "--database", "elsewhere"]) == 2  # a store without the tables
    assert "must be before" in err.getvalue() and "no metric rows" in err.getvalue()
    assert "truth reference must be" in err.getvalue() and "elsewhere has no metric tables" in err.getvalue()
