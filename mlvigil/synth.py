"""Reproducible synthetic traffic for the demo, the tests and the benchmarks.

Two models, as in the seed article: `recsys` (click prediction; segments user_type and region)
and `fraud` (a control that does not drift). From the drift minute on, recsys's user ages move
from 40/30/20/10 % over the buckets 18-25/26-35/36-45/46+ to 20/40/30/10 % (the article's PSI
worked example, 0.2079) and browsing_duration falls from about 10 to about 2 minutes.
Ages are allotted per window in exact proportions, so a full window reproduces the example.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlvigil.profile import build_profile, save_profile

AGE_EDGES = [26.0, 36.0, 46.0]
AGE_BUCKETS = [(18, 25), (26, 35), (36, 45), (46, 70)]
AGE_BEFORE = [0.4, 0.3, 0.2, 0.1]
AGE_AFTER = [0.2, 0.4, 0.3, 0.1]
MODELS = ("recsys", "fraud")
SEGMENTS = {"recsys": ["user_type", "region"], "fraud": ["region"]}


def exact_ages(rng: np.random.Generator, n: int, shares: list[float]) -> np.ndarray:
    counts = np.floor(np.array(shares) * n).astype(int)
    counts[0] += n - counts.sum()
    ages = np.concatenate([rng.integers(lo, hi + 1, size=c) for (lo, hi), c in zip(AGE_BUCKETS, counts, strict=False)])
    rng.shuffle(ages)
    return ages


def recsys_features(rng: np.random.Generator, n: int, drifted: bool) -> dict[str, np.ndarray]:
    duration_mean = 2.0 if drifted else 10.0
    return {
        "age": exact_ages(rng, n, AGE_AFTER if drifted else AGE_BEFORE).astype(float),
        "browsing_duration": rng.lognormal(math.log(duration_mean) - 0.125, 0.5, n),
        "items_viewed": rng.poisson(12, n).astype(float),
        "price_sensitivity": rng.normal(0.5, 0.15, n),
        "device": rng.choice(["ios", "android", "web"], n, p=[0.45, 0.4, 0.15]),
    }


def fraud_features(rng: np.random.Generator, n: int, drifted: bool) -> dict[str, np.ndarray]:
    return {
        "amount": rng.lognormal(3.5, 1.0, n),
        "txn_count_24h": rng.poisson(3, n).astype(float),
        "account_age_days": rng.exponential(400, n),
        "country": rng.choice(["us", "gb", "de", "fr", "br"], n, p=[0.4, 0.2, 0.15, 0.15, 0.1]),
    }


FEATURES = {"recsys": recsys_features, "fraud": fraud_features}


def score_of(model: str, f: dict[str, np.ndarray]) -> np.ndarray:
    if model == "recsys":
        z = -1.0 + 0.12 * (f["browsing_duration"] - 10) - 0.03 * (f["age"] - 30) + 0.05 * (f["items_viewed"] - 12)
    else:
        z = -3.0 + 0.4 * (np.log(f["amount"]) - 3.5) + 0.2 * (f["txn_count_24h"] - 3) - 0.001 * f["account_age_days"]
    return 1.0 / (1.0 + np.exp(-z))


def training_columns(model: str, n: int, seed: int = 7) -> dict[str, list]:
    """Training data for a reference profile: features plus score and predicted_label."""
    rng = np.random.default_rng(seed)
    f = FEATURES[model](rng, n, drifted=False)
    s = score_of(model, f)
    cols = {k: v.tolist() for k, v in f.items()}
    cols["score"] = s.tolist()
    cols["predicted_label"] = (s >= 0.5).astype(int).tolist()
    return cols


def training_labels(columns: dict[str, list], seed: int = 5) -> list[int]:
    """True labels for training columns: before any drift a click (or fraud) happens with
    probability = score (the model is calibrated), as in labels()."""
    rng = np.random.default_rng(seed)
    return (rng.random(len(columns["score"])) < np.asarray(columns["score"])).astype(int).tolist()


@dataclass
class Profiles:
    training: dict[str, dict[str, list]]  # model -> training columns
    profiles: dict[str, dict]  # model -> its reference profile
    models: dict[str, dict]  # the `models` section of a job config


def save_profiles(directory: Path, rows: int, age_edges: bool = False, **model_options) -> Profiles:
    """A v1 reference profile per model from training_columns(model, rows), saved as
    directory/<model>.json (age_edges: recsys's age bins are the article's buckets), and the
    job config's `models` section naming them (model_options added to each model)."""
    out = Profiles({}, {}, {})
    for m in MODELS:
        out.training[m] = training_columns(m, rows)
        edges = {"age": AGE_EDGES} if age_edges and m == "recsys" else None
        out.profiles[m] = build_profile(out.training[m], m, "v1", custom_edges=edges)
        save_profile(out.profiles[m], Path(directory) / f"{m}.json")
        out.models[m] = {"segments": SEGMENTS[m], "profiles": {"v1": str(Path(directory) / f"{m}.json")},
                         **model_options}  # fmt: skip
    return out


