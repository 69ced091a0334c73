"""Alert rules and routing: configuration as data (YAML), validated here. Pure Python.

A rule watches one metric column of the metric rows (finalize.FEATURE_COLUMNS for the data
layer, finalize.SERVICE_COLUMNS for the service layer, quality and business rows likewise) and
compares it either with an absolute threshold or with a baseline:

* absolute: ``value <op> threshold`` (op one of > >= < <=);
* relative: ``change`` "drop" -> ``(baseline - value) / |baseline|``, "rise" ->
  ``(value - baseline) / |baseline|``, then ``change <op> threshold`` (op default ">"), where the
  baseline is ``reference`` (the row's ``f"{metric}_reference"`` field) or ``trailing:N`` (the
  mean of the previous N evaluated windows of the same target, kept in the engine state).

Effective threshold of a row: the per-feature override if any (``feature_thresholds``, exact name
first, then glob patterns in file order), else ``threshold``; then, when
``importance_weight`` w > 0 and the row carries ``importance`` i in [0, 1],
``threshold * (1 - w * i)``. So with w = 0.5 a feature of importance 1 alerts at half the
threshold and one of importance 0 at the plain threshold. Weighting lowers the bar, so it is
only allowed with ">" / ">=" (drift, rises, drops); it would make "<" rules less sensitive.
"""

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlvigil.alerting.significance import (
    benjamini_hochberg,
    chi2_homogeneity,
    chi2_sf,
    counts_from_proportions,
    psi_statistic,
)
from mlvigil.config import duration_ms, expand_env

LAYERS = ("data", "model", "service", "business", "monitor")  # monitor: the monitor's own health
SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
OPS = (">", ">=", "<", "<=")
CHANGES = ("drop", "rise", "shift")
TESTS = ("chi2", "psi", "binomial")
"""Rule field ``test``: chi2/psi test a data-layer row's bin counts against the reference;
binomial tests a rate (accuracy, error_rate, conversion_rate, ...) against its baseline, or
against the threshold of an absolute rule."""
COUNT_TESTS = ("chi2", "psi")
DEFAULT_TEST_MIN_SAMPLES = {"chi2": 100, "psi": 500, "binomial": 100}
"""A rule with a test needs at least this many samples unless it sets min_samples. Measured on
no-drift windows (10 bins, README): chi-square holds its level from 50 events on; scaled PSI
alarms too often below about 500 (empty bins, whose PSI term uses a 1e-4 floor), e.g. 7.4 %
instead of 5 % at 100 events."""
RECEIVER_TYPES = ("generic", "slack", "feishu", "dingtalk", "wecom", "alertmanager", "log")
# Sample-count fields, first present wins ("labelled" before "events": accuracy over 5 labels
# of 10,000 predictions is 5 samples). missing_rate is a share of events, so it counts events.
SAMPLE_FIELDS = ("labelled", "present", "requests", "events")
SAMPLE_FIELDS_BY_METRIC = {"missing_rate": ("events",), "error_rate": ("requests", "events")}
POSITIVES_METRICS = ("recall",)
"""Metrics whose samples are the actual positives, labelled x mean_observed (binary: the positive
rate): recall over 450 labels of which 130 are positive is 130 samples."""
ANY_SEGMENT = "**"
"""Segment pattern matching every row; the default "*" matches only the all-traffic row "*"."""
RESERVED_LABELS = ("alertname", "severity", "layer", "metric", "model_id", "model_version", "segment", "feature")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRAILING = re.compile(r"^trailing:(\d+)$")


