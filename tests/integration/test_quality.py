"""Model quality end to end on real components: Tansu broker, the PyFlink job, chDB.

Four models, one per kind of scoring: recsys (binary, clicks with business outcomes, concept
drift from minute 2), fraud (binary), intent (multi-class, confidence from probabilities) and
eta (regression, two versions). Labels come at random delays from 0 s to 3 h of event time
(label lateness L = 1 h here, so some are too late), some twice, some for requests that never
existed, some before their prediction; a few are invalid. Phase 2 (minute-3 predictions, whose
labels partly came in phase 1, and every label from T_SPLIT on) is produced while the job runs.
Labels are produced in event-time order give or take 2 s, as outcomes arrive, while their
predictions' order is shuffled by the delays.

Every per-window metric in ClickHouse, overall and per segment, must equal an offline
scikit-learn/numpy reference within 1e-9, and every label must be accounted for:
matched + orphans + duplicates + invalid = labels produced. The restart test kills the job
after a checkpoint, mid-stream, restores it from the retained checkpoint and expects the same.
"""

import json
import math
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    root_mean_squared_error,
)

from mlvigil import clickhouse, synth
from mlvigil.broker import partition_of, produce
from mlvigil.profile import build_profile, save_profile

from ..conftest import ROOT, JobProcess, job_env, wait_for
from .reference import cat_text, segment_keys

