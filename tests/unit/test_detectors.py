"""Change detectors (mlvigil/alerting/detectors.py) against independent references: run lengths
from the literature, Siegmund's approximation, numpy re-implementations that run all simulated
series at once, and synthetic histories with a known truth (step, 1 %-a-day ramp, noise only,
weekly seasonality)."""

import doctest
import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from mlvigil.alerting import detectors
from mlvigil.alerting.detectors import CUSUM, EWMA, PageHinkley, Seasonal, average_run_length, make_detector
from mlvigil.alerting.rules import Rule

HOUR = 3_600_000
DAY = 24 * HOUR


def test_doctests():
    result = doctest.testmod(detectors)
    assert result.attempted >= 10 and result.failed == 0


# -- average run lengths: Markov chain vs published values and Siegmund -----------------------------


@pytest.mark.parametrize(
    "name, params, shift, published",
    [
        # Lucas & Saccucci (1990), Table 3 / Montgomery Table 9.11: ARL0 = 500, 1-sigma shift 10.3
        ("ewma", {"alpha": 0.1, "k": 2.814}, 0.0, 500.0),
        ("ewma", {"alpha": 0.1, "k": 2.814}, 1.0, 10.3),
        ("ewma", {"alpha": 0.05, "k": 2.615}, 0.0, 500.0),
        ("ewma", {"alpha": 0.2, "k": 2.962}, 0.0, 500.0),
        # Montgomery Table 9.3 (two-sided tabular CUSUM, k = 1/2): h = 4 -> 168, h = 5 -> 465; 1 sigma -> 10.4
        ("cusum", {"k": 0.5, "h": 4.0}, 0.0, 168.0),
        ("cusum", {"k": 0.5, "h": 5.0}, 0.0, 465.0),
        ("cusum", {"k": 0.5, "h": 5.0}, 1.0, 10.4),
    ],
)
def test_run_length_matches_the_literature(name, params, shift, published):
    assert average_run_length(name, params, shift) == pytest.approx(published, rel=0.02)


@pytest.mark.parametrize("k, h", [(0.5, 3.0), (0.5, 5.0), (0.25, 8.0)])
def test_cusum_run_length_matches_siegmund(k, h):
    # Siegmund (1985): ARL = (exp(-2 D b) + 2 D b - 1) / (2 D^2), D = mu - k, b = h + 1.166 (one side)
    b, d = h + 1.166, -k
    siegmund = (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)
    assert average_run_length("cusum", {"k": k, "h": h, "direction": "up"}) == pytest.approx(siegmund, rel=0.02)


# -- the detectors against numpy re-implementations on simulated noise -------------------------------


def _first_signal(det_factory, series: np.ndarray) -> int:
    """1-based index of the first window the detector flags (len + 1 if none)."""
    det = det_factory()
    for i, x in enumerate(series, 1):
        if det.update(float(x)).drift_detected:
            return i
    return len(series) + 1


def _numpy_cusum(z: np.ndarray, k: float, h: float) -> np.ndarray:
    """Two-sided CUSUM over many runs at once (rows), first signal per row."""
    hi = np.zeros(z.shape[0])
    lo = np.zeros(z.shape[0])
    first = np.full(z.shape[0], z.shape[1] + 1)
    for t in range(z.shape[1]):
        hi = np.maximum(0, hi + z[:, t] - k)
        lo = np.maximum(0, lo - z[:, t] - k)
        new = ((hi > h) | (lo > h)) & (first > z.shape[1])
        first[new] = t + 1
    return first


def _numpy_ewma(x: np.ndarray, alpha: float, k: float) -> np.ndarray:
    """EWMA chart over many runs at once via the closed form z_t = sum alpha (1-alpha)^(t-i) x_i."""
    n = x.shape[1]
    i = np.arange(n)
    weights = np.tril(alpha * (1 - alpha) ** (i[:, None] - i[None, :]))  # weights[t, i]
    z = x @ weights.T  # starts from z_0 = 0 = the known mean
    band = k * math.sqrt(alpha / (2 - alpha))
    out = np.abs(z) > band
    return np.where(out.any(axis=1), out.argmax(axis=1) + 1, n + 1)


