"""History on the embedded store: rollups exact under replays and updates, `mlvigil history`
formats and granularities, and reads while a writer process is using the store.

The store is seeded with rows shaped exactly like the job's (mlvigil.finalize / mlvigil.quality
column lists), computed from raw synthetic samples kept here, so the hourly and daily values can
be checked against numpy over the same samples. seed_store() is also used by test_grafana.py
and test_report.py.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlvigil import clickhouse, synth
from mlvigil.finalize import FEATURE_COLUMNS, SERVICE_COLUMNS
from mlvigil.profile import build_profile
from mlvigil.quality import QUALITY_COLUMNS, binary_metrics, calibration
from mlvigil.stattests.psi import psi_from_counts

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DB = "mlvigil"
# Dates relative to now: ClickHouse applies the tables' TTL at insert, so fixed dates older than
# the 90-day retention would silently write nothing. 180 minutes from T0: two UTC days, four hours.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=7)
DAY1 = DAY0 + timedelta(days=1)
T0 = DAY0.replace(hour=22, minute=30)
LIVE_DAY = DAY0 + timedelta(days=6)  # yesterday: the concurrent writer's day


def iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%d")


MINUTES = 180
DRIFT_MINUTE = 90  # v1 drifts from here on; v2 does not
VERSIONS = ("v1", "v2")
SEGMENTS = ("*", "user_type=new", "user_type=returning")


@dataclass
class Seed:
    url: str
    start: datetime
    end: datetime
    feature_rows: list[list] = field(default_factory=list)
    service_rows: list[list] = field(default_factory=list)
    quality_rows: list[list] = field(default_factory=list)
    samples: dict = field(default_factory=dict)
    """(version, segment, feature, minute) -> raw values (numpy array, NaN = missing)"""
    outcomes: dict = field(default_factory=dict)
    """(version, segment, minute) -> (correct, scored, clicks, labelled)"""
    profile: dict = field(default_factory=dict)


def _ks(points: np.ndarray, x: np.ndarray) -> float:
    grid = np.concatenate([points, x])
    a = np.searchsorted(np.sort(x), grid, side="right") / len(x)
    b = np.searchsorted(points, grid, side="right") / len(points)
    return float(np.max(np.abs(a - b)))


def _feature_row(ws, version, segment, name, col, values, computed_at) -> list:
    """One feature_metrics row from a window's raw values, as mlvigil.finalize shapes it."""
    events = len(values)
    if col["type"] == "numeric":
        x = np.asarray(values, float)
        x = x[~np.isnan(x)]
    else:
        x = np.asarray([v for v in values if v is not None], dtype=object)
    present = len(x)
    m = dict(events=events, present=present, missing=events - present, missing_rate=(events - present) / events,
             outliers=0, outlier_rate=None, psi=None, ks=None, mean=None, std=None, unseen_rate=None,
             bin_proportions=[])  # fmt: skip
    if present and col["type"] == "numeric":
        counts = np.bincount(
            np.searchsorted(np.asarray(col["edges"]), x, side="right"), minlength=len(col["edges"]) + 1
        )
        out = np.abs(x - col["mean"]) > 3 * col["std"]
        m.update(outliers=int(out.sum()), outlier_rate=float(out.mean()), psi=psi_from_counts(col["expected"], counts),
                 ks=_ks(np.asarray(col["ks_points"]), x), mean=float(x.mean()), std=float(x.std()),
                 bin_proportions=(counts / present).tolist())  # fmt: skip
    elif present:
        cats = list(col["categories"])
        counts = np.zeros(len(cats) + 1)
        for v in x:
            counts[cats.index(v) if v in cats else len(cats)] += 1
        m.update(psi=psi_from_counts(col["expected"], counts), unseen_rate=float(counts[-1] / present),
                 bin_proportions=(counts / present).tolist())  # fmt: skip
    return (
        [ws, ws + timedelta(minutes=1), "recsys", version, segment, name, col["type"]]
        + [m[k] for k in FEATURE_COLUMNS[7:-1]]
        + [computed_at]
    )