pytestmark = pytest.mark.integration
MIN = 60_000
L_MS = 3_600_000
SKEW_MS = 5_000
INTENTS = ["buy", "browse", "support"]
MODELS = {
    "recsys": {"segments": ["user_type", "region"], "positive_label": 1},
    "fraud": {"segments": ["region"], "positive_label": 1},
    "intent": {"segments": ["device"]},
    "eta": {"segments": [], "task": "regression"},
}
TASK = {"recsys": "binary", "fraud": "binary", "intent": "multiclass", "eta": "regression"}
INVALID_LABELS = [
    (b'{"request_id": "q1", "model_id": "recsys", "event_time": 1790000000000', "malformed_json"),
    (b'{"request_id": "q2", "model_id": "recsys", "event_time": 1790000000000}', "missing_field"),
    (b'{"request_id": "q3", "model_id": "nope", "event_time": 1790000000000, "label": 1}', "unknown_model"),
    (b'{"request_id": "q4", "model_id": "eta", "event_time": 1790000000000, "label": "late"}', "wrong_type"),
    (b'{"request_id": "q5", "model_id": "recsys", "event_time": 1790000000000, "label": 1, "outcomes": {"clicked": "yes"}}', "wrong_type"),
    (b'{"request_id": "q6", "model_id": "recsys", "event_time": 1790000000000, "label": {"v": 1}}', "wrong_type"),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Data


def _intent_and_eta(rng: np.random.Generator, start: int, minutes: range, per_minute: int) -> list[dict]:
    preds = []
    for minute in minutes:
        t0 = start + minute * MIN
        for i in range(per_minute):
            t = t0 + int(i * MIN / per_minute) + int(rng.integers(0, 2000))
            logits = rng.normal(0, 1.5, 3)
            p = np.exp(logits) / np.exp(logits).sum()
            pred = {"request_id": f"intent-{minute}-{i}", "model_id": "intent", "model_version": "v1",
                    "event_time": t, "segments": {"device": str(rng.choice(["ios", "web"]))},
                    "probabilities": {c: float(v) for c, v in zip(INTENTS, p, strict=True)},
                    "_truth": INTENTS[int(rng.choice(3, p=p))]}  # fmt: skip
            if i % 9 != 0:  # some answer with probabilities only: labelled, but not scored
                pred["predicted_label"] = INTENTS[int(np.argmax(p))]
            preds.append(pred)
            eta = {"request_id": f"eta-{minute}-{i}", "model_id": "eta", "model_version": f"v{1 + i % 2}",
                   "event_time": t, "_truth": round(float(rng.uniform(5, 60)), 3)}  # fmt: skip
            if i % 20 == 7:
                eta.update(status="error", error_code="TIMEOUT")
            else:
                eta["score"] = round(eta["_truth"] + float(rng.normal(0, 4 + minute)), 3)
            preds.append(eta)
    return preds


def _delays(model: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """70 % within 10 min, 22 % up to just under L, 8 % beyond L (up to 3 h): orphans."""
    kind = rng.random(n)
    return np.where(
        kind < 0.70,
        rng.integers(0, 10 * MIN, n),
        np.where(kind < 0.92, rng.integers(10 * MIN, L_MS - 1000, n), rng.integers(L_MS + 1000, 3 * L_MS, n)),
    )


class Dataset:
    """Predictions and labels (in produce order) of both phases, and the invalid labels."""

    def __init__(self, start: int, per_minute: int, seed: int = 5):
        rng = np.random.default_rng(seed)
        t = synth.traffic(start, 4, per_minute, drift_minute=2, seed=seed, prediction_segments=True)
        binary = [p for p in t.predictions if p["model_id"] in ("recsys", "fraud")]
        for i, p in enumerate(binary):
            if p["model_id"] == "recsys" and i % 13 == 0:
                p["segments"].pop("user_type")
        other = _intent_and_eta(rng, start, range(4), per_minute // 3)
        # In event-time order, give or take 2 s, as the service answers (no prediction is late).
        self.predictions = sorted(binary + other, key=lambda e: e["event_time"] + int(rng.integers(0, 2001)))
        labels = synth.labels(binary, start, drift_minute=2, coverage=0.9, delays=_delays, duplicate_rate=0.05,
                              orphan_rate=0.02, seed=seed)  # fmt: skip
        for p in other:
            if rng.random() < 0.9:
                d = int(_delays(p["model_id"], rng, 1)[0])
                labels.append({"request_id": p["request_id"], "model_id": p["model_id"],
                               "event_time": p["event_time"] + d, "label": p["_truth"]})  # fmt: skip
                if rng.random() < 0.05:
                    dup = p["_truth"] if p["model_id"] == "intent" else p["_truth"] + 1.5
                    labels.append({"request_id": p["request_id"], "model_id": p["model_id"],
                                   "event_time": p["event_time"] + d + int(rng.integers(0, 60_000)), "label": dup})  # fmt: skip
        # Within the skew (matched) and far before the prediction (orphan); a label for a
        # request of another model (orphan).
        r0, r1 = binary[5], binary[17]
        labels.append({"request_id": r0["request_id"], "model_id": r0["model_id"],
                       "event_time": r0["event_time"] - 2000, "label": 1})  # fmt: skip
        labels.append({"request_id": r1["request_id"], "model_id": r1["model_id"],
                       "event_time": r1["event_time"] - 10 * MIN, "label": 0})  # fmt: skip
        labels.append({"request_id": binary[3]["request_id"], "model_id": "intent",
                       "event_time": binary[3]["event_time"] + 1000, "label": "buy"})  # fmt: skip
        for p in self.predictions:
            p.pop("_truth", None)
        # As outcomes arrive: in event-time order, give or take 2 s.
        labels.sort(key=lambda e: e["event_time"] + int(rng.integers(0, 2001)))
        self.t_split = start + 3 * MIN + 30 * MIN
        self.phase1_predictions = [p for p in self.predictions if p["event_time"] < start + 3 * MIN]
        self.phase2_predictions = [p for p in self.predictions if p["event_time"] >= start + 3 * MIN]
        self.phase1_labels = [e for e in labels if e["event_time"] < self.t_split]
        self.phase2_labels = [e for e in labels if e["event_time"] >= self.t_split]
        self.labels = self.phase1_labels + self.phase2_labels  # produce order
        t_bad = str(start + 30_000).encode()
        self.invalid = [(None, raw.replace(b"1790000000000", t_bad), None) for raw, _ in INVALID_LABELS]
        # End of stream for a run that cannot end by itself (see the restart test), one on each
        # partition of each stream: a valid event far ahead in event time, which moves the
        # watermark of its partition (invalid events never do). Marker predictions and labels
        # have different request ids, so they never join; their windows never close, and the
        # quality row of the markers' window is left out of the checks (_check).
        self.end_ms = start + 20 * 3_600_000
        keys = {}
        for i in range(100):
            keys.setdefault(partition_of(f"end-{i}".encode(), 0, 4), f"end-{i}")
        self.end_marker = {
            stream: [
                (k.encode(), orjson.dumps({"request_id": f"{k}-{stream}", "model_id": "fraud", "model_version": "v1",
                                           "event_time": self.end_ms, "label": 0, "score": 0.5}), None)
                for k in keys.values()
            ]
            for stream in ("predictions", "labels")
        }  # fmt: skip
        self.markers = 0


def _messages(events: list[dict]) -> list[tuple]:
    return [(e["request_id"].encode(), orjson.dumps(e), None) for e in events]


def _phase2(data: "Dataset", stream: str) -> list[tuple]:
    events = data.phase2_predictions if stream == "predictions" else data.phase2_labels
    return _messages(events) + (data.end_marker[stream] if data.markers else [])


def _config(tmp_path: Path, broker, topics: dict, checkpoint_interval: str = "10s") -> Path:
    models = {}
    for model, spec in MODELS.items():
        if model in ("recsys", "fraud"):
            cols = synth.training_columns(model, 5000)
        elif model == "intent":
            r = np.random.default_rng(1)
            p = r.dirichlet([1, 1, 1], 3000)
            cols = {"session_len": r.exponential(30, 3000).tolist(), "score": p.max(axis=1).tolist(),
                    "predicted_label": [INTENTS[i] for i in p.argmax(axis=1)]}  # fmt: skip
        else:
            cols = {"distance_km": np.random.default_rng(2).uniform(1, 30, 3000).tolist(),
                    "score": np.random.default_rng(3).uniform(5, 60, 3000).tolist()}  # fmt: skip
        save_profile(build_profile(cols, model, "v1"), tmp_path / f"{model}.json")
        versions = {"v1": str(tmp_path / f"{model}.json")}
        if model == "eta":
            versions["v2"] = versions["v1"]
        models[model] = {**spec, "profiles": versions}
    cfg = {
        "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics,
                  "group_id": topics["labels"]},
        "window": {"size": "1m", "out_of_orderness": "5s", "idle_timeout": "1h"},
        "labels": {"lateness": "1h", "skew": "5s"},
        "models": models,
        "clickhouse": {"url": f"chdb://{tmp_path / 'ch'}", "flush_interval": "200ms"},
        "flink": {"parallelism": 1, "checkpoint_dir": str(tmp_path / "ckpt"), "restart_attempts": 0,
                  "checkpoint_interval": checkpoint_interval},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _stop_offsets(data: Dataset) -> dict:
    """The stop offsets of the whole run (both phases; features: none) per stream."""
    ends: dict[str, dict[int, int]] = {}

    def count(msgs, base):
        end = dict(base)
        for i, (key, _, _) in enumerate(msgs):
            p = partition_of(key, i, 4)
            end[p] = end.get(p, 0) + 1
        return end

    zero = {p: 0 for p in range(4)}
    p1 = count(_messages(data.phase1_predictions), zero)
    ends["predictions"] = count(_phase2(data, "predictions"), p1)
    l1 = count(data.invalid, zero)
    l1 = count(_messages(data.phase1_labels), l1)
    ends["labels"] = count(_phase2(data, "labels"), l1)
    return {s: {str(p): o for p, o in v.items()} for s, v in ends.items()}


# ---------------------------------------------------------------------------------------------
# Offline reference: scikit-learn and numpy over the raw events


def _score(p: dict):
    if p.get("score") is not None:
        return p["score"]
    probs = p.get("probabilities")
    return max(probs.values()) if probs else None


def _ratio(a, b):
    return a / b if b else None


def _ece(score: np.ndarray, hit: np.ndarray) -> float:
    bins = np.clip(np.floor(score * 10), 0, 9)
    return sum(np.mean(bins == b) * abs(score[bins == b].mean() - hit[bins == b].mean()) for b in np.unique(bins))


def _nan_none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def reference(data: Dataset) -> tuple[dict, Counter]:
    """(window_ms, model, version, segment) -> metrics, and label verdict counts."""
    preds = {(p["model_id"], p["request_id"]): p for p in data.predictions}
    groups: dict[tuple, dict] = defaultdict(lambda: {"predictions": 0, "rows": []})
    for p in data.predictions:
        for seg in segment_keys(p, MODELS[p["model_id"]]["segments"]):
            groups[(p["event_time"] // MIN * MIN, p["model_id"], p["model_version"], seg)]["predictions"] += 1
    seen, verdicts = set(), Counter(invalid=len(data.invalid))
    for e in data.labels:
        key = (e["model_id"], e["request_id"])
        if key in seen:
            verdicts["duplicate_label"] += 1
            continue
        seen.add(key)
        p = preds.get(key)
        if p is None or not (p["event_time"] - SKEW_MS <= e["event_time"] <= p["event_time"] + L_MS):
            verdicts["orphan_label"] += 1
            continue
        verdicts["matched"] += 1
        for seg in segment_keys(p, MODELS[p["model_id"]]["segments"]):
            groups[(p["event_time"] // MIN * MIN, p["model_id"], p["model_version"], seg)]["rows"].append((p, e))
    return {k: _metrics(k[1], g["predictions"], g["rows"]) for k, g in groups.items()}, verdicts


def _metrics(model: str, n_pred: int, rows: list[tuple]) -> dict:
    task = TASK[model]
    labels = [e for _, e in rows]
    out = {"predictions": n_pred, "labelled": len(rows), "label_coverage": _ratio(len(rows), n_pred)}
    for name, field in (("ctr", "clicked"), ("conversion_rate", "converted"), ("revenue_per_request", "revenue")):
        vals = [e["outcomes"][field] for e in labels if e.get("outcomes", {}).get(field) is not None]
        out[name] = float(np.sum(vals)) / len(rows) if vals else None
    keys = ["scored", "accuracy", "precision", "recall", "f1", "ece", "calibrated", "mean_prediction",
            "mean_observed", "mae", "rmse"]  # fmt: skip
    out.update(dict.fromkeys(keys))
    out["scored"], out["calibrated"] = 0, 0
    if task == "regression":
        xs = [(p["score"], float(e["label"])) for p, e in rows if p.get("score") is not None]
        out["scored"] = len(xs)
        if xs:
            pred, y = np.array(xs).T
            out.update(mae=mean_absolute_error(y, pred), rmse=root_mean_squared_error(y, pred),
                       mean_prediction=pred.mean(), mean_observed=y.mean())  # fmt: skip
        return out
    if task == "binary":
        pos = cat_text(MODELS[model]["positive_label"])
        scored = [(cat_text(e["label"]) == pos, cat_text(p["predicted_label"]) == pos) for p, e in rows
                  if p.get("predicted_label") is not None]  # fmt: skip
        cal = [(_score(p), cat_text(e["label"]) == pos) for p, e in rows if _score(p) is not None]
        if scored:
            y, y_hat = np.array(scored).T
            out.update(accuracy=accuracy_score(y, y_hat),
                       precision=_nan_none(precision_score(y, y_hat, zero_division=np.nan)),
                       recall=_nan_none(recall_score(y, y_hat, zero_division=np.nan)),
                       f1=_nan_none(f1_score(y, y_hat, zero_division=np.nan)))  # fmt: skip
    else:
        pairs = [(cat_text(e["label"]), p["predicted_label"]) for p, e in rows if p.get("predicted_label") is not None]
        cal = [(_score(p), cat_text(e["label"]) == p["predicted_label"]) for p, e in rows
               if p.get("predicted_label") is not None and _score(p) is not None]  # fmt: skip
        if pairs:
            y, y_hat = zip(*pairs, strict=True)
            pr, rc, f1, _ = precision_recall_fscore_support(y, y_hat, average="macro", zero_division=0)
            out.update(accuracy=accuracy_score(y, y_hat), precision=pr, recall=rc, f1=f1)
        scored = pairs
    out["scored"] = len(scored)
    if cal:
        s, hit = np.array([c[0] for c in cal]), np.array([c[1] for c in cal], dtype=float)
        out.update(ece=_ece(s, hit), calibrated=len(cal), mean_prediction=s.mean(), mean_observed=hit.mean())
    return out


# ---------------------------------------------------------------------------------------------
# Checks

COLUMNS = ["predictions", "labelled", "label_coverage", "scored", "accuracy", "precision", "recall", "f1", "ece",
           "calibrated", "mean_prediction", "mean_observed", "mae", "rmse", "ctr", "conversion_rate",
           "revenue_per_request"]  # fmt: skip


def _close(a, b, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(b))


def check_against_reference(url: str, data: Dataset) -> dict:
    """Every metric and every label's fate against the reference, read in one session of the
    store (the embedded store admits one process at a time; the job writes between looks)."""
    with clickhouse.client(url) as c:
        return _check(lambda sql, params=None: c.query(sql, parameters=params).result_rows, data)


def _check(query_rows, data: Dataset) -> dict:
    expected, verdicts = reference(data)
    rows = query_rows(
        "SELECT toUnixTimestamp64Milli(window_start), model_id, model_version, segment, task, "
        + ", ".join(COLUMNS)
        + " FROM mlvigil.quality_metrics FINAL",
    )
    got = {tuple(r[:4]): dict(zip(["task", *COLUMNS], r[4:], strict=True)) for r in rows if r[0] < data.end_ms}
    assert set(got) == set(expected), (
        f"missing {sorted(set(expected) - set(got))[:5]}, extra {sorted(set(got) - set(expected))[:5]}"
    )
    mismatches = [
        (key, c, got[key][c], e[c]) for key, e in expected.items() for c in COLUMNS if not _close(got[key][c], e[c])
    ]
    assert not mismatches, f"{len(mismatches)} mismatches of {len(expected) * len(COLUMNS)}, e.g. {mismatches[:6]}"
    assert all(got[k]["task"] == TASK[k[1]] for k in got)

    # Accounting: every label is matched, an orphan, a duplicate or invalid.
    dead = Counter(
        dict(query_rows("SELECT kind, count() FROM mlvigil.dead_letters FINAL WHERE stream = 'labels' GROUP BY kind"))
    )
    matched = sum(v["labelled"] for k, v in got.items() if k[3] == "*")
    assert matched == verdicts["matched"]
    assert dead["orphan_label"] == verdicts["orphan_label"] and dead["duplicate_label"] == verdicts["duplicate_label"]
    # (End markers, when there are any, are valid and still pending in the join: see Dataset.)
    assert dead["invalid"] == len(data.invalid)
    fates = matched + dead["orphan_label"] + dead["duplicate_label"] + dead["invalid"]
    assert fates == len(data.labels) + len(data.invalid)
    assert sum(v["predictions"] for k, v in got.items() if k[3] == "*") == len(data.predictions)
    reasons = Counter(
        r[0]
        for r in query_rows(
            "SELECT reason_code FROM mlvigil.dead_letters FINAL WHERE stream = 'labels' AND kind = 'invalid'"
        )
    )
    assert reasons == Counter(code for _, code in INVALID_LABELS)
    per_minute = query_rows("SELECT sum(events) FROM mlvigil.label_dead_letters_per_minute")[0][0]
    assert per_minute == sum(dead.values())
    return {"verdicts": verdicts, "got": got}


def _quality_started(url: str) -> bool:
    try:
        return clickhouse.query_rows(url, "SELECT count() FROM mlvigil.quality_metrics WHERE labelled > 0")[0][0] > 0
    except Exception:  # tables not there yet
        return False


def _start_ms() -> int:
    return (int(time.time() * 1000) // MIN - 10) * MIN


def _produce_phase1(broker, topics, data: Dataset) -> None:
    produce(broker.bootstrap, topics["predictions"], _messages(data.phase1_predictions))
    produce(broker.bootstrap, topics["labels"], data.invalid + _messages(data.phase1_labels))


def test_quality_matches_offline_reference(broker, topics, tmp_path):
    start = _start_ms()
    data = Dataset(start, per_minute=150)
    config = _config(tmp_path, broker, topics)
    url = f"chdb://{tmp_path / 'ch'}"
    stop = _stop_offsets(data)
    _produce_phase1(broker, topics, data)
    job = JobProcess(config, stop, tmp_path / "job.log")
    try:
        wait_for(lambda: _quality_started(url), 180, "first quality rows in ClickHouse")
        produce(broker.bootstrap, topics["labels"], _phase2(data, "labels"))
        produce(broker.bootstrap, topics["predictions"], _phase2(data, "predictions"))
        job.wait(240)
    finally:
        job.kill()
    result = check_against_reference(url, data)
    v = result["verdicts"]
    assert v["matched"] > 800 and v["orphan_label"] > 50 and v["duplicate_label"] > 20  # the data has every case
    got = result["got"]
    # The drift is visible: recsys accuracy falls from minute 2 (users click more than scored).
    acc = [got[(start + m * MIN, "recsys", "v1", "*")]["accuracy"] for m in range(4)]
    assert max(acc[2:]) < min(acc[:2]), acc
    # Prediction stability sits next to the quality metrics (the std of the score, data layer).
    std = clickhouse.query_rows(
        url, "SELECT count(), countIf(score_std > 0) FROM mlvigil.quality_latest WHERE model_id = 'recsys'"
    )[0]
    assert std[0] > 0 and std[0] == std[1]


class UnboundedJob(JobProcess):
    """The job without --stop-offsets: it runs until killed."""

    def __init__(self, config: Path, log: Path, extra: list[str] | None = None):
        self.log = log
        cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(config), *(extra or [])]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True, env=job_env(log)
        )


def test_restart_from_checkpoint_gives_the_same_numbers(broker, topics, tmp_path):
    """Killed (SIGKILL) after a checkpoint, mid-stream; restarted with --restore latest.

    Both runs are unbounded, as in production: a bounded Kafka source restored from a checkpoint
    never ends in flink-connector-kafka 4.0.1 (FLINK-31006: the restored enumerator never sends
    NoMoreSplits). The data ends with an end-of-stream marker on every partition (see Dataset)
    that moves the watermarks past everything; the test waits for ClickHouse to match the
    reference, then stops the job.
    """
    start = _start_ms()
    data = Dataset(start, per_minute=90, seed=8)
    data.markers = len(data.end_marker["labels"])
    config = _config(tmp_path, broker, topics, checkpoint_interval="1s")
    url = f"chdb://{tmp_path / 'ch'}"
    _produce_phase1(broker, topics, data)
    labels2 = _phase2(data, "labels")
    half = len(labels2) // 2
    job = UnboundedJob(config, tmp_path / "job1.log")
    try:
        wait_for(lambda: _quality_started(url), 180, "first quality rows in ClickHouse")
        started = time.time()
        wait_for(
            lambda: [m for m in (tmp_path / "ckpt").glob("*/chk-*/_metadata") if m.stat().st_mtime > started],
            60,
            "a checkpoint completed after phase 1 was processed",
        )
        produce(broker.bootstrap, topics["labels"], labels2[:half])
        time.sleep(1.5)  # mid-stream: part of this batch is processed, part is not
    finally:
        job.kill()  # SIGKILL to the whole process group: no savepoint, no clean shutdown
    assert job.proc.returncode != 0
    assert clickhouse.query_rows(url, "SELECT count() FROM mlvigil.quality_metrics")[0][0] > 0
    produce(broker.bootstrap, topics["labels"], labels2[half:])
    produce(broker.bootstrap, topics["predictions"], _phase2(data, "predictions"))
    restarted = time.time()
    job = UnboundedJob(config, tmp_path / "job2.log", extra=["--restore", "latest"])
    try:
        last_miss = ["nothing checked yet"]

        def matches() -> bool:
            try:
                check_against_reference(url, data)
                return True
            except AssertionError as e:
                last_miss[0] = str(e)[:2000]
                return False

        try:
            wait_for(matches, 420, "the restored job to reach the reference", interval=6)  # each look holds the store
        except AssertionError as e:
            raise AssertionError(f"{e}; last difference: {last_miss[0]}; job log tail:\n{job.tail()}") from None
        assert job.proc.poll() is None, f"the restored job died; log tail:\n{job.tail()}"
    finally:
        job.kill()
    log = (tmp_path / "job2.log").read_text()
    assert "restoring from checkpoint" in log and "chk-" in log
    check_against_reference(url, data)
    # It resumed from the checkpoint, not from the start: the invalid labels (the first messages
    # on the topic, behind the checkpoint's offsets) were not read again, so their dead letters
    # keep the first run's write time.
    first_run = clickhouse.query_rows(
        url,
        "SELECT countIf(toUnixTimestamp64Milli(received_at) < {t:Int64}) FROM mlvigil.dead_letters FINAL"
        " WHERE stream = 'labels' AND reason_code IN ('malformed_json', 'missing_field', 'wrong_type')",
        {"t": int(restarted * 1000)},
    )[0][0]
    assert first_run == len(data.invalid) - 1  # all but the unknown_model one