@dataclass
class Traffic:
    features: list[dict]
    predictions: list[dict]


def traffic(
    start_ms: int,
    minutes: int,
    per_minute: int,
    drift_minute: int | None = None,
    models: tuple[str, ...] = MODELS,
    seed: int = 11,
    jitter_ms: int = 2000,
    prediction_segments: bool = False,
) -> Traffic:
    """Feature and prediction events per model and minute; events within a minute are spread
    evenly and shuffled by up to jitter_ms, so they arrive a little out of order. With
    prediction_segments, predictions carry the request's segments too (model quality is
    segmented by the prediction's segments)."""
    rng = np.random.default_rng(seed)
    feats, preds = [], []
    for minute in range(minutes):
        for model in models:
            drifted = model == "recsys" and drift_minute is not None and minute >= drift_minute
            f = FEATURES[model](rng, per_minute, drifted)
            s = score_of(model, f)
            t0 = start_ms + minute * 60_000
            times = t0 + (np.arange(per_minute) * (60_000 / per_minute)).astype(np.int64)
            user_type = rng.choice(["new", "returning"], per_minute, p=[0.3, 0.7])
            region = rng.choice(["eu", "us", "apac"], per_minute, p=[0.4, 0.4, 0.2])
            latency = rng.lognormal(math.log(40), 0.4, per_minute)
            errors = rng.random(per_minute) < 0.005
            for i in range(per_minute):
                rid = f"{model}-{minute}-{i}"
                seg = {"region": str(region[i])}
                if model == "recsys":
                    seg["user_type"] = str(user_type[i])
                values = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in f.items()}
                t = int(times[i])
                feats.append({"request_id": rid, "model_id": model, "model_version": "v1", "event_time": t,
                              "segments": seg, "features": values})  # fmt: skip
                pred = {"request_id": rid, "model_id": model, "model_version": "v1", "event_time": t,
                        "latency_ms": round(float(latency[i]), 3), "status": "ok"}  # fmt: skip
                if prediction_segments:
                    pred["segments"] = dict(seg)
                if errors[i]:
                    pred.update(status="error", error_code="TIMEOUT")
                else:
                    pred.update(score=float(s[i]), predicted_label=int(s[i] >= 0.5))
                preds.append(pred)
    order = lambda evs: sorted(evs, key=lambda e: e["event_time"] + int(rng.integers(0, jitter_ms + 1)))  # noqa: E731
    return Traffic(order(feats), order(preds))


# Ground truth for the model-quality layer. recsys labels are clicks, known within a minute or
# two; fraud labels are chargebacks, known hours to days later. Before the drift minute recsys's
# scores are calibrated (a click happens with probability = score); from it on, users click more
# than the model learnt (the true log-odds are the score's + CONCEPT_SHIFT), so accuracy falls.
CONCEPT_SHIFT = 2.5
POSITIVE_LABEL = {"recsys": 1, "fraud": 1}


