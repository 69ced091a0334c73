"""Helpers for the alerting tests: metric rows, an engine driver that round-trips its state
through JSON between every call, and a real HTTP receiver on 127.0.0.1."""

import functools
import json
import math
import socket
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlvigil.alert_operators import AlertInput
from mlvigil.alerting import AlertEngine
from mlvigil.catalog import compile_catalog
from mlvigil.config import parse_config
from mlvigil.profile import build_profile, save_profile
from mlvigil.writer import COLUMNS

MIN = 60_000
MODEL, VERSION = "recsys", "v2"
PROFILED_FEATURES = ["a", "age", "alpha", "browsing_duration", "city", "income", "item_age", "tenure", "user_age",
                     "zeta", "zip"] + [f"f{i:02d}" for i in range(20)]  # fmt: skip
REFERENCE_ROWS = 10_000
REFERENCE_ACCURACY = 0.91
_KEEP: list = []  # the profile's temporary directory lives as long as the test session


@functools.cache
def reference_input() -> AlertInput:
    """The job's AlertInput over a real profile (build_profile with a label column) of MODEL
    VERSION: two bins per feature (edge 0, half the values on each side) and, on its labelled
    rows, accuracy 0.91 (every prediction positive, 91 % positive labels)."""
    n = REFERENCE_ROWS
    cols: dict[str, list] = {f: [-1.0] * (n // 2) + [1.0] * (n - n // 2) for f in PROFILED_FEATURES}
    positives = round(REFERENCE_ACCURACY * n)
    cols.update(score=[0.9] * n, predicted_label=[1] * n, clicked=[1] * positives + [0] * (n - positives))
    profile = build_profile(cols, MODEL, VERSION, custom_edges={f: [0.0] for f in PROFILED_FEATURES},
                            label_column="clicked", positive_label=1)  # fmt: skip
    tmp = tempfile.TemporaryDirectory()
    _KEEP.append(tmp)
    save_profile(profile, Path(tmp.name) / "profile.json")
    raw = {"models": {MODEL: {"profiles": {VERSION: str(Path(tmp.name) / "profile.json")}, "positive_label": 1}}}
    alert_input = AlertInput(compile_catalog(parse_config(raw)), COLUMNS)  # the job's columns
    alert_input.open(None)
    return alert_input


def two_bin_proportions(psi: float) -> list[float]:
    """Window proportions (0.5 + d, 0.5 - d) whose PSI against the profile's (0.5, 0.5) is psi."""
    lo, hi = 0.0, 0.5
    for _ in range(200):
        d = (lo + hi) / 2
        if 2 * d * math.log((0.5 + d) / (0.5 - d)) < psi:
            lo = d
        else:
            hi = d
    return [0.5 + lo, 0.5 - lo]


def feature_row(feature: str, psi: float | None, *, segment: str = "*", present: int = 500, **extra) -> dict:
    """A feature row with bin proportions that give its PSI, and the reference counts the job's
    AlertInput adds from the profile (for the rules' significance tests)."""
    row = {
        "layer": "data", "model_id": MODEL, "model_version": VERSION, "segment": segment, "feature": feature,
        "feature_type": "numeric", "events": present, "present": present, "missing": 0, "missing_rate": 0.0,
        "outliers": 0, "outlier_rate": 0.0, "psi": psi, "ks": None, "mean": None, "std": None,
        "bin_proportions": [] if psi is None else two_bin_proportions(psi),
    }  # fmt: skip
    enriched = reference_input().enrich("feature_metrics", dict(row))
    for k in ("reference_expected", "reference_count"):
        if k in enriched:
            row[k] = enriched[k]
    row.update(extra)
    return row


def quality_row(segment: str = "*", labelled: int = 500, **metrics) -> dict:
    return {
        "layer": "model",
        "model_id": MODEL,
        "model_version": VERSION,
        "segment": segment,
        "labelled": labelled,
        **metrics,
    }


def profiled_quality_row(segment: str = "*", labelled: int = 500, **metrics) -> dict:
    """A quality row as the job's AlertInput passes it on: with <metric>_reference from the profile."""
    return reference_input().enrich("quality_metrics", quality_row(segment, labelled, **metrics))


def service_row(latency_p95: float = 100.0, error_rate: float = 0.0, requests: int = 1000) -> dict:
    return {
        "layer": "service", "model_id": MODEL, "model_version": VERSION, "requests": requests,
        "errors": int(error_rate * requests), "error_rate": error_rate, "throughput_rps": requests / 60,
        "latency_p50": latency_p95 / 2, "latency_p95": latency_p95, "latency_p99": latency_p95 * 1.2,
    }  # fmt: skip


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    return x is None or isinstance(x, (str, int, float, bool))


class Driver:
    """Runs the engine twice in lockstep: once with the state passed through json.dumps/loads
    before every call (as Flink state would be), once with the live dict. Every output and every
    state must be identical."""

    def __init__(self, engine: AlertEngine):
        self.engine = engine
        self.state: dict = {}
        self.twin: dict = {}
        self.sent: list = []

    def _check(self, a, b):
        assert [n.to_dict() for n in a] == [n.to_dict() for n in b]
        assert _plain(self.state), "state must hold only dict/list/str/int/float/bool/None"
        text = json.dumps(self.state, sort_keys=True, allow_nan=False)
        assert text == json.dumps(self.twin, sort_keys=True, allow_nan=False)
        self.state = json.loads(text)
        self.sent += a
        return a

    def window(self, w: int, rows: list[dict]):
        a = self.engine.evaluate(self.state, json.loads(json.dumps(rows)), w)
        b = self.engine.evaluate(self.twin, rows, w)
        return self._check(a, b)

    def advance(self, now: int):
        return self._check(self.engine.advance(self.state, now), self.engine.advance(self.twin, now))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook:
    """A webhook receiver on 127.0.0.1: records every request; answers from a script, then 200."""

    def __init__(self, port: int | None = None, answers: list | None = None, ok_body: bytes = b"ok"):
        self.port = port or free_port()
        self.requests: list[dict] = []
        self.answers = list(answers or [])  # (status, body, headers) used first, in order
        self.ok_body = ok_body
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Hook":
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urllib.parse.urlsplit(self.path)
                with hook.lock:
                    hook.requests.append({
                        "path": parts.path, "query": urllib.parse.parse_qs(parts.query), "raw_query": parts.query,
                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                    })  # fmt: skip
                    status, out, headers = hook.answers.pop(0) if hook.answers else (200, hook.ok_body, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def json_bodies(self) -> list:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def wait(self, n: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} requests, got {len(self.requests)}")


@pytest.fixture
def hook():
    h = Hook().start()
    yield h
    h.stop()
