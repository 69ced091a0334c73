"""Offline reference for the job's metrics, written independently of mlvigil's code:
numpy and scipy over the raw events, no streaming, no cell counting."""

import math
from collections import defaultdict

import numpy as np
from scipy import stats

EPS = 1e-4


def window_of(ms: int, size_ms: int = 60_000) -> int:
    return ms // size_ms * size_ms


def psi_ref(expected, counts) -> float:
    a = np.asarray(counts, float) / np.sum(counts)
    e = np.asarray(expected, float)
    a = np.where(a == 0, EPS, a)
    e = np.where(e == 0, EPS, e)
    return float(np.sum((a - e) * np.log(a / e)))


def segment_keys(event: dict, dims: list[str]) -> list[str]:
    seg = event.get("segments") or {}
    keys = ["*"]
    for d in dims:
        v = seg.get(d)
        keys.append(f"{d}={'(missing)' if v is None else v}")
    return keys


def cat_text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def column_reference(col: dict, values: list, train_values: list | None) -> dict:
    """Metrics of one column from its raw values in one window/segment (None = missing)."""
    events = len(values)
    present = [v for v in values if v is not None]
    out = {"events": events, "present": len(present), "missing": events - len(present),
           "missing_rate": (events - len(present)) / events}  # fmt: skip
    if not present:
        return out
    if col["type"] == "numeric":
        x = np.asarray(present, float)
        train = np.asarray(train_values, float)
        mu, sd = train.mean(), train.std()
        counts = np.bincount(
            np.searchsorted(np.asarray(col["edges"]), x, side="right"), minlength=len(col["edges"]) + 1
        )
        points = np.quantile(train, np.linspace(0, 1, col["ks_quantiles"] + 1))
        out.update(
            outliers=int(np.sum(np.abs(x - mu) > 3 * sd)),
            outlier_rate=float(np.mean(np.abs(x - mu) > 3 * sd)),
            psi=psi_ref(col["expected"], counts),
            ks=float(stats.ks_2samp(x, points).statistic),
            mean=float(x.mean()),
            std=float(x.std()),
        )
    else:
        cats = col["categories"]
        idx = {c: i for i, c in enumerate(cats)}
        counts = np.zeros(len(cats) + 1)
        for v in present:
            counts[idx.get(cat_text(v), len(cats))] += 1
        out.update(psi=psi_ref(col["expected"], counts), unseen_rate=float(counts[-1] / len(present)))
    return out


def feature_reference(events: list[dict], profiles: dict, segments: dict, training: dict) -> dict:
    """(window_start_ms, model, version, segment, feature) -> metrics, for valid on-time events."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        for key in segment_keys(e, segments[e["model_id"]]):
            groups[(window_of(e["event_time"]), e["model_id"], e["model_version"], key)].append(e)
    out = {}
    for (w, model, version, seg), evs in groups.items():
        prof = profiles[model]
        for col in prof["features"]:
            vals = [e["features"].get(col["name"]) for e in evs]
            out[(w, model, version, seg, col["name"])] = column_reference(col, vals, training[model].get(col["name"]))
    return out


def prediction_reference(preds: list[dict], profiles: dict, segments: dict, training: dict) -> tuple[dict, dict]:
    """Service metrics per (window, model, version) and prediction-column metrics like features."""
    service: dict[tuple, dict] = {}
    by_window: dict[tuple, list[dict]] = defaultdict(list)
    for p in preds:
        by_window[(window_of(p["event_time"]), p["model_id"], p["model_version"])].append(p)
    for key, ps in by_window.items():
        lat = [p["latency_ms"] for p in ps if p.get("latency_ms") is not None]
        errors = sum(1 for p in ps if p.get("status") == "error" or p.get("error_code") is not None)
        q = np.percentile(lat, [50, 95, 99]) if lat else [None] * 3  # numpy default: linear
        service[key] = {"requests": len(ps), "errors": errors, "error_rate": errors / len(ps),
                        "throughput_rps": len(ps) / 60.0, "latency_p50": q[0], "latency_p95": q[1],
                        "latency_p99": q[2]}  # fmt: skip
    columns = {}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in preds:
        for key in segment_keys(p, segments[p["model_id"]]):
            groups[(window_of(p["event_time"]), p["model_id"], p["model_version"], key)].append(p)
    for (w, model, version, seg), ps in groups.items():
        for col in profiles[model]["prediction"]:
            if col["name"] == "score":
                vals = [p.get("score") if p.get("score") is not None else _max_prob(p) for p in ps]
            else:
                vals = [p.get("predicted_label") for p in ps]
            columns[(w, model, version, seg, "prediction:" + col["name"])] = column_reference(
                col, vals, training[model].get(col["name"])
            )
    return service, columns


def _max_prob(p: dict):
    probs = p.get("probabilities")
    if probs is None:
        return None
    vals = list(probs.values()) if isinstance(probs, dict) else list(probs)
    return max(vals) if vals else None


def close(a, b, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))