def test_cusum_false_alarms_on_noise_match_the_run_length():
    rng = np.random.default_rng(7)
    k, h, runs, length = 0.5, 3.0, 400, 1500
    arl = average_run_length("cusum", {"k": k, "h": h})
    z = rng.standard_normal((runs, length))
    mine = np.array([_first_signal(lambda: CUSUM(k=k, h=h, mean=0.0, std=1.0), row) for row in z])
    np.testing.assert_array_equal(mine, _numpy_cusum(z, k, h))
    assert (mine <= length).all()  # every run signalled, so the mean is the run length
    assert mine.mean() == pytest.approx(arl, rel=0.15)  # 400 runs: standard error about 5 %


def test_ewma_false_alarms_on_noise_match_the_run_length():
    rng = np.random.default_rng(8)
    alpha, k, runs, length = 0.2, 2.5, 400, 800
    arl = average_run_length("ewma", {"alpha": alpha, "k": k})
    x = rng.standard_normal((runs, length))
    mine = np.array([_first_signal(lambda: EWMA(alpha=alpha, k=k, mean=0.0, std=1.0), row) for row in x])
    np.testing.assert_array_equal(mine, _numpy_ewma(x, alpha, k))
    assert (mine <= length).all()
    assert mine.mean() == pytest.approx(arl, rel=0.15)


def _numpy_page_hinkley(x: np.ndarray, min_n: int, delta: float, threshold: float, alpha: float) -> np.ndarray:
    """Two-sided Page-Hinkley over many runs at once, restarting a run after each detection;
    the mean from a running sum (the detector updates it incrementally). Flags per window."""
    runs, n_steps = x.shape
    n, total, inc, dec = (np.zeros(runs) for _ in range(4))
    lo, hi = np.full(runs, np.inf), np.full(runs, -np.inf)
    flags = np.zeros_like(x, dtype=bool)
    for t in range(n_steps):
        if t:
            restart = flags[:, t - 1]
            for arr, v in ((n, 0), (total, 0), (inc, 0), (dec, 0), (lo, np.inf), (hi, -np.inf)):
                arr[restart] = v
        n += 1
        total += x[:, t]
        dev = x[:, t] - total / n
        inc = alpha * inc + dev - delta
        dec = alpha * dec + dev + delta
        lo, hi = np.minimum(lo, inc), np.maximum(hi, dec)
        flags[:, t] = (n >= min_n) & ((inc - lo > threshold) | (hi - dec > threshold))
    return flags


def test_page_hinkley_equals_a_numpy_version_and_restarts_after_each_detection():
    rng = np.random.default_rng(12)
    params = {"min_instances": 10, "delta": 0.1, "threshold": 4.0, "alpha": 0.999}
    x = rng.standard_normal((200, 300))
    x[:, 150:] += 1.5  # a step half-way
    mine = []
    for row in x:
        det = PageHinkley(**params)
        mine.append([det.update(float(v)).drift_detected for v in row])
    mine = np.array(mine)
    reference = _numpy_page_hinkley(x, 10, 0.1, 4.0, 0.999)
    np.testing.assert_array_equal(mine, reference)
    assert not (mine[:, :-1] & mine[:, 1:]).any()  # a detection lasts one window, then it starts over
    first_after_step = np.array([np.argmax(r[150:]) if r[150:].any() else 999 for r in mine])
    assert (first_after_step < 30).mean() > 0.9  # the step is found
    assert mine[:, :150].mean() < mine[:, 150:180].mean()


def test_learned_baseline_uses_the_warmup_mean_and_sample_std():
    rng = np.random.default_rng(3)
    warm = rng.normal(0.9, 0.02, 30)
    det = CUSUM(warmup=30, direction="down")
    for x in warm:
        assert not det.update(float(x)).ready
    det.update(0.85)
    assert det.ready and det.baseline == pytest.approx(warm.mean(), abs=1e-12)
    u = (0.85 - warm.mean()) / warm.std(ddof=1)
    assert det.statistic == pytest.approx(max(0.0, -u - 0.5), abs=1e-9)


# -- synthetic histories with a known truth ----------------------------------------------------------