# Chargebacks come 1 to 20 hours after the prediction: traffic of the last minutes then has labels
# dated at most 20 h ahead, within the decoder's limits.max_future (1 day by default); later ones
# would be absurd_timestamp dead letters (the demo once made about 7,300 of them).
CHARGEBACK_DELAY_MS = (3_600_000, 20 * 3_600_000)


def default_delays(model: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Label delay after the prediction, in ms: clicks about 20 s, chargebacks 1 to 20 h."""
    if model == "recsys":
        return rng.exponential(20_000, n).astype(np.int64)
    # Drawn over the old range (1 h to 2 days) and scaled into CHARGEBACK_DELAY_MS: the same draws
    # from rng, so every other value drawn after them (labels, outcomes) stays what it was.
    old_lo, old_hi = 3_600_000, 172_800_000
    lo, hi = CHARGEBACK_DELAY_MS
    return lo + (rng.integers(old_lo, old_hi, n) - old_lo) * (hi - lo) // (old_hi - old_lo)


def labels(
    predictions: list[dict],
    start_ms: int,
    drift_minute: int | None = None,
    coverage: float = 0.9,
    delays=default_delays,
    duplicate_rate: float = 0.0,
    orphan_rate: float = 0.0,
    seed: int = 13,
    jitter_ms: int = 2000,
) -> list[dict]:
    """Label events (schemas/label_event.v1.json) for a share `coverage` of the predictions.

    A label's event_time is its prediction's plus a delay (delays(model, rng, n) -> ms). A
    share duplicate_rate of the labels is sent twice (the copy 0 to 60 s later, with the label
    flipped: the first one must win), and orphan_rate labels name requests that never existed.
    The result is ordered by event time, shuffled by up to jitter_ms, as outcomes arrive.
    """
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    by_model: dict[str, list[dict]] = {}
    for p in predictions:
        by_model.setdefault(p["model_id"], []).append(p)
    for model, preds in by_model.items():
        chosen = [p for p, keep in zip(preds, rng.random(len(preds)) < coverage, strict=True) if keep]
        delay = delays(model, rng, len(chosen))
        u = rng.random(len(chosen))
        extra = rng.random(len(chosen))
        for p, d, ui, ei in zip(chosen, delay, u, extra, strict=True):
            s = p.get("score")
            true_p = 0.3 if s is None else s
            minute = (p["event_time"] - start_ms) // 60_000
            if model == "recsys" and drift_minute is not None and minute >= drift_minute:
                z = math.log(max(true_p, 1e-9) / max(1 - true_p, 1e-9)) + CONCEPT_SHIFT
                true_p = 1 / (1 + math.exp(-z))
            y = int(ui < true_p)
            ev = {"request_id": p["request_id"], "model_id": model, "event_time": int(p["event_time"] + d), "label": y}
            if model == "recsys":
                converted = bool(y) and bool(ei < 0.25)
                ev["outcomes"] = {"clicked": bool(y), "converted": converted,
                                  "revenue": round(5 + 40 * float(ei), 2) if converted else 0.0}  # fmt: skip
            out.append(ev)
    for ev in [e for e, dup in zip(out, rng.random(len(out)) < duplicate_rate, strict=True) if dup]:
        out.append(dict(ev, label=1 - ev["label"], event_time=ev["event_time"] + int(rng.integers(0, 60_001))))
    if predictions and orphan_rate > 0:
        times = [p["event_time"] for p in predictions]
        n_orphans = int(round(orphan_rate * len(out)))
        for i in range(n_orphans):
            model = MODELS[i % len(MODELS)]
            t = int(rng.integers(min(times), max(times) + 1)) + int(rng.integers(0, 120_000))
            out.append({"request_id": f"orphan-{i}", "model_id": model, "event_time": t, "label": int(i % 2)})
    return sorted(out, key=lambda e: e["event_time"] + int(rng.integers(0, jitter_ms + 1)))
