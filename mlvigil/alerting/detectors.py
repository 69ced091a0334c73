"""Change detectors for slow decay: EWMA chart, CUSUM, CUSUM on a seasonal baseline, and
Page-Hinkley.

A fixed threshold misses a slow decline (accuracy falling 1 % a day stays under "drop > 10 %"
for ten days); these detectors accumulate evidence over windows instead. They follow River's
detectors: a small object, ``update(x)``, a verdict ``drift_detected``. Unlike River, EWMA, CUSUM
and Seasonal do not reset themselves after a detection: ``drift_detected`` stays true while the
statistic is beyond its limit, which is the alert engine's "firing" (it resolves at the first
window back inside). PageHinkley keeps River's semantics (it starts over after a detection).

EWMA, CUSUM and Seasonal learn their baseline (in-control mean and standard deviation) from
their first values (``warmup``), unless ``mean`` and ``std`` are given, and then freeze it: a
baseline that kept adapting would follow a slow decay and never see it. A new model version is a
new target of the alert engine, so it learns its own baseline.

State is a plain JSON-able dict (no NaN, no infinities): the alert engine keeps it per rule and
target in its own state, which the job keeps in Flink keyed state. ``to_dict``/``from_dict``
round-trip a detector; the registry (``get_detector``) maps a rule's ``detector: name`` to the
class and its documented defaults (``DETECTORS``), like mlvigil/stattests/registry.py.

False alarms: for independent normal values and a known baseline, ``average_run_length``
computes a detector's mean number of windows to its first signal (Brook & Evans' Markov chain)
for a given shift; with the defaults, EWMA (alpha 0.1, k 2.814, two-sided) and CUSUM (k 0.5,
h 5, two-sided) give about 500 and 465 windows between false alarms, and detect a one-sigma
shift in about 10 windows. A baseline estimated from ``warmup`` values makes false alarms
somewhat more frequent (the tests measure it).
"""

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

DIRECTIONS = ("both", "down", "up")
MINUTE_MS = 60_000
PERIOD_MINUTES = {"day": 24 * 60, "week": 7 * 24 * 60}
MIN_RESIDUAL_DOF = 10  # the seasonal warm-up goes on until the residual std has this many


def _finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class _Welford:
    """Running count, mean and sum of squared deviations, as a JSON list [n, mean, m2]."""

    @staticmethod
    def add(acc: list[float], x: float) -> None:
        acc[0] += 1
        d = x - acc[1]
        acc[1] += d / acc[0]
        acc[2] += d * (x - acc[1])