def _glob(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _num(value: Any) -> float | None:
    """A finite float, or None for missing, NaN, infinities and non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def compare(value: float, op: str, threshold: float) -> bool:
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    return value <= threshold


@dataclass
class Observation:
    """One rule on one row: was it evaluated, did the condition hold, and the numbers."""

    evaluated: bool
    hit: bool = False
    value: float | None = None
    observed: float | None = None  # the compared number: value, or the relative change
    baseline: float | None = None
    threshold: float | None = None  # effective threshold
    samples: int | None = None
    reason: str = ""  # why not evaluated
    p_value: float | None = None  # rules with a significance test
    baseline_source: str | None = None  # "reference" or "trailing:N" (a fallback says which)


@dataclass
class Rule:
    name: str
    layer: str
    metric: str
    severity: str = "warning"
    model_id: str = "*"
    model_version: str = "*"
    feature: str = "*"
    segment: str = "*"
    op: str = ">"
    threshold: float = 0.0
    baseline: str | None = None  # None (absolute) | "reference" | "trailing:N"
    change: str | None = None  # None (absolute) | "drop" | "rise" | "shift"
    for_windows: int = 1
    min_samples: int = 0
    feature_thresholds: dict[str, float] = field(default_factory=dict)
    importance_weight: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    # -- detector rules (see "Detector rules" below) --
    detector: str | None = None  # a name from mlvigil.alerting.detectors (ewma, cusum, seasonal, page_hinkley)
    detector_params: dict[str, Any] = field(default_factory=dict)
    # -- sample-size aware options (see the significance block below) --
    fallback: str | None = None  # "trailing:N": baseline when a reference baseline is missing
    test: str | None = None  # None | "chi2" | "psi": also require a significant difference
    alpha: float = 0.05  # the test's level, or the false-discovery rate q with fdr
    fdr: bool = False  # Benjamini-Hochberg across the rule's rows of one window and model version

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a rule needs a name")
        if self.layer not in LAYERS:
            raise ValueError(f"{where}: layer must be one of {LAYERS}, not {self.layer!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"{where}: severity must be one of {SEVERITIES}, not {self.severity!r}")
        if self.op not in OPS:
            raise ValueError(f"{where}: op must be one of {OPS}, not {self.op!r}")
        if (self.baseline is None) != (self.change is None):
            raise ValueError(f"{where}: a relative condition needs both baseline and change")
        if self.change is not None and self.change not in CHANGES:
            raise ValueError(f"{where}: change must be one of {CHANGES}, not {self.change!r}")
        if self.baseline is not None and self.baseline != "reference" and not _TRAILING.match(self.baseline):
            raise ValueError(f"{where}: baseline must be 'reference' or 'trailing:N', not {self.baseline!r}")
        if self.trailing_windows == 0:
            raise ValueError(f"{where}: trailing:N needs N >= 1")
        if int(self.for_windows) < 1:
            raise ValueError(f"{where}: for_windows must be >= 1")
        if int(self.min_samples) < 0:
            raise ValueError(f"{where}: min_samples must be >= 0")
        if not 0.0 <= float(self.importance_weight) <= 1.0:
            raise ValueError(f"{where}: importance_weight must be in [0, 1]")
        if self.importance_weight and self.op not in (">", ">="):
            raise ValueError(f"{where}: importance weighting lowers the threshold, so it needs op > or >=")
        for k in self.labels:
            if not LABEL_NAME.match(k):
                raise ValueError(f"{where}: label name {k!r} must match {LABEL_NAME.pattern}")
            if k in RESERVED_LABELS:
                raise ValueError(f"{where}: label {k!r} is set by the engine")
        self._check_significance(where)
        self.threshold = float(self.threshold)
        self.for_windows = int(self.for_windows)
        self.min_samples = int(self.min_samples)
        self.importance_weight = float(self.importance_weight)
        self.feature_thresholds = {str(k): float(v) for k, v in self.feature_thresholds.items()}
        self.labels = {str(k): str(v) for k, v in self.labels.items()}
        self.annotations = {str(k): str(v) for k, v in self.annotations.items()}
        self.actions = [str(a) for a in self.actions]
        self._check_detector()

    @property
    def trailing_windows(self) -> int | None:
        """N of a trailing baseline or fallback: how many past values the engine keeps."""
        m = _TRAILING.match(self.baseline or "") or _TRAILING.match(self.fallback or "")
        return int(m.group(1)) if m else None

    @property
    def relative(self) -> bool:
        return self.change is not None

    # -- matching ------------------------------------------------------------------------------

    def matches(self, row: dict) -> bool:
        """Does this rule watch this row? (layer, metric column present, the glob filters)."""
        if self.layer not in row_layers(row) or self.metric not in row:
            return False
        if not _glob(str(row.get("model_id", "")), self.model_id):
            return False
        if not _glob(str(row.get("model_version", "")), self.model_version):
            return False
        if not _glob(str(row.get("feature") or ""), self.feature):
            return False
        seg = str(row.get("segment") or "*")
        if self.segment == "*":
            return seg == "*"
        return self.segment == ANY_SEGMENT or _glob(seg, self.segment)

    def target(self, row: dict) -> dict[str, str]:
        """The labels that identify what the rule watches in this row (part of the fingerprint)."""
        t = {
            "model_id": str(row.get("model_id", "")),
            "model_version": str(row.get("model_version", "")),
            "segment": str(row.get("segment") or "*"),
        }
        if row.get("feature"):
            t["feature"] = str(row["feature"])
        return t

    # -- evaluation ----------------------------------------------------------------------------

    def samples(self, row: dict) -> int | None:
        if self.metric in POSITIVES_METRICS:
            labelled, rate = _num(row.get("labelled")), _num(row.get("mean_observed"))
            if labelled is not None and rate is not None:
                return int(round(labelled * rate))
        for name in SAMPLE_FIELDS_BY_METRIC.get(self.metric, SAMPLE_FIELDS):
            n = _num(row.get(name))
            if n is not None:
                return int(n)
        return None

    def effective_threshold(self, row: dict) -> float:
        feature = str(row.get("feature") or "")
        threshold = self.threshold
        if feature in self.feature_thresholds:
            threshold = self.feature_thresholds[feature]
        else:
            for pattern, t in self.feature_thresholds.items():
                if _glob(feature, pattern):
                    threshold = t
                    break
        importance = _num(row.get("importance"))
        if self.importance_weight and importance is not None:
            threshold *= 1.0 - self.importance_weight * min(max(importance, 0.0), 1.0)
        return threshold

    def observe(self, row: dict, history: list[float] | None = None, fdr_reject: bool | None = None) -> Observation:
        """Evaluate the condition on one row; history: previous values of the target (trailing);
        fdr_reject: the Benjamini-Hochberg decision of the row's window (rules with fdr)."""
        value = _num(row.get(self.metric))
        samples = self.samples(row)
        if value is None:
            return Observation(False, samples=samples, reason="no value")
        if self.min_samples and (samples is None or samples < self.min_samples):
            return Observation(False, value=value, samples=samples, reason="too few samples")
        threshold = self.effective_threshold(row)
        if self.test in COUNT_TESTS:
            p = self.p_value(row)
            if p is None:
                return Observation(False, value=value, samples=samples, reason="no counts")
            significant = p <= self.alpha if fdr_reject is None or not self.fdr else fdr_reject
            hit = significant and compare(value, self.op, threshold)
            return Observation(True, hit, value, value, None, threshold, samples, p_value=p)
        if not self.relative:
            hit = compare(value, self.op, threshold)
            p = self.binomial_p(value, threshold, samples, None) if self.test == "binomial" else None
            hit = hit and (p is None or p <= self.alpha)
            return Observation(True, hit, value, value, None, threshold, samples, p_value=p)
        baseline, source = self.baseline_of(row, history or [])
        if baseline is None or baseline == 0:
            return Observation(False, value=value, samples=samples, reason="no baseline", baseline_source=source)
        if self.change == "shift":
            change = abs(value - baseline)  # absolute, in the metric's unit
        else:
            delta = (baseline - value) if self.change == "drop" else (value - baseline)
            change = delta / abs(baseline)
        hit = compare(change, self.op, threshold)
        p = None
        if self.test == "binomial":
            p = self.binomial_p(value, baseline, samples, None if source == "reference" else self.trailing_windows)
            hit = hit and (p is None or p <= self.alpha)
        return Observation(True, hit, value, change, baseline, threshold, samples, p_value=p, baseline_source=source)

    def baseline_of(self, row: dict, history: list[float]) -> tuple[float | None, str | None]:
        """(baseline, which one): the row's reference, else the trailing fallback if any."""
        if self.baseline == "reference":
            ref = _num(row.get(f"{self.metric}_reference"))
            if ref is not None or not self.fallback:
                return ref, "reference"
        n = self.trailing_windows or 0
        source = f"trailing:{n}"
        return (sum(history[-n:]) / n if len(history) >= n else None), source

    # -- significance and baseline fallback (sample-size aware thresholds) ---------------------

    def _check_significance(self, where: str) -> None:
        if self.fallback is not None:
            if self.baseline != "reference" or not _TRAILING.match(self.fallback) or self.fallback == "trailing:0":
                raise ValueError(f"{where}: fallback 'trailing:N' (N >= 1) is for baseline: reference only")
        if self.test is None:
            if self.fdr:
                raise ValueError(f"{where}: fdr needs a test (chi2 or psi)")
            return
        if self.test not in TESTS:
            raise ValueError(f"{where}: test must be one of {TESTS}, not {self.test!r}")
        if self.test in COUNT_TESTS and self.relative:
            raise ValueError(f"{where}: a test compares bin counts with the reference; it takes no baseline/change")
        if self.test == "binomial" and (self.fdr or self.change == "shift"):
            raise ValueError(f"{where}: the binomial test takes no fdr and no change: shift")
        if not 0.0 < float(self.alpha) < 1.0:
            raise ValueError(f"{where}: alpha must be in (0, 1)")
        self.alpha = float(self.alpha)
        self.fdr = bool(self.fdr)
        # Small windows: the chi-square approximation needs counts (about 5 per bin), and PSI's
        # noise floor (B - 1)(1/n + 1/N) dwarfs real drift; so a test rule has a minimum by default.
        if not int(self.min_samples):
            self.min_samples = DEFAULT_TEST_MIN_SAMPLES[self.test]

    def binomial_p(self, rate: float, p0: float, n: int | None, trailing: int | None) -> float | None:
        """One-sided p-value that a rate of n samples differs from p0 in the rule's direction
        (below for drop and "<" rules, above otherwise); normal approximation. A trailing p0 is a
        mean over about `trailing` windows of similar size, so its variance adds 1/trailing."""
        if not n or not 0.0 < p0 < 1.0:
            return None
        var = p0 * (1.0 - p0) / n * (1.0 + (1.0 / trailing if trailing else 0.0))
        z = (rate - p0) / var**0.5
        if self.change == "drop" or (not self.relative and self.op in ("<", "<=")):
            z = -z
        tail = 0.5 * chi2_sf(z * z, 1)  # P(Z >= |z|) for a standard normal Z
        return tail if z > 0 else 1.0 - tail

    def p_value(self, row: dict) -> float | None:
        """The test's p-value for a row, or None when the row cannot be tested: no bin counts or
        reference counts (``bin_proportions``, ``present``, ``reference_expected``,
        ``reference_count``), fewer samples than min_samples, or no bin to compare."""
        if self.test not in COUNT_TESTS:
            return None
        n = _num(row.get("present"))
        big_n = _num(row.get("reference_count"))
        props, expected = row.get("bin_proportions"), row.get("reference_expected")
        if not n or not big_n or not props or not expected or len(props) != len(expected):
            return None
        samples = self.samples(row)
        if self.min_samples and (samples is None or samples < self.min_samples):
            return None
        observed = counts_from_proportions(props, n)
        reference = counts_from_proportions(expected, big_n)
        if self.test == "chi2":
            stat, df = chi2_homogeneity(observed, reference)
        else:
            psi = _num(row.get("psi"))
            if psi is None:
                return None
            stat, df = psi_statistic(psi, n, big_n), int(np.count_nonzero(observed + reference)) - 1
        return chi2_sf(stat, df) if df >= 1 else None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    # -- detector rules ------------------------------------------------------------------------
    # ``detector: ewma`` (+ ``detector_params``) replaces the condition: the rule's metric feeds a
    # change detector per target, whose state the engine keeps in state["targets"], and the
    # detector's verdict is the hit. op, threshold, feature_thresholds and importance weighting do
    # not apply; min_samples, for_windows, labels and actions do.

    def _check_detector(self) -> None:
        if self.detector is None:
            if self.detector_params:
                raise ValueError(f"rule {self.name!r}: detector_params without a detector")
            return
        from mlvigil.alerting.detectors import make_detector

        if self.relative:
            raise ValueError(f"rule {self.name!r}: a detector rule has no baseline/change (the detector learns one)")
        if self.feature_thresholds or self.importance_weight:
            raise ValueError(f"rule {self.name!r}: feature_thresholds and importance_weight do not apply to detectors")
        self.detector_params = dict(self.detector_params or {})
        try:
            make_detector(self.detector, self.detector_params)  # validate now, at load time
        except (KeyError, ValueError) as e:
            raise ValueError(f"rule {self.name!r}: {e.args[0]}") from None

    def observe_detector(self, row: dict, det_state: dict | None, t_ms: int) -> tuple[Observation, dict | None]:
        """Evaluate a detector rule on one row: feed the metric to the target's detector (restored
        from det_state, a Detector.to_dict()) and return the observation and the new state. A
        window that cannot be evaluated (no value, too few samples) leaves the detector as it was.
        A stored state from another detector or other parameters (the rule was edited), or one
        that cannot be read, is dropped: the detector learns its baseline again."""
        from mlvigil.alerting.detectors import Detector, make_detector

        value = _num(row.get(self.metric))
        samples = self.samples(row)
        if value is None:
            return Observation(False, samples=samples, reason="no value"), det_state
        if self.min_samples and (samples is None or samples < self.min_samples):
            return Observation(False, value=value, samples=samples, reason="too few samples"), det_state
        det = make_detector(str(self.detector), self.detector_params)
        if det_state and det_state.get("detector") == det.name and det_state.get("params") == det.params:
            try:
                det = Detector.from_dict(det_state)
            except (KeyError, TypeError, ValueError):  # a state this code cannot read: learn again
                det = make_detector(str(self.detector), self.detector_params)
        det.update(value, t_ms)
        if not det.consumed:  # nothing to compare with (a seasonal slot without warm-up data)
            return Observation(False, value=value, samples=samples, reason="no baseline"), det_state
        obs = Observation(
            True, det.drift_detected and det.ready, value, det.statistic, det.baseline, det.limit, samples,
            "" if det.ready else "warming up",
        )  # fmt: skip
        return obs, det.to_dict()


def fdr_decisions(rules: list["Rule"], rows: list[dict]) -> dict[tuple[str, int], bool]:
    """Benjamini-Hochberg per rule with ``fdr`` over the rows of one window: the family is the
    rule's testable rows of one (model_id, model_version), i.e. all features x segments of a
    model version in the window. Returns (rule name, row index) -> discovery."""
    out: dict[tuple[str, int], bool] = {}
    for rule in rules:
        if not (rule.test in COUNT_TESTS and rule.fdr):
            continue
        families: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for i, row in enumerate(rows):
            if rule.matches(row) and _num(row.get(rule.metric)) is not None:
                p = rule.p_value(row)
                if p is not None:
                    families.setdefault((str(row.get("model_id")), str(row.get("model_version"))), []).append((i, p))
        for members in families.values():
            reject = benjamini_hochberg(np.array([p for _, p in members]), rule.alpha)
            out.update({(rule.name, i): bool(r) for (i, _), r in zip(members, reject, strict=True)})
    return out


def row_layers(row: dict) -> tuple[str, ...]:
    """The row's layers: its "layer" field (a name, or a list such as ["model", "business"] for a
    quality row carrying accuracy and ctr), else data for feature rows, service for service rows,
    model otherwise."""
    layer = row.get("layer")
    if isinstance(layer, (list, tuple)):
        return tuple(str(x) for x in layer)
    if layer:
        return (str(layer),)
    if "feature" in row:
        return ("data",)
    if "requests" in row:
        return ("service",)
    return ("model",)


_RULE_KEYS = set(Rule.__dataclass_fields__)


def rule_from_dict(d: dict) -> list[Rule]:
    """One rule from its YAML mapping; "match" and "condition" sub-mappings are flattened.

    Sugar: ``severities: {warning: 0.10, critical: 0.20}`` instead of severity + threshold makes one
    rule per severity, named ``{name}_{severity}``.
    """
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if k in ("match", "condition") and isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    severities = flat.pop("severities", None)
    unknown = set(flat) - _RULE_KEYS
    if unknown:
        raise ValueError(f"rule {flat.get('name')!r}: unknown keys {sorted(unknown)}")
    if "change" in flat and "baseline" not in flat:
        flat["baseline"] = "reference"
    if severities:
        base = {k: v for k, v in flat.items() if k not in ("severity", "threshold")}
        return [
            Rule(**{**base, "name": f"{flat['name']}_{sev}", "severity": sev, "threshold": t})
            for sev, t in severities.items()
        ]
    return [Rule(**flat)]


DEFAULT_TRAILING = "trailing:5"
"""Baseline of the default trend rules, and of the model rules when the profile has no reference quality."""
_BASELINE_NOTE = {"baseline": "{baseline_source} baseline {baseline:.4g}"}


def default_rules() -> list[Rule]:
    """The article's default table (sections 1.1-1.4 and 2.2.5) as rules; see the README.

    Drift is PSI > 0.2 *and* a significant chi-square test of the bin counts, Benjamini-Hochberg
    at q = 0.05 across the features x segments of a model version in a window, 100 samples at
    least. Model rules compare with the profile's reference quality (``mlvigil profile
    --label-column``), else with the trailing mean of the last 5 evaluated windows; the
    annotation ``baseline`` says which."""
    # A drop must also be significant (binomial, 1 %): recall over 130 positives moves by 18 %
    # from one window to the next with nothing wrong.
    ref = {"baseline": "reference", "change": "drop", "fallback": DEFAULT_TRAILING, "min_samples": 200,
           "test": "binomial", "alpha": 0.01}  # fmt: skip
    recall = {**ref, "min_samples": 100}  # positives
    trend = {"baseline": DEFAULT_TRAILING}
    return [
        # data
        Rule("psi_drift", "data", "psi", "warning", op=">", threshold=0.2, min_samples=100,
             test="chi2", alpha=0.05, fdr=True,
             annotations={"summary": "{feature} PSI {value:.3f} > {threshold:.3g} (chi-square p {p_value:.2g}, "
                                     "n {samples}, BH q 0.05)"}),
        Rule("missing_rate_high", "data", "missing_rate", "info", op=">", threshold=0.05),
        # model
        Rule("accuracy_drop_warning", "model", "accuracy", "warning", threshold=0.10, **ref, annotations=_BASELINE_NOTE),
        Rule("accuracy_drop_critical", "model", "accuracy", "critical", threshold=0.20, **ref,
             annotations=_BASELINE_NOTE),
        Rule("recall_drop_warning", "model", "recall", "warning", threshold=0.15, **recall, annotations=_BASELINE_NOTE),
        Rule("recall_drop_critical", "model", "recall", "critical", threshold=0.20, **recall,
             annotations=_BASELINE_NOTE),
        # The article's "prediction std > 0.1: check" is the spread of repeated predictions of one
        # input; a stream predicts each request once, so the check here is how far the window's
        # score spread moved from the reference's (|std - std_reference| > 0.1), as info.
        Rule("prediction_std_check", "data", "std", "info", feature="prediction:score", threshold=0.1,
             baseline="reference", change="shift", min_samples=100,
             annotations={"summary": "score std {value:.3f} vs reference {baseline:.3f}: check prediction stability"}),
        Rule("calibration_error_high", "model", "ece", "warning", op=">", threshold=0.1, min_samples=500),
        # service
        Rule("latency_p95_high", "service", "latency_p95", "warning", op=">", threshold=2000.0),
        Rule("latency_rise", "service", "latency_p95", "warning", threshold=0.5, change="rise", min_samples=100,
             **trend, annotations=_BASELINE_NOTE),
        Rule("error_rate_high", "service", "error_rate", "warning", op=">", threshold=0.01, min_samples=200,
             test="binomial", alpha=0.01),
        Rule("throughput_low", "service", "throughput_rps", "warning", threshold=0.5, change="drop", **trend,
             annotations=_BASELINE_NOTE),
        # business
        Rule("conversion_drop", "business", "conversion_rate", "warning", threshold=0.05, change="drop",
             min_samples=200, test="binomial", alpha=0.01, **trend,
             annotations={**_BASELINE_NOTE, "rollback": "conversion of {model_id} {model_version} fell "
                          "{change_pct:.0f} %: consider rolling back to the previous version"}),
        *monitor_rules(),
    ]  # fmt: skip


# -- health of the monitor (mlvigil/health.py makes the "monitor" rows) ---------------------------
# Per window: a row per configured model (events: its valid events, 0 included) and an
# all-models row, model_id "*" (input_events = valid + late + invalid of features/predictions,
# late_ratio, invalid_ratio, dead_letter_ratio). The ratios count their samples in input_events.
NO_DATA_WINDOWS = 3
SAMPLE_FIELDS_BY_METRIC.update({m: ("input_events",) for m in ("late_ratio", "invalid_ratio", "dead_letter_ratio")})


def monitor_rules() -> list[Rule]:
    """On by default: a configured model that sends no valid event for NO_DATA_WINDOWS windows
    while event time moves on (other models' traffic moves it), and a monitor degraded by bad
    input: more than 5 % late or 1 % invalid events in a window of at least 100 events."""
    return [
        Rule("no_data", "monitor", "events", "warning", op="<=", threshold=0, for_windows=NO_DATA_WINDOWS,
             annotations={"summary": f"no valid events from {{model_id}} for {NO_DATA_WINDOWS} windows"}),
        Rule("monitor_degraded_late", "monitor", "late_ratio", "warning", op=">", threshold=0.05, min_samples=100,
             annotations={"summary": "late events: {value:.1%} of the input (threshold {threshold:.0%})"}),
        Rule("monitor_degraded_invalid", "monitor", "invalid_ratio", "warning", op=">", threshold=0.01,
             min_samples=100,
             annotations={"summary": "invalid events: {value:.1%} of the input (threshold {threshold:.0%})"}),
    ]  # fmt: skip


# -- routing -------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """Where notifications go. url and secret are credentials: never printed (repr=False)."""

    name: str
    type: str
    url: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    template: str | None = None
    title_template: str | None = None
    generator_url: str = ""  # Alertmanager generatorURL (a link back to a dashboard)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.type not in RECEIVER_TYPES:
            raise ValueError(f"receiver {self.name!r}: type must be one of {RECEIVER_TYPES}")
        if self.type != "log" and not self.url:
            raise ValueError(f"receiver {self.name!r}: a {self.type} receiver needs a url")


@dataclass
class Matcher:
    """An Alertmanager label matcher: name = != =~ !~ value (regexes are fully anchored)."""

    name: str
    op: str
    value: str

    def matches(self, labels: dict) -> bool:
        v = str(labels.get(self.name, ""))
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = re.fullmatch(self.value, v) is not None
        return hit if self.op == "=~" else not hit


_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def parse_matchers(spec: Any) -> list[Matcher]:
    """['severity="critical"', 'layer=~"data|model"'] or {severity: critical} -> matchers."""
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [Matcher(str(k), "=", str(v)) for k, v in spec.items()]
    out = []
    for s in spec:
        m = _MATCHER.match(str(s))
        if not m:
            raise ValueError(f'not a label matcher: {s!r} (use name="value", !=, =~ or !~)')
        out.append(Matcher(m.group(1), m.group(2), m.group(3)))
    return out


@dataclass
class InhibitRule:
    """Alertmanager's inhibit rule: a firing source alert mutes matching target alerts when the
    `equal` labels have the same values on both (an alert never inhibits itself)."""

    source_matchers: list[Matcher]
    target_matchers: list[Matcher]
    equal: list[str]


DEFAULT_INHIBIT_EQUAL = ["model_id", "model_version", "segment", "feature", "metric"]


def default_inhibit_rules() -> list[InhibitRule]:
    """critical inhibits warning on the same model, version and target (segment, feature, metric)."""
    return [
        InhibitRule(
            parse_matchers(['severity="critical"']), parse_matchers(['severity="warning"']), list(DEFAULT_INHIBIT_EQUAL)
        )
    ]


@dataclass
class Routing:
    receivers: dict[str, Receiver] = field(default_factory=dict)
    by_severity: dict[str, list[str]] = field(default_factory=dict)
    """severity -> receiver names; a notification goes to the receivers of its highest severity."""
    group_by: list[str] = field(default_factory=lambda: ["model_id", "model_version", "segment"])
    group_wait_ms: int = 30_000
    group_interval_ms: int = 300_000
    repeat_interval_ms: int = 4 * 3_600_000
    send_resolved: bool = True
    inhibit_rules: list[InhibitRule] = field(default_factory=default_inhibit_rules)

    def __post_init__(self) -> None:
        self.receivers.setdefault("log", Receiver("log", "log"))  # the "stored only" receiver
        for sev, names in self.by_severity.items():
            if sev not in SEVERITIES:
                raise ValueError(f"route: unknown severity {sev!r}")
            for n in names:
                if n not in self.receivers:
                    raise ValueError(f"route: severity {sev} goes to unknown receiver {n!r}")
        if self.group_interval_ms <= 0 or self.repeat_interval_ms <= 0 or self.group_wait_ms < 0:
            raise ValueError("route: group_interval and repeat_interval must be > 0, group_wait >= 0")

    def receivers_for(self, severity: str) -> list[str]:
        return list(self.by_severity.get(severity) or ["log"])


def default_routing() -> Routing:
    """critical -> "pager", warning -> "chat", info -> "log": pager and chat log until configured."""
    receivers = {n: Receiver(n, "log") for n in ("pager", "chat", "log")}
    return Routing(receivers, {"critical": ["pager"], "warning": ["chat"], "info": ["log"]})


def _read(src: Any) -> Any:
    if isinstance(src, (dict, list)):
        return src
    if isinstance(src, str) and "\n" in src:
        return yaml.safe_load(src)
    return yaml.safe_load(Path(src).read_text()) or {}


def load_rules(src: Any) -> list[Rule]:
    """Rules from a YAML file path, YAML text, a mapping with a "rules" list, or a list.

    With ``use_default_rules: true`` the file's rules are added to default_rules(), replacing a
    default of the same name. A mapping without a "rules" key gets the defaults unless
    ``use_default_rules: false``.
    """
    raw = _read(src)
    items = raw if isinstance(raw, list) else (raw.get("rules") or [])
    rules: list[Rule] = []
    for d in items:
        rules.extend(rule_from_dict(d))
    # No "rules" at all (an alerting section with only receivers and routing) means the defaults.
    use_defaults = raw.get("use_default_rules", "rules" not in raw) if isinstance(raw, dict) else False
    if use_defaults:
        mine = {r.name for r in rules}
        rules = [r for r in default_rules() if r.name not in mine] + rules
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate rule names: {dupes}")
    return rules


def load_routing(src: Any) -> Routing:
    """receivers / route / inhibit_rules from YAML (see configs/alerts.example.yaml)."""
    raw = _read(src)
    if not raw.get("receivers") and not raw.get("route"):
        return default_routing()
    receivers = {}
    for r in expand_env(raw.get("receivers") or [], "alerting config"):
        rec = Receiver(**{k: v for k, v in r.items() if k in Receiver.__dataclass_fields__})
        unknown = set(r) - set(Receiver.__dataclass_fields__)
        if unknown:
            raise ValueError(f"receiver {rec.name!r}: unknown keys {sorted(unknown)}")
        receivers[rec.name] = rec
    receivers.setdefault("log", Receiver("log", "log"))
    route = raw.get("route") or {}
    by_sev = route.get("by_severity") or {"critical": "pager", "warning": "chat", "info": "log"}
    by_severity = {str(k): [v] if isinstance(v, str) else [str(x) for x in v] for k, v in by_sev.items()}
    kwargs: dict[str, Any] = {}
    if "group_by" in route:
        kwargs["group_by"] = [str(x) for x in route["group_by"]]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in route:
            kwargs[f"{key}_ms"] = duration_ms(route[key])
    if "send_resolved" in route:
        kwargs["send_resolved"] = bool(route["send_resolved"])
    if "inhibit_rules" in raw:
        kwargs["inhibit_rules"] = [
            InhibitRule(parse_matchers(i.get("source_matchers")), parse_matchers(i.get("target_matchers")),
                        [str(x) for x in i.get("equal") or []])
            for i in raw["inhibit_rules"] or []
        ]  # fmt: skip
    return Routing(receivers, by_severity, **kwargs)


@dataclass
class AlertingConfig:
    rules: list[Rule]
    routing: Routing
    correlation_window_ms: int = 300_000
    resolve_stale_ms: int | None = 3_600_000
    actions: dict = field(default_factory=dict)


def load_config(src: Any) -> AlertingConfig:
    """The whole alerting file: rules, receivers, route, inhibit_rules, correlation, actions."""
    raw = _read(src)
    corr = raw.get("correlation_window", "5m")
    stale = raw.get("resolve_stale_after", "1h")
    return AlertingConfig(
        load_rules(raw),
        load_routing(raw),
        duration_ms(corr),
        None if stale in (None, "never") else duration_ms(stale),
        expand_env(raw.get("actions") or {}, "alerting config"),
    )
