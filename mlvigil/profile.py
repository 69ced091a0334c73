"""Reference profiles: what "normal" looks like for one model version, built from training data.

A profile is a JSON file (schemas/reference_profile.v1.json). Numeric columns keep PSI bin
edges at reference quantiles (default 10 bins; numpy's default linear interpolation; duplicate
edges removed; outer edges -inf/+inf implied), the expected proportion of each bin, mean and
population std (ddof=0, for the |z| > 3 outlier rule) and Q + 1 quantile points for KS.
Categorical columns keep the most frequent categories and an "other" bucket.

With the true label column (`label_column`), the profile also keeps the model's reference
quality on that data (`reference_quality`): accuracy, precision, recall, F1, ECE, positive rate
(mean_observed), mean score and score std, computed with the job's definitions
(mlvigil.quality.segment_metrics over the same sufficient statistics as QualityStatsFunction), so
the default alert rules compare each window with the model's own quality.
"""

import bisect
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlvigil.categories import category_text

PROFILE_SCHEMA = "mlvigil.reference_profile/v1"
DEFAULT_BINS = 10
DEFAULT_KS_QUANTILES = 100
DEFAULT_MAX_CATEGORIES = 50
CAL_BINS = 10  # QualityStatsFunction.CAL_BINS
QUALITY_REFERENCE_METRICS = ("accuracy", "precision", "recall", "f1", "ece", "mean_prediction", "mean_observed")
"""quality_metrics columns a profile's reference_quality keeps (plus score_std): AlertInput adds
each as ``<metric>_reference`` to the job's quality rows."""


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def numeric_column(
    name: str,
    values: Iterable[Any],
    bins: int = DEFAULT_BINS,
    edges: Sequence[float] | None = None,
    ks_quantiles: int = DEFAULT_KS_QUANTILES,
    importance: float | None = None,
) -> dict:
    raw = list(values)
    present = np.array([float(v) for v in raw if not _is_missing(v)], dtype=np.float64) + 0.0
    if present.size == 0:
        raise ValueError(f"numeric column {name!r} has no values")
    if edges is None:
        inner = np.quantile(present, np.arange(1, bins) / bins)
        edges = sorted({float(e) + 0.0 for e in inner})
    else:
        edges = sorted({float(e) + 0.0 for e in edges})
    counts = np.zeros(len(edges) + 1)
    for v in present:
        counts[bisect.bisect_right(edges, v)] += 1
    ks_points = np.unique(np.quantile(present, np.linspace(0.0, 1.0, ks_quantiles + 1)) + 0.0)
    col = {
        "name": name,
        "type": "numeric",
        "edges": [float(e) for e in edges],
        "expected": (counts / present.size).tolist(),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "ks_quantiles": ks_quantiles,
        # KS points are the unique quantiles; their weights (reference CDF) follow from
        # the quantile levels, so keep the full list to reconstruct F_points exactly.
        "ks_points": ks_points.tolist(),
        "ks_cdf": _quantile_cdf(present, ks_quantiles, ks_points),
        "count": int(present.size),
        "missing_rate": 1.0 - present.size / len(raw),
    }
    if importance is not None:
        col["importance"] = float(importance)
    return col


def _quantile_cdf(values: np.ndarray, q: int, unique_points: np.ndarray) -> list[float]:
    """F_points(u) for the Q + 1 quantile points: the fraction of them <= u."""
    points = np.quantile(values, np.linspace(0.0, 1.0, q + 1)) + 0.0
    points.sort()
    return (np.searchsorted(points, unique_points, side="right") / points.size).tolist()


def categorical_column(
    name: str,
    values: Iterable[Any],
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    importance: float | None = None,
) -> dict:
    raw = list(values)
    texts = [category_text(v) for v in raw if not _is_missing(v)]
    if not texts:
        raise ValueError(f"categorical column {name!r} has no values")
    counts = Counter(texts)
    # Most frequent first; ties by text so the profile is reproducible.
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = ranked[:max_categories]
    other = sum(c for _, c in ranked[max_categories:])
    n = len(texts)
    col = {
        "name": name,
        "type": "categorical",
        "categories": [k for k, _ in kept],
        "expected": [c / n for _, c in kept] + [other / n],
        "count": n,
        "missing_rate": 1.0 - n / len(raw),
    }
    if importance is not None:
        col["importance"] = float(importance)
    return col