def test_step_is_found_quickly_and_noise_before_it_is_not_flagged():
    rng = np.random.default_rng(11)
    series = np.r_[rng.normal(0.90, 0.01, 130), rng.normal(0.88, 0.01, 40)]  # 2-sigma drop at window 130
    for det in (CUSUM(direction="down"), EWMA(direction="down")):
        flags = [det.update(float(x)).drift_detected for x in series]
        assert not any(flags[:130]), det.name
        first = flags.index(True)
        # published ARL at a 2-sigma shift: CUSUM (k 0.5, h 5) 4.0, EWMA (0.1, 2.814) 4.4
        assert 130 <= first <= 130 + 12, (det.name, first)
        assert all(flags[first + 5 :]), det.name  # stays firing while the drop lasts


def test_ramp_of_one_percent_a_day_is_caught_long_before_a_fixed_ten_percent_threshold():
    rng = np.random.default_rng(5)
    days_warm, days_ramp = 30, 20
    ref = 0.90
    ramp = ref * (1 - 0.01 * np.arange(1, days_ramp + 1))  # 1 % of the reference lost each day
    series = np.r_[rng.normal(ref, 0.005, days_warm), ramp + rng.normal(0, 0.005, days_ramp)]
    fixed = Rule("accuracy_drop", "model", "accuracy", threshold=0.10, baseline="reference", change="drop")
    fixed_day = next(
        d for d, x in enumerate(series[days_warm:], 1)
        if fixed.observe({"accuracy": float(x), "accuracy_reference": ref}).hit
    )  # fmt: skip
    assert fixed_day >= 10  # the article's point: the fixed rule sees it after ten days
    # Page-Hinkley in accuracy units: delta half a noise sd, threshold six
    ph = PageHinkley(delta=0.0025, threshold=0.03, direction="down")
    for det in (CUSUM(direction="down"), EWMA(direction="down"), ph):
        flags = [det.update(float(x)).drift_detected for x in series]
        assert not any(flags[:days_warm])
        day = flags.index(True) - days_warm + 1
        assert day <= 5, (det.name, day)


