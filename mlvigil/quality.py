"""Model and business quality: the sufficient statistics of a window -> metric rows. No Flink import.

The Java aggregate (udfs/java QualityStatsFunction) counts, per prediction window, model,
version and segment, the predictions and the labels joined to them; these pure functions turn
the counts into metrics. Conventions (also in the README):

- Binary classification (a positive label is configured): y = label is the positive label,
  y_hat = predicted_label is the positive label, or score >= threshold when the prediction has
  no predicted_label. accuracy = (tp + tn) / scored; precision = tp / (tp + fp); recall =
  tp / (tp + fn); F1 = 2 tp / (2 tp + fp + fn); each is None (NULL) when its denominator is 0.
- Multi-class (no positive label): accuracy = correct / scored; precision, recall and F1 are
  macro averages over the classes seen in the window's labels or predictions, a class's
  undefined precision or recall counting as 0 (scikit-learn's zero_division=0).
- Expected calibration error over 10 equal-width bins of the score, bin = min(floor(10 s), 9)
  (scores below 0 in bin 0): ECE = sum over bins of n_b / N * |mean score_b - observed rate_b|,
  N the labelled predictions with a score. Binary: observed rate = share of positive labels;
  multi-class: share of correct predictions (the score being the top-class confidence).
  mean_prediction and mean_observed are the same two means over all N.
- Regression: MAE and RMSE of score - label over labelled predictions with a score;
  mean_prediction and mean_observed are the mean score and the mean label.
- label_coverage = labelled / predictions. Business: ctr = clicked / labelled, conversion_rate =
  converted / labelled, revenue_per_request = revenue / labelled, each None when no label of the
  group reported that outcome.
"""

import math
from datetime import datetime

import orjson

from mlvigil.metric_spec import column_names

QUALITY_COLUMNS = column_names("quality_metrics")  # DDL order, from the metric spec


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def binary_metrics(tp: int, fp: int, fn: int, tn: int) -> dict:
    """accuracy, precision, recall, F1 of the positive class from the confusion counts."""
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def macro_metrics(classes: dict[str, list[int]]) -> dict:
    """Macro precision, recall, F1 from per-class [support, predicted, true positives]."""
    if not classes:
        return {"precision": None, "recall": None, "f1": None}
    p = r = f = 0.0
    for support, predicted, tp in classes.values():
        p += tp / predicted if predicted else 0.0
        r += tp / support if support else 0.0
        f += 2 * tp / (support + predicted) if support + predicted else 0.0
    k = len(classes)
    return {"precision": p / k, "recall": r / k, "f1": f / k}


def calibration(cal_n: list[int], cal_sum: list[float], cal_pos: list[int]) -> dict:
    """ECE over the score bins, and the mean score and observed rate over all binned rows."""
    n = sum(cal_n)
    if not n:
        return {"ece": None, "calibrated": 0, "mean_prediction": None, "mean_observed": None}
    # n_b / N * |sum_b / n_b - pos_b / n_b| = |sum_b - pos_b| / N
    ece = sum(abs(s - p) for k, s, p in zip(cal_n, cal_sum, cal_pos, strict=True) if k) / n
    return {"ece": ece, "calibrated": n, "mean_prediction": sum(cal_sum) / n, "mean_observed": sum(cal_pos) / n}


def regression_metrics(n: int, abs_err: float, sq_err: float, sum_pred: float, sum_label: float) -> dict:
    if not n:
        return {"mae": None, "rmse": None, "mean_prediction": None, "mean_observed": None}
    return {
        "mae": abs_err / n,
        "rmse": math.sqrt(sq_err / n),
        "mean_prediction": sum_pred / n,
        "mean_observed": sum_label / n,
    }


def segment_metrics(seg: dict, task: str) -> dict:
    """All metrics of one segment's statistics (one element of the aggregate's "segments")."""
    labelled = seg["labelled"]
    out = {
        "task": task,
        "predictions": seg["predictions"],
        "labelled": labelled,
        "label_coverage": _ratio(labelled, seg["predictions"]),
        "scored": seg["scored"],
        "accuracy": None,
        "precision": None,
        "recall": None,
        "f1": None,
        "ece": None,
        "calibrated": 0,
        "mean_prediction": None,
        "mean_observed": None,
        "mae": None,
        "rmse": None,
        "clicks": seg["clicked"],
        "conversions": seg["converted"],
        "revenue": seg["revenue"],
        "ctr": _ratio(seg["clicked"], labelled) if seg["clicked_n"] else None,
        "conversion_rate": _ratio(seg["converted"], labelled) if seg["converted_n"] else None,
        "revenue_per_request": _ratio(seg["revenue"], labelled) if seg["revenue_n"] else None,
    }
    if task == "regression":
        out["scored"] = seg["reg_n"]
        out.update(regression_metrics(seg["reg_n"], seg["abs_err"], seg["sq_err"], seg["sum_pred"], seg["sum_label"]))
        return out
    out["accuracy"] = _ratio(seg["correct"], seg["scored"])
    if task == "binary":
        m = binary_metrics(seg["tp"], seg["fp"], seg["fn"], seg["tn"])
        out.update(precision=m["precision"], recall=m["recall"], f1=m["f1"])
    else:
        out.update(macro_metrics(seg["classes"]))
    out.update(calibration(seg["cal_n"], seg["cal_sum"], seg["cal_pos"]))
    return out


def quality_rows(
    stats_json: str,
    window_start: datetime,
    window_end: datetime,
    model_id: str,
    model_version: str,
    updates: int,
    computed_at: datetime,
) -> list[list]:
    """quality_metrics rows of one (window, model, version), one per segment, from the aggregate's JSON."""
    stats = orjson.loads(stats_json)
    rows = []
    for seg in stats["segments"]:
        m = segment_metrics(seg, stats["task"])
        rows.append(
            [window_start, window_end, model_id, model_version, seg["segment"]]
            + [m[k] for k in QUALITY_COLUMNS[5:-2]]
            + [updates, computed_at]
        )
    return rows