class Detector:
    """Base: parameters (validated against the registry's defaults) and a JSON-able state.

    After ``update``: ``consumed`` (False when the value could not be used at all: the state
    did not change), ``drift_detected`` (the verdict), ``ready`` (False while learning the
    baseline), ``statistic`` and ``limit`` (the number compared and the bound it is compared
    with, for alert texts) and ``baseline`` (the expected value of x, in its units)."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"detector {self.name}: unknown parameters {sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        self.params = {**self.defaults, **params}
        self._validate()
        self.drift_detected = False
        self.consumed = False
        self.ready = False
        self.statistic: float | None = None
        self.limit: float | None = None
        self.baseline: float | None = None
        self._state = self._initial_state()

    # -- to be provided by each detector --------------------------------------------------------

    def _validate(self) -> None:
        p = self.params
        if p.get("direction", "both") not in DIRECTIONS:
            raise ValueError(f"detector {self.name}: direction must be one of {DIRECTIONS}")

    def _initial_state(self) -> dict:
        raise NotImplementedError

    def update(self, x: float, t_ms: int | None = None) -> "Detector":
        raise NotImplementedError

    # -- serialisation ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {**self._state, "verdict": [self.drift_detected, self.ready, self.statistic, self.limit, self.baseline]}

    def load_state(self, state: dict) -> None:
        s = dict(state)
        self.drift_detected, self.ready, self.statistic, self.limit, self.baseline = s.pop("verdict")
        if set(s) != set(self._initial_state()):
            raise ValueError(f"detector {self.name}: the state has keys {sorted(s)}, not this version's")
        self._state = s

    def to_dict(self) -> dict:
        return {"detector": self.name, "params": dict(self.params), "state": self.state_dict()}

    @staticmethod
    def from_dict(d: dict) -> "Detector":
        det = make_detector(d["detector"], d["params"])
        det.load_state(d["state"])
        return det

    # -- shared pieces ------------------------------------------------------------------------------

    def _baseline(self, x: float) -> tuple[float, float] | None:
        """(mean, std) of the in-control values: given, or learned from the first ``warmup``
        values (then frozen). None while still learning (x was used to learn)."""
        p, s = self.params, self._state
        if p["mean"] is not None and p["std"] is not None:
            return float(p["mean"]), max(float(p["std"]), p["min_std"])
        acc = s["warm"]
        if acc[0] < p["warmup"]:
            _Welford.add(acc, x)
            return None
        mean = float(p["mean"]) if p["mean"] is not None else acc[1]
        std = float(p["std"]) if p["std"] is not None else math.sqrt(acc[2] / (acc[0] - 1))
        return mean, max(std, p["min_std"])

    def _consume(self, x: float) -> tuple[float, float] | None:
        """Takes x in: the baseline to judge it against, or None (not ready) while learning."""
        self.consumed = True
        base = self._baseline(x)
        if base is None:
            self.ready = False
        return base


def _check_baseline_params(det: Detector) -> None:
    """warmup, and a given mean / std (checked here so that a bad rule fails when it is loaded,
    never in the job's update)."""
    p = det.params
    if isinstance(p["warmup"], bool) or not isinstance(p["warmup"], int) or p["warmup"] < 2:
        raise ValueError(f"detector {det.name}: warmup must be an integer >= 2")
    if p["mean"] is not None and _finite(p["mean"]) is None:
        raise ValueError(f"detector {det.name}: mean must be a number")
    if p["std"] is not None and (_finite(p["std"]) is None or p["std"] <= 0):
        raise ValueError(f"detector {det.name}: std must be a positive number")


def _check_positive(det: Detector, *names: str) -> None:
    for n in names:
        v = _finite(det.params[n])
        if v is None or v <= 0:
            raise ValueError(f"detector {det.name}: {n} must be a positive number, not {det.params[n]!r}")


class EWMA(Detector):
    """EWMA control chart with k-sigma limits (Roberts 1959; Lucas & Saccucci 1990).

    z_t = alpha x_t + (1 - alpha) z_{t-1}, z_0 = mean; drift while z_t is beyond
    mean -/+ k sigma sqrt(alpha / (2 - alpha)) (the asymptotic limits; ``direction`` "down"
    watches only the lower one, "up" only the upper one).

    Parameters (defaults): ``alpha`` 0.1 (weight of the newest window), ``k`` 2.814 (band width in
    standard deviations of z: two-sided ARL0 about 500 windows), ``direction`` "both", ``warmup``
    30 (values that set the baseline), ``mean`` / ``std`` (a known baseline instead; either one
    overrides the learned one), ``min_std`` 1e-9 (floor, for a constant warm-up).

    >>> det = EWMA(alpha=0.2, k=3.0, mean=0.9, std=0.01, direction="down")
    >>> [det.update(x).drift_detected for x in (0.9, 0.89, 0.88, 0.87, 0.86)]
    [False, False, False, True, True]
    >>> round(det.limit, 4), round(det.statistic, 4)
    (0.89, 0.8836)
    >>> EWMA.from_dict(det.to_dict()).update(0.86).drift_detected
    True
    """

    name = "ewma"
    defaults = {"alpha": 0.1, "k": 2.814, "direction": "both", "warmup": 30, "mean": None, "std": None,
                "min_std": 1e-9}  # fmt: skip

    def _validate(self) -> None:
        super()._validate()
        _check_positive(self, "k", "min_std")
        alpha = _finite(self.params["alpha"])
        if alpha is None or not 0 < alpha <= 1:
            raise ValueError("detector ewma: alpha must be in (0, 1]")
        _check_baseline_params(self)

    def _initial_state(self) -> dict:
        return {"warm": [0, 0.0, 0.0], "z": None}

    def update(self, x: float, t_ms: int | None = None) -> "EWMA":
        p, s = self.params, self._state
        base = self._consume(float(x))
        if base is None:
            return self
        mean, std = base
        a = float(p["alpha"])
        z = mean if s["z"] is None else s["z"]
        z = a * float(x) + (1 - a) * z
        s["z"] = z
        half = float(p["k"]) * std * math.sqrt(a / (2 - a))
        low, high = mean - half, mean + half
        d = p["direction"]
        below, above = d != "up" and z < low, d != "down" and z > high
        self.drift_detected, self.ready = below or above, True
        self.statistic, self.baseline = z, mean
        self.limit = low if (d == "down" or (d == "both" and z <= mean)) else high
        return self


class CUSUM(Detector):
    """Tabular CUSUM on standardised values (Page 1954; Montgomery, Statistical Quality Control 9.1).

    u = (x - mean) / std; S+ = max(0, S+ + u - k), S- = max(0, S- - u - k); drift while S+ > h
    (with ``direction`` "up" or "both") or S- > h ("down" or "both"). S is capped at ``cap`` x h
    so that after a long episode it resolves within about (cap - 1) h / k windows of recovery
    (the cap does not change when the first signal comes).

    Parameters (defaults): ``k`` 0.5 (allowance, in standard deviations: half the shift to
    detect fastest), ``h`` 5.0 (decision interval: two-sided ARL0 about 465 windows, a one-sigma
    shift found in about 10), ``direction`` "both", ``warmup`` 30, ``mean`` / ``std``, ``cap`` 2.0,
    ``min_std`` 1e-9.

    >>> det = CUSUM(k=0.5, h=2.0, mean=0.9, std=0.01, direction="down")
    >>> [det.update(x).drift_detected for x in (0.9, 0.89, 0.89, 0.89, 0.89)]
    [False, False, False, False, True]
    >>> round(det.statistic, 3), det.limit
    (2.0, 2.0)
    >>> round(CUSUM.from_dict(det.to_dict()).update(0.89).statistic, 3)
    2.5
    """

    name = "cusum"
    defaults = {"k": 0.5, "h": 5.0, "direction": "both", "warmup": 30, "mean": None, "std": None, "cap": 2.0,
                "min_std": 1e-9}  # fmt: skip

    def _validate(self) -> None:
        super()._validate()
        _check_positive(self, "h", "min_std")
        if _finite(self.params["k"]) is None or self.params["k"] < 0:
            raise ValueError("detector cusum: k must be >= 0")
        if _finite(self.params["cap"]) is None or self.params["cap"] < 1:
            raise ValueError("detector cusum: cap must be >= 1")
        _check_baseline_params(self)

    def _initial_state(self) -> dict:
        return {"warm": [0, 0.0, 0.0], "hi": 0.0, "lo": 0.0}

    def update(self, x: float, t_ms: int | None = None) -> "CUSUM":
        base = self._consume(float(x))
        if base is None:
            return self
        mean, std = base
        _cusum_step(self, (float(x) - mean) / std)
        self.baseline = mean
        return self


def _cusum_step(det: Detector, u: float) -> None:
    """One CUSUM step on a standardised value u (shared by CUSUM and Seasonal)."""
    p, s = det.params, det._state
    k, h = float(p["k"]), float(p["h"])
    top = float(p["cap"]) * h
    s["hi"] = min(max(0.0, s["hi"] + u - k), top)
    s["lo"] = min(max(0.0, s["lo"] - u - k), top)
    d = p["direction"]
    hi = s["hi"] if d != "down" else 0.0
    lo = s["lo"] if d != "up" else 0.0
    det.statistic = max(hi, lo)
    det.limit = h
    det.drift_detected = det.statistic > h
    det.ready = True


class Seasonal(Detector):
    """CUSUM on the residuals from a seasonal baseline (hour of day, or hour of week), for
    business metrics such as CTR or conversion rate that follow the clock.

    The first ``warmup_periods`` periods (counted from the first value's time; longer if needed
    until the residual std rests on 10 values beyond one per slot) learn a mean per
    slot (``slot_minutes`` of the ``period``, in UTC: 24 hourly slots a day, 168 a week) and one
    pooled residual standard deviation; then the baseline is frozen and a CUSUM (``k``, ``h``,
    ``cap``, ``direction`` as in CUSUM) runs on (x - slot mean) / (pooled std sqrt(1 + 1/n)), n
    the slot's warm-up values (the deviation of a new value from a mean of n). A value in a slot
    that had no warm-up data cannot be judged (``ready`` False, state unchanged). ``update``
    needs the window's time: ``update(x, t_ms)`` (the engine passes the window start).

    Parameters (defaults): ``period`` "week" ("day" or "week"), ``slot_minutes`` 60,
    ``warmup_periods`` 2, ``k`` 0.5, ``h`` 5.0, ``cap`` 2.0, ``direction`` "both", ``min_std`` 1e-9.
    The state keeps three numbers per slot (168 slots for a week of hours).

    >>> hour = 3_600_000
    >>> det = Seasonal(period="day", slot_minutes=720, warmup_periods=2, h=2.0, direction="down")
    >>> for i in range(48):  # two days of hourly warm-up: mornings about 0.11, afternoons 0.19
    ...     _ = det.update((0.11 if i % 24 < 12 else 0.19) + 0.005 * (i % 3 - 1), i * hour)
    >>> [det.update(x, i * hour).drift_detected for i, x in [(48, 0.11), (60, 0.15), (61, 0.16), (72, 0.10)]]
    [False, True, True, True]
    >>> round(det.baseline, 2)
    0.11
    """

    name = "seasonal"
    defaults = {"period": "week", "slot_minutes": 60, "warmup_periods": 2, "k": 0.5, "h": 5.0, "cap": 2.0,
                "direction": "both", "min_std": 1e-9}  # fmt: skip

    def _validate(self) -> None:
        super()._validate()
        p = self.params
        if p["period"] not in PERIOD_MINUTES:
            raise ValueError(f"detector seasonal: period must be one of {sorted(PERIOD_MINUTES)}")
        slot, warm = p["slot_minutes"], p["warmup_periods"]
        if isinstance(slot, bool) or not isinstance(slot, int) or slot <= 0 or PERIOD_MINUTES[p["period"]] % slot:
            raise ValueError("detector seasonal: slot_minutes must be an integer that divides the period")
        if isinstance(warm, bool) or not isinstance(warm, int) or warm < 1:
            raise ValueError("detector seasonal: warmup_periods must be an integer >= 1")
        _check_positive(self, "h", "min_std")
        if _finite(p["k"]) is None or p["k"] < 0 or _finite(p["cap"]) is None or p["cap"] < 1:
            raise ValueError("detector seasonal: k must be >= 0 and cap >= 1")

    @property
    def slots(self) -> int:
        return PERIOD_MINUTES[self.params["period"]] // int(self.params["slot_minutes"])

    def slot_of(self, t_ms: int) -> int:
        return (int(t_ms) // (MINUTE_MS * int(self.params["slot_minutes"]))) % self.slots

    def _initial_state(self) -> dict:
        # per slot: [n, mean, m2] (Welford); "std" is set when the warm-up ends
        return {"start": None, "slot": [[0, 0.0, 0.0] for _ in range(self.slots)], "std": None, "hi": 0.0, "lo": 0.0}

    def update(self, x: float, t_ms: int | None = None) -> "Seasonal":
        if t_ms is None:
            raise ValueError("detector seasonal: update needs the window's time (t_ms)")
        p, s = self.params, self._state
        x, t = float(x), int(t_ms)
        self.consumed = True
        if s["start"] is None:
            s["start"] = t
        acc = s["slot"][self.slot_of(t)]
        if s["std"] is None:
            period_ms = PERIOD_MINUTES[p["period"]] * MINUTE_MS
            filled = [a for a in s["slot"] if a[0] > 0]
            dof = sum(a[0] for a in filled) - len(filled)  # values beyond the first of each slot
            if t < s["start"] + int(p["warmup_periods"]) * period_ms or dof < MIN_RESIDUAL_DOF:
                _Welford.add(acc, x)
                self.ready = False
                return self
            s["std"] = max(math.sqrt(sum(a[2] for a in filled) / dof), float(p["min_std"]))
        if acc[0] == 0:
            self.consumed = False  # no warm-up data for this slot: nothing to compare with
            return self
        # The slot mean is itself an estimate from n values: a new value's deviation from it has
        # variance std^2 (1 + 1/n), which matters with few warm-up values per slot (two weeks of
        # hourly windows give two).
        _cusum_step(self, (x - acc[1]) / (s["std"] * math.sqrt(1 + 1 / acc[0])))
        self.baseline = acc[1]
        return self


class PageHinkley(Detector):
    """Page-Hinkley test as in River (river.drift.PageHinkley), on the metric's own units.

    m = running mean of the values since the last detection; S+ = alpha S+ + (x - m) - delta,
    S- = alpha S- + (x - m) + delta; drift when S+ - min S+ > threshold (up) or max S- - S- >
    threshold (down), once ``min_instances`` values were seen. As in River, the detector starts
    over at the update after a detection (a new mean): ``drift_detected`` marks the window of a
    change, so an alert fires for that window and resolves at the next one. The mean adapts, so
    unlike the other detectors it compares recent values with the whole history since the last
    change; ``delta`` and ``threshold`` are in the metric's units (River's 0.005 and 50 suit
    counts, not rates: for an accuracy, threshold 0.05 to 0.2 is typical).

    Parameters (defaults): ``min_instances`` 30, ``delta`` 0.005, ``threshold`` 50.0, ``alpha``
    0.9999 (forgetting of the sums), ``direction`` "both".

    >>> det = PageHinkley(min_instances=3, delta=0.0, threshold=0.05, direction="down")
    >>> [det.update(x).drift_detected for x in (0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85)]
    [False, False, False, False, False, True, False]
    >>> det.ready  # it started over after the detection
    False
    """

    name = "page_hinkley"
    defaults = {"min_instances": 30, "delta": 0.005, "threshold": 50.0, "alpha": 0.9999, "direction": "both"}

    def _validate(self) -> None:
        super()._validate()
        p = self.params
        _check_positive(self, "threshold")
        n = p["min_instances"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError("detector page_hinkley: min_instances must be an integer >= 1")
        if _finite(p["delta"]) is None or p["delta"] < 0:
            raise ValueError("detector page_hinkley: delta must be >= 0")
        alpha = _finite(p["alpha"])
        if alpha is None or not 0 < alpha <= 1:
            raise ValueError("detector page_hinkley: alpha must be in (0, 1]")

    def _initial_state(self) -> dict:
        return {"n": 0, "mean": 0.0, "inc": 0.0, "min_inc": 0.0, "dec": 0.0, "max_dec": 0.0}

    def update(self, x: float, t_ms: int | None = None) -> "PageHinkley":
        p = self.params
        self.consumed = True
        if self.drift_detected:  # River: start over after a detection
            self._state = self._initial_state()
        s = self._state
        a, delta, x = float(p["alpha"]), float(p["delta"]), float(x)
        s["n"] += 1
        s["mean"] += (x - s["mean"]) / s["n"]
        dev = x - s["mean"]
        s["inc"] = a * s["inc"] + dev - delta
        s["dec"] = a * s["dec"] + dev + delta
        first = s["n"] == 1  # (River starts the extremes at +-inf; the first sums set them)
        s["min_inc"] = s["inc"] if first else min(s["min_inc"], s["inc"])
        s["max_dec"] = s["dec"] if first else max(s["max_dec"], s["dec"])
        up, down = s["inc"] - s["min_inc"], s["max_dec"] - s["dec"]
        d = p["direction"]
        self.statistic = max(up if d != "down" else 0.0, down if d != "up" else 0.0)
        self.limit, self.baseline = float(p["threshold"]), s["mean"]
        self.ready = s["n"] >= int(p["min_instances"])
        self.drift_detected = self.ready and self.statistic > self.limit
        return self


# -- registry ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    description: str
    cls: type[Detector]
    sweep: str
    """The parameter a backtest's sweep varies (the detector's sensitivity)."""
    defaults: dict[str, Any] = field(default_factory=dict)


DETECTORS: dict[str, DetectorSpec] = {}


def register(cls: type[Detector], description: str, sweep: str) -> DetectorSpec:
    if cls.name in DETECTORS:
        raise ValueError(f"detector {cls.name!r} is registered twice")
    spec = DetectorSpec(cls.name, description, cls, sweep, dict(cls.defaults))
    DETECTORS[cls.name] = spec
    return spec


register(EWMA, "EWMA control chart, k-sigma limits", sweep="k")
register(CUSUM, "tabular CUSUM on standardised values", sweep="h")
register(Seasonal, "CUSUM on residuals from an hour-of-day / hour-of-week baseline", sweep="h")
register(PageHinkley, "Page-Hinkley test against the running mean (River's semantics)", sweep="threshold")


def get_detector(name: str) -> DetectorSpec:
    try:
        return DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {registered()}") from None


def registered() -> list[str]:
    return sorted(DETECTORS)


def make_detector(name: str, params: dict | None = None) -> Detector:
    """A new detector by registry name; unknown or invalid parameters raise ValueError."""
    return get_detector(name).cls(**(params or {}))


# -- average run length (false-alarm rate and detection delay) ---------------------------------------


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _solve_arl(P: list[list[float]], start: int) -> float:
    """ARL = ((I - P)^-1 1)[start] for the transient states' transition matrix P."""
    import numpy as np

    m = len(P)
    arl = np.linalg.solve(np.eye(m) - np.asarray(P), np.ones(m))
    return float(arl[start])


def average_run_length(name: str, params: dict | None = None, shift: float = 0.0, states: int = 201) -> float:
    """Mean number of windows until the first signal, for independent normal values with a known
    baseline, when the mean has moved by ``shift`` standard deviations (0: the in-control ARL,
    i.e. windows between false alarms). Brook & Evans' Markov-chain approximation with
    ``states`` states; for "ewma" and "cusum" (Seasonal's chart is a CUSUM).

    >>> round(average_run_length("cusum", {"k": 0.5, "h": 5.0, "direction": "up"}))
    931
    """
    det = make_detector(name, params)
    p = det.params
    d = p["direction"]
    if name in ("cusum", "seasonal"):
        k, h = float(p["k"]), float(p["h"])
        # one side: states 0 (S = 0) .. m-1, width w, state i around i * w, absorbing beyond h
        m = states
        w = 2 * h / (2 * m - 1)

        def one_side(mu: float) -> float:
            P = [
                [_phi(0.5 * w - i * w + k - mu)]
                + [_phi((j + 0.5) * w - i * w + k - mu) - _phi((j - 0.5) * w - i * w + k - mu) for j in range(1, m)]
                for i in range(m)
            ]
            return _solve_arl(P, 0)

        up, down = one_side(shift), one_side(-shift)
        if d == "up":
            return up
        if d == "down":
            return down
        return 1.0 / (1.0 / up + 1.0 / down)  # Van Dobben de Bruyn's approximation for two sides
    if name == "ewma":
        a, k = float(p["alpha"]), float(p["k"])
        sz = math.sqrt(a / (2 - a))
        far = 8.0 * sz  # a side that is not watched: z never gets there in practice
        lo = -k * sz if d != "up" else -far
        hi = k * sz if d != "down" else far
        m = states
        w = (hi - lo) / m
        centers = [lo + (i + 0.5) * w for i in range(m)]
        P = [
            [
                _phi((c + w / 2 - (1 - a) * ci) / a - shift) - _phi((c - w / 2 - (1 - a) * ci) / a - shift)
                for c in centers
            ]
            for ci in centers
        ]
        start = min(range(m), key=lambda i: abs(centers[i]))
        return _solve_arl(P, start)
    raise ValueError(f"no run-length computation for detector {name!r}")