def make_seed(url: str, per_minute: int = 40, seed: int = 5) -> Seed:
    """Rows for model recsys, versions v1 and v2, 180 minutes from T0, segments * and user_type."""
    rng = np.random.default_rng(seed)
    training = synth.training_columns("recsys", 5000)
    profile = build_profile(training, "recsys", "v1", custom_edges={"age": synth.AGE_EDGES})
    s = Seed(url, T0, T0 + timedelta(minutes=MINUTES), profile=profile)
    computed_at = DAY1.replace(hour=3)
    for minute in range(MINUTES):
        ws = T0 + timedelta(minutes=minute)
        for version in VERSIONS:
            drifted = version == "v1" and minute >= DRIFT_MINUTE
            n = per_minute + int(rng.integers(0, 20))
            f = synth.recsys_features(rng, n, drifted)
            dur = f["browsing_duration"].copy()
            dur[rng.random(n) < 0.05] = np.nan  # some missing values
            f["browsing_duration"] = dur
            score = synth.score_of("recsys", {**f, "browsing_duration": np.nan_to_num(dur, nan=10.0)})
            predicted = (score >= 0.5).astype(int)
            values = {**{k: v for k, v in f.items()}, "score": score, "predicted_label": [str(p) for p in predicted]}
            new = rng.random(n) < 0.3
            # labels: calibrated before the drift, the model is wrong far more often after it
            p_true = np.clip(score + (0.35 if drifted else 0.0), 0, 1)
            label = (rng.random(n) < p_true).astype(int)
            labelled_mask = rng.random(n) < 0.8
            clicked = rng.random(n) < (0.12 if not drifted else 0.06)
            latency = rng.lognormal(np.log(40), 0.4, n)
            errors = int((rng.random(n) < 0.01).sum())
            for segment in SEGMENTS:
                idx = np.ones(n, bool) if segment == "*" else (new if segment.endswith("new") else ~new)
                columns = [(c["name"], c) for c in profile["features"]]
                columns += [("prediction:" + c["name"], c) for c in profile["prediction"]]
                for name, col in columns:
                    raw = values[col["name"]]
                    sub = (np.asarray(raw, float)[idx] if col["type"] == "numeric"
                           else [v for v, keep in zip(raw, idx, strict=True) if keep])  # fmt: skip
                    row = _feature_row(ws, version, segment, name, col, sub, computed_at)
                    s.feature_rows.append(row)
                    s.samples[(version, segment, name, minute)] = sub
                    if segment == "*" and name == "prediction:score":
                        score_row = row
                lab = labelled_mask & idx
                y, yh = label[lab], predicted[lab]
                tp, fp = int(((y == 1) & (yh == 1)).sum()), int(((y == 0) & (yh == 1)).sum())
                fn, tn = int(((y == 1) & (yh == 0)).sum()), int(((y == 0) & (yh == 0)).sum())
                bins = np.minimum(np.floor(score[lab] * 10).astype(int), 9)
                cal_n = np.bincount(bins, minlength=10).tolist()
                cal_sum = np.bincount(bins, weights=score[lab], minlength=10).tolist()
                cal_pos = np.bincount(bins, weights=y, minlength=10).tolist()
                bm, cal = binary_metrics(tp, fp, fn, tn), calibration(cal_n, cal_sum, cal_pos)
                labelled, clicks = int(lab.sum()), int(clicked[lab].sum())
                q = dict(task="binary", predictions=int(idx.sum()), labelled=labelled,
                         label_coverage=labelled / int(idx.sum()), scored=labelled, accuracy=bm["accuracy"],
                         precision=bm["precision"], recall=bm["recall"], f1=bm["f1"], **cal, mae=None, rmse=None,
                         clicks=clicks, conversions=int(clicks // 3), revenue=float(clicks) * 2.5,
                         ctr=clicks / labelled if labelled else None,
                         conversion_rate=(clicks // 3) / labelled if labelled else None,
                         revenue_per_request=clicks * 2.5 / labelled if labelled else None)  # fmt: skip
                s.quality_rows.append(
                    [ws, ws + timedelta(minutes=1), "recsys", version, segment]
                    + [q[k] for k in QUALITY_COLUMNS[5:-2]]
                    + [int(idx.sum()) + labelled, computed_at]
                )
                s.outcomes[(version, segment, minute)] = (tp + tn, labelled, clicks, labelled)
            p = np.percentile(latency, [50, 95, 99])
            s.service_rows.append(
                [ws, ws + timedelta(minutes=1), "recsys", version, n, errors, errors / n, n / 60.0,
                 float(p[0]), float(p[1]), float(p[2]), score_row[FEATURE_COLUMNS.index("psi")],
                 score_row[FEATURE_COLUMNS.index("mean")], computed_at]
            )  # fmt: skip
    return s


def seed_store(path: Path, per_minute: int = 40) -> Seed:
    """A fresh embedded store with the schema (001-003) and the seeded rows, like the job writes them."""
    url = f"chdb://{path}"
    s = make_seed(url, per_minute)
    clickhouse.apply_schema(url, DB)

    def write(c):
        c.insert("reference_profiles", [["recsys", v, s.profile["fingerprint"], json.dumps(s.profile), T0] for v in ("v1", "*")],
                 column_names=["model_id", "model_version", "fingerprint", "profile", "loaded_at"], database=DB)  # fmt: skip
        # in flushes of a few minutes, as the writer does
        for i in range(0, MINUTES, 30):
            lo, hi = T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 30)
            for table, rows, cols in (("feature_metrics", s.feature_rows, FEATURE_COLUMNS),
                                      ("service_metrics", s.service_rows, SERVICE_COLUMNS),
                                      ("quality_metrics", s.quality_rows, QUALITY_COLUMNS)):  # fmt: skip
                c.insert(table, [r for r in rows if lo <= r[0] < hi], column_names=cols, database=DB)

    clickhouse.run(url, write)
    return s


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seed_store(tmp_path_factory.mktemp("history") / "clickhouse")


def _pooled(seed: Seed, version, segment, feature, minutes) -> np.ndarray:
    return np.concatenate([seed.samples[(version, segment, feature, m)] for m in minutes])


def _minutes_of(start: datetime, end: datetime) -> list[int]:
    return [m for m in range(MINUTES) if start <= T0 + timedelta(minutes=m) < end]


def _series(url, view, where="model_id = 'recsys'", cols="*"):
    return clickhouse.query_rows(url, f"SELECT {cols} FROM {DB}.{view} WHERE {where} ORDER BY ALL")


def test_rollups_equal_numpy_over_the_raw_samples(seeded):
    s = seeded
    hours = [DAY0.replace(hour=22) + timedelta(hours=h) for h in range(4)]
    days = [DAY0, DAY1]
    for gran, buckets, width in (("hour", hours, timedelta(hours=1)), ("day", days, timedelta(days=1))):
        rows = _series(s.url, f"feature_series_{gran}", "model_id = 'recsys' AND feature IN ('age', 'browsing_duration')",
                       "window_start, model_version, segment, feature, minutes, events, present, missing_rate, mean, "
                       "std, bin_proportions, psi, psi_max")  # fmt: skip
        assert len(rows) == len(buckets) * 2 * 3 * 2
        for (
            ws,
            version,
            segment,
            feature,
            minutes,
            events,
            present,
            missing_rate,
            mean,
            std,
            bins,
            psi,
            psi_max,
        ) in rows:
            start = ws.replace(tzinfo=UTC)
            assert start in buckets
            ms = _minutes_of(start, start + width)
            x = _pooled(s, version, segment, feature, ms)
            v = x[~np.isnan(x)]
            assert minutes == len(ms) and events == len(x) and present == len(v)
            assert missing_rate == pytest.approx(1 - len(v) / len(x), abs=1e-12)
            assert mean == pytest.approx(v.mean(), rel=1e-9) and std == pytest.approx(v.std(), rel=1e-6)
            col = next(c for c in s.profile["features"] if c["name"] == feature)
            counts = np.bincount(np.searchsorted(col["edges"], v, side="right"), minlength=len(col["edges"]) + 1)
            assert bins == pytest.approx((counts / len(v)).tolist(), abs=1e-12)
            minute_psi = [r[FEATURE_COLUMNS.index("psi")] for r in s.feature_rows
                          if r[3] == version and r[4] == segment and r[5] == feature and start <= r[0] < start + width]  # fmt: skip
            assert psi == pytest.approx(np.mean(minute_psi), rel=1e-9) and psi_max == max(minute_psi)
        svc = _series(
            s.url, f"service_series_{gran}", cols="window_start, model_version, requests, error_rate, latency_p95_max"
        )
        for ws, version, requests, error_rate, p95_max in svc:
            start = ws.replace(tzinfo=UTC)
            mine = [r for r in s.service_rows if r[3] == version and start <= r[0] < start + width]
            assert requests == sum(r[4] for r in mine)
            assert error_rate == pytest.approx(sum(r[5] for r in mine) / requests, rel=1e-12)
            assert p95_max == max(r[9] for r in mine)
        qual = _series(
            s.url, f"quality_series_{gran}", cols="window_start, model_version, segment, accuracy, ctr, label_coverage"
        )
        assert len(qual) == len(buckets) * 2 * 3
        for ws, version, segment, accuracy, ctr, coverage in qual:
            start = ws.replace(tzinfo=UTC)
            outs = [s.outcomes[(version, segment, m)] for m in _minutes_of(start, start + width)]
            assert accuracy == pytest.approx(sum(o[0] for o in outs) / sum(o[1] for o in outs), rel=1e-12)
            assert ctr == pytest.approx(sum(o[2] for o in outs) / sum(o[3] for o in outs), rel=1e-12)
            assert 0.7 < coverage < 0.9
    # the drift is visible at every granularity: v1's age PSI after the drift minute, v2's not
    hourly = dict(
        ((r[0].hour, r[1]), r[2])
        for r in _series(s.url, "feature_series_hour", "feature = 'age' AND segment = '*'", "window_start, model_version, psi")
    )  # fmt: skip
    assert hourly[(1, "v1")] > 0.15 > hourly[(1, "v2")]


def _snapshot(url):
    return {
        view: _series(url, view)
        for view in [f"{layer}_series_{g}" for layer in ("feature", "service", "quality") for g in ("hour", "day")]
    }


def _assert_same(a: dict, b: dict) -> None:
    """Equal, floats up to summation-order rounding (the recompute may add minutes in another order)."""
    assert a.keys() == b.keys()
    for view in a:
        assert len(a[view]) == len(b[view]), view
        for ra, rb in zip(a[view], b[view], strict=True):
            for x, y in zip(ra, rb, strict=True):
                if isinstance(x, float) or isinstance(x, list):
                    assert x == pytest.approx(y, rel=1e-12, abs=1e-15), (view, ra, rb)
                else:
                    assert x == y, (view, ra, rb)


def test_replays_and_updates_keep_rollups_exact(seeded, tmp_path):
    s = seeded
    before = _snapshot(s.url)
    later = DAY1.replace(hour=4)

    def replay(rows):
        return [r[:-1] + [later] for r in rows if T0 + timedelta(minutes=20) <= r[0] < T0 + timedelta(minutes=110)]

    def write(c):  # a replay after a restart: the same minutes again, in other batches
        c.insert("feature_metrics", replay(s.feature_rows), column_names=FEATURE_COLUMNS, database=DB)
        c.insert("service_metrics", replay(s.service_rows), column_names=SERVICE_COLUMNS, database=DB)
        c.insert("quality_metrics", replay(s.quality_rows), column_names=QUALITY_COLUMNS, database=DB)

    clickhouse.run(s.url, write)
    _assert_same(_snapshot(s.url), before)

    # Updates: three minutes of age v1 '*' get new values (a later computed_at); a quality minute
    # gets more labels (higher updates); an older quality row replayed late is ignored.
    i_psi, i_q = FEATURE_COLUMNS.index("psi"), QUALITY_COLUMNS.index("accuracy")
    targets = [r for r in s.feature_rows if r[3] == "v1" and r[4] == "*" and r[5] == "age"][40:43]
    updated = [r[:i_psi] + [9.0] + r[i_psi + 1 : -1] + [later + timedelta(minutes=1)] for r in targets]
    q = next(r for r in s.quality_rows if r[3] == "v2" and r[4] == "*" and r[0] == T0 + timedelta(minutes=100))
    i_up = QUALITY_COLUMNS.index("updates")
    q_new = q[:i_q] + [0.0] + q[i_q + 1 : i_up] + [q[i_up] + 5, later]
    q_old = q[:i_q] + [1.0] + q[i_q + 1 : i_up] + [q[i_up] - 5, later + timedelta(minutes=2)]

    def write2(c):
        c.insert("feature_metrics", updated, column_names=FEATURE_COLUMNS, database=DB)
        c.insert("quality_metrics", [q_new], column_names=QUALITY_COLUMNS, database=DB)
        c.insert("quality_metrics", [q_old], column_names=QUALITY_COLUMNS, database=DB)

    clickhouse.run(s.url, write2)
    hour = targets[0][0].replace(minute=0)
    minute_psi = {r[0]: r[i_psi] for r in s.feature_rows if r[3] == "v1" and r[4] == "*" and r[5] == "age"}
    minute_psi.update({r[0]: 9.0 for r in targets})
    in_hour = [v for t, v in minute_psi.items() if hour <= t < hour + timedelta(hours=1)]
    (psi, psi_max, minutes), = _series(s.url, "feature_series_hour", f"model_version = 'v1' AND segment = '*' AND feature = 'age' AND window_start = '{hour:%Y-%m-%d %H:%M:%S}'", "psi, psi_max, minutes")  # fmt: skip
    assert (psi, psi_max, minutes) == (pytest.approx(np.mean(in_hour), rel=1e-12), 9.0, len(in_hour))
    day = hour.replace(hour=0)
    in_day = [v for t, v in minute_psi.items() if day <= t < day + timedelta(days=1)]
    (dpsi, dmax), = _series(s.url, "feature_series_day", f"model_version = 'v1' AND segment = '*' AND feature = 'age' AND window_start = '{day:%Y-%m-%d}'", "psi, psi_max")  # fmt: skip
    assert dpsi == pytest.approx(np.mean(in_day), rel=1e-12) and dmax == 9.0
    qhour = q[0].replace(minute=0)
    correct = {m: o for (v, seg, m), o in s.outcomes.items() if v == "v2" and seg == "*"}
    ms = _minutes_of(qhour, qhour + timedelta(hours=1))
    expected = (sum(correct[m][0] for m in ms) - correct[100][0]) / sum(correct[m][1] for m in ms)
    (acc,), = _series(s.url, "quality_series_hour", f"model_version = 'v2' AND segment = '*' AND window_start = '{qhour:%Y-%m-%d %H:%M:%S}'", "accuracy")  # fmt: skip
    assert acc == pytest.approx(expected, rel=1e-12)

    # Backfill as the README says: empty the rollups, replay the minutes to their own tables.
    after = _snapshot(s.url)

    def backfill(c):
        for t in ("feature", "service", "quality"):
            for g in ("hourly", "daily"):
                c.command(f"TRUNCATE TABLE {DB}.{t}_metrics_{g}")
        for t in ("feature", "service", "quality"):
            c.command(
                f"INSERT INTO {DB}.{t}_metrics SELECT * FROM {DB}.{t}_metrics FINAL WHERE window_start >= '{iso(DAY0)}'"
            )

    clickhouse.run(s.url, backfill)
    _assert_same(_snapshot(s.url), after)


def _history(url, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlvigil.cli", "history", "--clickhouse-url", url, "--model", "recsys", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def test_history_command(seeded, capsys):
    from mlvigil.cli import main

    s = seeded
    rng = ["--from", f"{iso(DAY0)}T22:30", "--to", f"{iso(DAY1)}T01:30"]
    assert main(["history", "--clickhouse-url", s.url, "--model", "recsys", "--version", "v1", "--feature", "age",
                 "--metric", "psi", *rng, "--format", "csv"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "window_start,model_version,segment,feature,psi"
    assert len(lines) == 1 + MINUTES  # auto: 3 hours -> minutes
    first = next(r for r in s.feature_rows if r[3] == "v1" and r[4] == "*" and r[5] == "age")
    assert lines[1] == f"{iso(DAY0)}T22:30:00Z,v1,*,age,{first[FEATURE_COLUMNS.index('psi')]!r}"

    assert main(["history", "--clickhouse-url", s.url, "--model", "recsys", "--metric", "accuracy",
                 "--segment", "user_type=new", "--granularity", "hour", *rng]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["time", "(UTC)", "model_version", "segment", "accuracy"]
    hours = [T0.replace(minute=0) + timedelta(hours=h) for h in range(4)]
    assert [line.split()[:4] for line in out[1:]] == [
        [f"{h:%Y-%m-%d}", f"{h:%H:%M}", v, "user_type=new"] for v in ("v1", "v2") for h in hours
    ]

    assert main(["history", "--clickhouse-url", s.url, "--model", "recsys", "--metric", "latency_p95",
                 "--granularity", "day", *rng]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:]] == [[iso(DAY0), "v1"], [iso(DAY1), "v1"],
                                                      [iso(DAY0), "v2"], [iso(DAY1), "v2"]]  # fmt: skip

    # every feature (no prediction columns) when --feature is left out; errors are one line, exit 2
    assert main(["history", "--clickhouse-url", s.url, "--model", "recsys", "--version", "v2", "--metric", "ks",
                 "--granularity", "hour", *rng, "--format", "csv"]) == 0  # fmt: skip
    feats = {line.split(",")[3] for line in capsys.readouterr().out.splitlines()[1:]}
    assert feats == {"age", "browsing_duration", "items_viewed", "price_sensitivity"}
    assert (
        main(["history", "--clickhouse-url", s.url, "--model", "recsys", "--metric", "requests", "--feature", "age"])
        == 2
    )
    assert "no features" in capsys.readouterr().err
    assert (
        main(["history", "--clickhouse-url", s.url, "--model", "recsys", "--metric", "psi", "--from", "yesterday"]) == 2
    )


WRITER = textwrap.dedent(
    """
    # Simulates the job's ClickHouseWriter: every flush opens the store (waiting while a reader
    # holds it), inserts a minute of feature and service rows and closes it.
    import sys, time
    from datetime import UTC, datetime, timedelta
    from mlvigil import clickhouse
    from mlvigil.finalize import FEATURE_COLUMNS, SERVICE_COLUMNS
    url, minutes, progress = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    t0 = datetime.fromisoformat(sys.argv[4])
    retried = 0
    for m in range(minutes):
        ws = t0 + timedelta(minutes=m)
        now = datetime.now(UTC)
        feats = [[ws, ws + timedelta(minutes=1), "live", "v1", seg, f, "numeric", 100, 100, 0, 0.0, 0, 0.0,
                  0.01 * m, 0.05, 1.0, 1.0, None, [0.5, 0.5], now] for seg in ("*", "region=eu") for f in ("a", "b")]
        svc = [[ws, ws + timedelta(minutes=1), "live", "v1", 100 + m, 1, 1 / (100 + m), (100 + m) / 60, 30.0, 50.0,
                60.0, 0.01, 0.3, now]]
        t = time.monotonic()
        def write(c):
            c.insert("feature_metrics", feats, column_names=FEATURE_COLUMNS, database="mlvigil")
            c.insert("service_metrics", svc, column_names=SERVICE_COLUMNS, database="mlvigil")
            open(progress, "a").write(f"{m}\\n")  # committed; readers can only see it once we close
            time.sleep(0.05)  # the writer's own work while it holds the store
        clickhouse.run(url, write)
        retried += time.monotonic() - t > 0.5
        time.sleep(0.3)  # the next flush (the job flushes every 500 ms at most)
    print(retried)
    """
)


def test_history_reads_while_a_writer_process_uses_the_store(tmp_path):
    """A writer process (standing in for the job's ClickHouseWriter: open, insert, close per flush,
    with retries) keeps writing while `mlvigil history` runs again and again in other processes."""
    url = f"chdb://{tmp_path / 'clickhouse'}"
    clickhouse.apply_schema(url, DB)
    progress = tmp_path / "progress"
    minutes = 8
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url, str(minutes), str(progress), LIVE_DAY.isoformat()],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def written() -> int:
        return len(progress.read_text().splitlines()) if progress.exists() else 0

    seen, t_start = [], time.monotonic()  # (minutes written before the read, rows it saw, written after)
    try:
        while writer.poll() is None:
            before = written()
            r = _history(url, "--model", "live", "--metric", "requests", "--from", iso(LIVE_DAY), "--to", iso(LIVE_DAY + timedelta(days=1)),
                         "--format", "csv")  # fmt: skip
            assert r.returncode == 0, r.stderr
            seen.append((before, len(r.stdout.splitlines()) - 1, written()))
        out, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    elapsed = time.monotonic() - t_start
    print(f"{len(seen)} reads in {elapsed:.1f} s (written before, seen, written after): {seen}; "
          f"writer flushes that waited > 0.5 s for the store: {out.strip()}")  # fmt: skip
    assert len(seen) >= 3, f"only {len(seen)} reads in {elapsed:.1f} s"
    assert any(0 < n < minutes for _, n, _ in seen), seen  # reads in the middle of the writes
    # each read sees every flush that ended before it began, and nothing that was not written
    assert all(before <= n <= after for before, n, after in seen), seen
    # after the writer: everything, at every granularity
    r = _history(url, "--model", "live", "--metric", "requests", "--from", iso(LIVE_DAY), "--to", iso(LIVE_DAY + timedelta(days=1)),
                 "--granularity", "minute", "--format", "csv")  # fmt: skip
    assert [int(line.split(",")[2]) for line in r.stdout.splitlines()[1:]] == [100 + m for m in range(minutes)]
    r = _history(url, "--model", "live", "--metric", "psi_max", "--feature", "a", "--segment", "region=eu",
                 "--from", iso(LIVE_DAY), "--to", iso(LIVE_DAY + timedelta(days=1)), "--granularity", "hour", "--format", "csv")  # fmt: skip
    assert r.stdout.splitlines()[1:] == [f"{iso(LIVE_DAY)}T00:00:00Z,v1,region=eu,a," + repr(0.01 * (minutes - 1))]