def _weekly(rng, hours: int, t0_hour: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hourly CTR with a daily cycle and weekends 20 % higher, plus noise."""
    h = np.arange(t0_hour, t0_hour + hours)
    hod, dow = h % 24, (h // 24) % 7
    base = 0.05 * (1 + 0.3 * np.sin(2 * np.pi * (hod - 6) / 24)) * np.where(dow >= 5, 1.2, 1.0)
    return h * HOUR, base + rng.normal(0, 0.001, hours)


def test_seasonal_baseline_ignores_weekly_seasonality_and_finds_a_drop():
    rng = np.random.default_rng(21)
    weeks_warm, weeks = 2, 6
    t, ctr = _weekly(rng, 24 * 7 * (weeks_warm + weeks))
    start = 24 * 7 * weeks_warm
    drop_at = start + 24 * 7 * 4 + 5  # a Friday-ish hour in week 4 of monitoring
    drifted = ctr.copy()
    drifted[drop_at:] -= 0.003  # 3 noise sds below the seasonal value

    clean = Seasonal(direction="down")
    clean_flags = [clean.update(float(x), int(ti)).drift_detected for ti, x in zip(t, ctr, strict=True)]
    episodes = sum(a and not b for a, b in zip(clean_flags, [False] + clean_flags, strict=False))
    # one-sided ARL0 about 930 windows: 1008 monitored hours give about one false alarm
    assert episodes <= 3 and sum(clean_flags) < 30
    # the same chart without the seasonal baseline: the daily swing swamps it, in both directions
    plain = CUSUM(direction="down")
    plain_flags = [plain.update(float(x)).drift_detected for x in drifted]
    tight = CUSUM(direction="down", warmup=24 * 7)  # a week of warm-up: the swing is in its std
    tight_flags = [tight.update(float(x)).drift_detected for x in drifted]
    assert sum(plain_flags[drop_at : drop_at + 24]) < 12  # blind to most of the drop's first day
    assert sum(tight_flags[:drop_at]) > 50  # or fires on every daily trough

    det = Seasonal(direction="down")
    flags = [det.update(float(x), int(ti)).drift_detected for ti, x in zip(t, drifted, strict=True)]
    assert flags[:drop_at] == clean_flags[:drop_at]
    first = next(i for i in range(drop_at, len(flags)) if flags[i] and not clean_flags[i])
    assert first <= drop_at + 6  # 3 sigma: the CUSUM needs about two windows
    assert all(flags[drop_at + 6 :])  # and stays firing for the two weeks the drop lasts


def test_seasonal_false_alarm_rate_on_noise():
    """Documented: the seasonal CUSUM's false alarms come no more often than the known-baseline
    CUSUM's (ARL0 465 two-sided) allows, within the estimation effect of two warm-up weeks."""
    rng = np.random.default_rng(4)
    runs, hours = 30, 24 * 7 * 8
    arl0 = average_run_length("cusum", {})
    alarms, watched = 0, 0
    for _ in range(runs):
        t, ctr = _weekly(rng, hours)
        det = Seasonal()
        was = False
        for ti, x in zip(t, ctr, strict=True):
            det.update(float(x), int(ti))
            watched += det.ready
            alarms += det.drift_detected and not was  # episodes, not windows
            was = det.drift_detected
    rate = alarms / watched
    # numpy cross-check of the pooled residual std after warm-up on the last run
    warm = ctr[: 24 * 14].reshape(2, 168)
    pooled = math.sqrt(((warm - warm.mean(axis=0)) ** 2).sum() / (warm.size - 168))
    assert det._state["std"] == pytest.approx(pooled, rel=1e-9)
    assert rate < 2.0 / arl0, rate


def test_state_is_json_and_round_trips_mid_stream():
    rng = np.random.default_rng(2)
    t, ctr = _weekly(rng, 24 * 7 * 3)
    ph = {"min_instances": 5, "delta": 0.0001, "threshold": 0.004}  # detects (and restarts) now and then
    for name, kwargs in (("ewma", {}), ("cusum", {}), ("seasonal", {"period": "day"}), ("page_hinkley", ph)):
        a = make_detector(name, kwargs)
        b = make_detector(name, kwargs)
        for ti, x in zip(t, ctr, strict=True):
            a.update(float(x), int(ti))
            b = detectors.Detector.from_dict(json.loads(json.dumps(b.to_dict(), allow_nan=False)))
            b.update(float(x), int(ti))
            assert (a.drift_detected, a.ready, a.statistic) == (b.drift_detected, b.ready, b.statistic)
        assert a.to_dict() == b.to_dict()


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown parameters"):
        make_detector("ewma", {"lambda": 0.1})
    with pytest.raises(KeyError, match="unknown detector"):
        make_detector("prophet")
    for name, params in (("ewma", {"alpha": 1.5}), ("cusum", {"h": 0}), ("seasonal", {"slot_minutes": 11}),
                         ("cusum", {"direction": "sideways"}), ("ewma", {"std": 0}), ("cusum", {"mean": "high"}),
                         ("ewma", {"warmup": 1}), ("cusum", {"k": float("nan")}), ("seasonal", {"period": "month"}),
                         ("seasonal", {"warmup_periods": 0.5}), ("ewma", {"k": True}),
                         ("page_hinkley", {"alpha": 0}), ("page_hinkley", {"min_instances": 0}),
                         ("page_hinkley", {"delta": -1})):  # fmt: skip
        with pytest.raises(ValueError):
            make_detector(name, params)
    with pytest.raises(ValueError, match="needs the window's time"):
        Seasonal().update(1.0)


def test_upper_side_and_one_sided_run_lengths():
    # a one-sided chart has about twice the two-sided in-control run length
    two = average_run_length("ewma", {})
    one = average_run_length("ewma", {"direction": "down"})
    assert 1.8 < one / two < 2.2
    det = EWMA(mean=0.01, std=0.001, direction="up")  # error rate going up
    flags = [det.update(0.01 + 0.002).drift_detected for _ in range(10)]
    assert flags[-1] and det.limit > 0.01
    # norm is the reference for the CDF the Markov chain uses
    assert detectors._phi(1.2) == pytest.approx(norm.cdf(1.2), abs=1e-15)