def build_profile(
    columns: dict[str, list[Any]],
    model: str,
    version: str,
    *,
    categorical: Sequence[str] = (),
    exclude: Sequence[str] = (),
    bins: int = DEFAULT_BINS,
    custom_edges: dict[str, Sequence[float]] | None = None,
    ks_quantiles: int = DEFAULT_KS_QUANTILES,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    importance: dict[str, float] | None = None,
    score_column: str | None = "score",
    predicted_label_column: str | None = "predicted_label",
    label_column: str | None = None,
    task: str = "classification",
    positive_label: Any = None,
    threshold: float = 0.5,
) -> dict:
    """A profile from column name -> values (training data). Prediction columns are optional.

    label_column names the true label (ground truth; never a monitored feature): with it, the
    profile gets ``reference_quality`` for the model's task as the job will score it (task,
    positive_label and threshold as in the config's models.<id>)."""
    custom_edges = custom_edges or {}
    importance = importance or {}
    prediction_names = {c for c in (score_column, predicted_label_column) if c}
    features, prediction = [], []
    for name, values in columns.items():
        if name in exclude or (label_column and name == label_column):
            continue
        is_cat = name in categorical or name == predicted_label_column or not _looks_numeric(values)
        if is_cat:
            col = categorical_column(name, values, max_categories, importance.get(name))
        else:
            col = numeric_column(name, values, bins, custom_edges.get(name), ks_quantiles, importance.get(name))
        if name in prediction_names:
            col["name"] = "score" if name == score_column else "predicted_label"
            prediction.append(col)
        else:
            features.append(col)
    profile = {
        "schema": PROFILE_SCHEMA,
        "model_id": model,
        "model_version": version,
        "features": features,
        "prediction": prediction,
    }
    if label_column:
        if label_column not in columns:
            raise ValueError(f"label column {label_column!r} is not in the data")
        profile["reference_quality"] = reference_quality(
            columns[label_column],
            columns.get(predicted_label_column) if predicted_label_column else None,
            columns.get(score_column) if score_column else None,
            task=task,
            positive_label=positive_label,
            threshold=threshold,
        )
    profile["fingerprint"] = fingerprint(profile)
    return profile


def _cal_bin(score: float) -> int:
    """QualityStatsFunction.calBin: min(floor(10 score), 9), scores below 0 in bin 0."""
    b = math.floor(score * CAL_BINS)
    return 0 if b < 0 else CAL_BINS - 1 if b >= CAL_BINS - 1 else int(b)


def label_stats(
    labels: Sequence[Any],
    predicted: Sequence[Any] | None,
    scores: Sequence[Any] | None,
    *,
    task: str,
    positive_label: str | None,
    threshold: float = 0.5,
) -> dict:
    """The sufficient statistics QualityStatsFunction.addLabel keeps for one segment, from rows
    of (label, predicted_label, score); rows without a label are not labelled and are skipped.
    Labels and predicted labels compare as category texts (as the stream sees them)."""
    n = len(labels)
    predicted = predicted if predicted is not None else [None] * n
    scores = scores if scores is not None else [None] * n
    seg: dict[str, Any] = {
        "predictions": n, "labelled": 0, "scored": 0, "correct": 0, "tp": 0, "fp": 0, "fn": 0, "tn": 0,
        "classes": {}, "cal_n": [0] * CAL_BINS, "cal_sum": [0.0] * CAL_BINS, "cal_pos": [0] * CAL_BINS,
        "reg_n": 0, "abs_err": 0.0, "sq_err": 0.0, "sum_pred": 0.0, "sum_label": 0.0,
        "clicked": 0, "clicked_n": 0, "converted": 0, "converted_n": 0, "revenue": 0.0, "revenue_n": 0,
    }  # fmt: skip
    for label, pred, score in zip(labels, predicted, scores, strict=True):
        if _is_missing(label):
            continue
        seg["labelled"] += 1
        s = None if _is_missing(score) else float(score)
        if task == "regression":
            if s is not None:
                err = s - float(label)
                seg["reg_n"] += 1
                seg["abs_err"] += abs(err)
                seg["sq_err"] += err * err
                seg["sum_pred"] += s
                seg["sum_label"] += float(label)
            continue
        y_text = category_text(label)
        p_text = None if _is_missing(pred) else category_text(pred)
        if positive_label is not None:
            y = y_text == positive_label
            y_hat = (p_text == positive_label) if p_text is not None else (s >= threshold if s is not None else None)
            if y_hat is not None:
                seg["scored"] += 1
                seg["correct"] += int(y == y_hat)
                key = "tp" if y and y_hat else "fp" if y_hat else "fn" if y else "tn"
                seg[key] += 1
            hit = y
        else:
            if p_text is None:
                continue
            hit = p_text == y_text
            seg["scored"] += 1
            seg["classes"].setdefault(y_text, [0, 0, 0])[0] += 1
            cls = seg["classes"].setdefault(p_text, [0, 0, 0])
            cls[1] += 1
            if hit:
                seg["correct"] += 1
                cls[2] += 1
        if s is not None:
            b = _cal_bin(s)
            seg["cal_n"][b] += 1
            seg["cal_sum"][b] += s
            seg["cal_pos"][b] += int(hit)
    return seg


