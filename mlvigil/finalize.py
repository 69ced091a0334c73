"""Per-window finishing: sufficient statistics from the JVM -> metric rows for ClickHouse.

The Java aggregate (udfs/java WindowStatsFunction) counts; this module turns counts into
rates, PSI, KS, mean and std with the pure functions of mlvigil.stattests. No Flink import.
"""

import math
from datetime import UTC, datetime

import numpy as np
import orjson

from mlvigil.metric_spec import column_names
from mlvigil.stattests.ks import ks_from_cells
from mlvigil.stattests.psi import psi_from_counts

# the tables' columns in DDL order, from the metric spec (the writer inserts rows in this order)
FEATURE_COLUMNS = column_names("feature_metrics")
SERVICE_COLUMNS = column_names("service_metrics")
WINDOW_EVENT_COLUMNS = ["window_start", "window_end", "stream", "model_id", "model_version", "events", "computed_at"]
DEAD_LETTER_COLUMNS = [
    "stream", "kind", "reason_code", "reason", "topic", "partition", "offset", "kafka_ts", "event_time",
    "model_id", "payload", "received_at",
]  # fmt: skip


def now_utc() -> datetime:
    return datetime.now(UTC)


def column_metrics(col: dict, stats: dict, events: int) -> dict:
    """Metrics of one monitored column in one window and segment."""
    present, missing = stats["present"], stats["missing"]
    out = {
        "feature_type": col["type"],
        "events": events,
        "present": present,
        "missing": missing,
        "missing_rate": missing / events if events else 0.0,
        "outliers": 0,
        "outlier_rate": None,
        "psi": None,
        "ks": None,
        "mean": None,
        "std": None,
        "unseen_rate": None,
        "bin_proportions": [],
    }
    if col["type"] == "numeric":
        bins = np.asarray(stats["bins"], dtype=np.float64)
        out["outliers"] = stats["outliers"]
        if present:
            out["outlier_rate"] = stats["outliers"] / present
            out["psi"] = psi_from_counts(col["expected"], bins)
            out["ks"] = ks_from_cells(np.asarray(col["ks_cdf"]), stats["ks_lt"], stats["ks_eq"])
            out["mean"] = stats["mean"]
            out["std"] = math.sqrt(max(stats["m2"], 0.0) / present)
            out["bin_proportions"] = (bins / present).tolist()
    else:
        cats = np.asarray(stats["cats"], dtype=np.float64)
        if present:
            out["psi"] = psi_from_counts(col["expected"], cats)
            out["unseen_rate"] = float(cats[-1] / present)
            out["bin_proportions"] = (cats / present).tolist()
    return out


def window_rows(
    stats_json: str,
    catalog: dict,
    stream: str,
    window_start: datetime,
    window_end: datetime,
    model_id: str,
    model_version: str,
    computed_at: datetime,
) -> list[list]:
    """feature_metrics rows of one (window, model, version) from the aggregate's JSON."""
    stats = orjson.loads(stats_json)
    profile = catalog["profiles"][stats["profile"]]
    columns = profile["features"] if stream == "features" else profile["prediction"]
    prefix = "" if stream == "features" else "prediction:"
    rows = []
    for seg in stats["segments"]:
        for col, col_stats in zip(columns, seg["columns"], strict=True):
            m = column_metrics(col, col_stats, seg["events"])
            rows.append(
                [window_start, window_end, model_id, model_version, seg["segment"], prefix + col["name"]]
                + [m[k] for k in FEATURE_COLUMNS[6:-1]]
                + [computed_at]
            )
    return rows


def service_row(
    window_start: datetime,
    window_end: datetime,
    model_id: str,
    model_version: str,
    requests: int,
    errors: int,
    percentiles: list[float] | None,
    prediction_rows: list[list],
    computed_at: datetime,
) -> list:
    seconds = (window_end - window_start).total_seconds()
    p50 = p95 = p99 = None
    if percentiles is not None:
        p50, p95, p99 = (None if v is None else float(v) for v in percentiles)
    score_psi = score_mean = None
    for r in prediction_rows:
        if r[4] == "*" and r[5] == "prediction:score":
            score_psi, score_mean = r[FEATURE_COLUMNS.index("psi")], r[FEATURE_COLUMNS.index("mean")]
    return [
        window_start, window_end, model_id, model_version, requests, errors,
        errors / requests if requests else 0.0, requests / seconds, p50, p95, p99,
        score_psi, score_mean, computed_at,
    ]  # fmt: skip
