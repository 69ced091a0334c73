"""ECE pooled across windows, on chDB, against numpy over the raw per-window calibration counts.

A window's ECE is over its `calibrated` rows (labelled predictions with a score, quality.calibration),
so pooled windows weigh by that count: sum_w sum_b |S_bw - P_bw| / sum_w N_w. The windows here
have many predictions with a predicted_label but no score (scored, not calibrated), in shares
that vary by minute, so weighting by `scored` (what the report and the Grafana panels did)
gives another number; the test asserts it does, so it would have failed before.
"""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from mlvigil import clickhouse, report
from mlvigil.quality import QUALITY_COLUMNS, quality_rows

pytestmark = pytest.mark.integration
DB = "mlvigil"
# relative to now: ClickHouse applies the 90-day TTL at insert
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
T0 = DAY0.replace(hour=22, minute=30)
MINUTES = 150  # 22:30 to 01:00: three hours, two days
BINS = 10


def raw_windows(rng: np.random.Generator) -> list[dict]:
    """Per minute, the raw labelled predictions: score (NaN = only a predicted label) and label."""
    out = []
    for minute in range(MINUTES):
        n = int(rng.integers(20, 80))
        score = rng.random(n)
        label = (rng.random(n) < np.clip(score + rng.normal(0.1 * np.sin(minute / 9), 0.1), 0, 1)).astype(int)
        score[rng.random(n) < rng.uniform(0.0, 0.9)] = np.nan  # a minute-dependent share without a score
        predicted = np.where(np.isnan(score), rng.integers(0, 2, n), score >= 0.5).astype(int)
        out.append({"minute": minute, "score": score, "label": label, "predicted": predicted})
    return out


def stats_json(w: dict) -> str:
    """The aggregate's JSON of one window (what QualityStatsFunction.getValue writes), binary task."""
    y, yh, s = w["label"], w["predicted"], w["score"]
    has = ~np.isnan(s)
    b = np.minimum(np.floor(s[has] * BINS).astype(int), BINS - 1)
    seg = {
        "segment": "*", "predictions": len(y), "labelled": len(y), "scored": len(y), "correct": int((y == yh).sum()),
        "tp": int(((y == 1) & (yh == 1)).sum()), "fp": int(((y == 0) & (yh == 1)).sum()),
        "fn": int(((y == 1) & (yh == 0)).sum()), "tn": int(((y == 0) & (yh == 0)).sum()),
        "cal_n": np.bincount(b, minlength=BINS).tolist(),
        "cal_sum": np.bincount(b, weights=s[has], minlength=BINS).tolist(),
        "cal_pos": np.bincount(b, weights=y[has], minlength=BINS).astype(int).tolist(),
        "clicked": 0, "clicked_n": 0, "converted": 0, "converted_n": 0, "revenue": 0.0, "revenue_n": 0,
    }  # fmt: skip
    return json.dumps({"task": "binary", "segments": [seg]})


def reference(windows: list[dict]) -> dict[str, float]:
    """numpy over the raw rows: the ECE with each window's bins apart, pooled by the calibrated
    rows; the mean score and positive rate over them; and what weighting by scored gives."""
    gap = np.zeros((len(windows), BINS))
    n = np.zeros(len(windows))
    for i, w in enumerate(windows):
        has = ~np.isnan(w["score"])
        s, y = w["score"][has], w["label"][has]
        b = np.clip((s * BINS).astype(int), 0, BINS - 1)
        np.add.at(gap[i], b, s - y)
        n[i] = has.sum()
    scored = np.array([len(w["label"]) for w in windows], float)
    per_window_ece = np.abs(gap).sum(axis=1) / n
    scores = np.concatenate([w["score"][~np.isnan(w["score"])] for w in windows])
    return {
        "ece": np.abs(gap).sum() / n.sum(),
        "ece_by_scored": (per_window_ece * scored).sum() / scored.sum(),
        "mean_prediction": scores.mean(),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = f"chdb://{tmp_path_factory.mktemp('pooling') / 'ch'}"
    windows = raw_windows(np.random.default_rng(11))
    rows = []
    for w in windows:
        ws = T0 + timedelta(minutes=w["minute"])
        rows += quality_rows(stats_json(w), ws, ws + timedelta(minutes=1), "clf", "v1", 2 * len(w["label"]),
                             ws + timedelta(minutes=5))  # fmt: skip
    clickhouse.apply_schema(url, DB)
    clickhouse.run(url, lambda c: [c.insert("quality_metrics", rows[i : i + 40], column_names=QUALITY_COLUMNS,
                                            database=DB) for i in range(0, len(rows), 40)])  # fmt: skip
    return url, windows


def test_ece_pools_over_the_calibrated_rows_in_rollups_and_report(store):
    url, windows = store
    at = {w["minute"]: w for w in windows}

    def minutes_in(start: datetime, width: timedelta) -> list[dict]:
        return [at[m] for m in range(MINUTES) if start <= T0 + timedelta(minutes=m) < start + width]

    for view, width in (("quality_series_hour", timedelta(hours=1)), ("quality_series_day", timedelta(days=1))):
        got = clickhouse.query_rows(url, f"SELECT window_start, ece, mean_prediction FROM {DB}.{view} "
                                         "WHERE model_id = 'clf' ORDER BY window_start")  # fmt: skip
        assert len(got) == (3 if width.days == 0 else 2), view
        for ws, ece, mean_prediction in got:
            ref = reference(minutes_in(ws.replace(tzinfo=UTC), width))
            assert ece == pytest.approx(ref["ece"], rel=1e-9), (view, ws)
            assert mean_prediction == pytest.approx(ref["mean_prediction"], rel=1e-9), (view, ws)

    ref = reference(windows)
    assert abs(ref["ece_by_scored"] - ref["ece"]) > 0.01 * ref["ece"]  # the old weighting differs
    end = T0 + timedelta(minutes=MINUTES)
    for granularity in ("minute", "hour", "day"):
        d = report.load(url, DB, "clf", T0, end, granularity)
        (row,) = [r for r in d.segments if r[0] == "*"]
        assert row[8] == pytest.approx(ref["ece"], rel=1e-9), granularity