def reference_quality(
    labels: Sequence[Any],
    predicted: Sequence[Any] | None,
    scores: Sequence[Any] | None,
    *,
    task: str = "classification",
    positive_label: Any = None,
    threshold: float = 0.5,
) -> dict:
    """The model's quality on labelled reference data, with the job's metric definitions."""
    from mlvigil.quality import segment_metrics

    positive = None if positive_label is None or task == "regression" else category_text(positive_label)
    kind = "regression" if task == "regression" else "binary" if positive is not None else "multiclass"
    seg = label_stats(labels, predicted, scores, task=kind, positive_label=positive, threshold=threshold)
    if not seg["labelled"]:
        raise ValueError("the label column has no labels")
    m = segment_metrics(seg, kind)
    metrics = {k: float(m[k]) for k in QUALITY_REFERENCE_METRICS + ("mae", "rmse") if m.get(k) is not None}
    labelled_scores = [float(s) for y, s in zip(labels, scores or [None] * len(labels), strict=True)
                       if not _is_missing(y) and not _is_missing(s)]  # fmt: skip
    if labelled_scores:
        # Population std (ddof = 0), as finalize.column_metrics computes a window's std.
        metrics["score_std"] = float(np.asarray(labelled_scores, dtype=np.float64).std())
    out = {"task": kind, "labelled": int(seg["labelled"]), "threshold": float(threshold), "metrics": metrics}
    if positive is not None:
        out["positive_label"] = positive
    return out


def _looks_numeric(values: Iterable[Any]) -> bool:
    for v in values:
        if _is_missing(v):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return False
    return True


def fingerprint(profile: dict) -> str:
    body = {k: v for k, v in profile.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def read_training_data(path: Path) -> dict[str, list[Any]]:
    """CSV, Parquet or JSON Lines into column name -> values (None for missing)."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".csv":
        # pandas' default float parser is not exact: values would differ from the file's in the last bit.
        df = pd.read_csv(path, float_precision="round_trip")
    elif suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        # Exact floats, and no guessing of dates from column names (a "*_time" column stays numbers).
        df = pd.read_json(path, lines=True, precise_float=True, convert_dates=False)
    else:
        raise ValueError(f"unknown training data format {suffix!r}: use .csv, .parquet or .jsonl")
    out: dict[str, list[Any]] = {}
    for name in df.columns:
        s = df[name]
        out[str(name)] = [None if _is_missing(v) else (v.item() if hasattr(v, "item") else v) for v in s.tolist()]
    return out


def save_profile(profile: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1))


def load_profile(path: Path) -> dict:
    profile = json.loads(Path(path).read_text())
    if profile.get("schema") != PROFILE_SCHEMA:
        raise ValueError(f"{path}: not a {PROFILE_SCHEMA} profile")
    return profile
