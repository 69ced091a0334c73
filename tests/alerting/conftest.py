"""Helpers for the alerting tests: metric rows, an engine driver that round-trips its state
through JSON between every call, and a real HTTP receiver on 127.0.0.1."""

import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlvigil.alerting import AlertEngine

MIN = 60_000
MODEL, VERSION = "recsys", "v2"


def feature_row(feature: str, psi: float | None, *, segment: str = "*", present: int = 500, **extra) -> dict:
    row = {
        "layer": "data", "model_id": MODEL, "model_version": VERSION, "segment": segment, "feature": feature,
        "feature_type": "numeric", "events": present, "present": present, "missing": 0, "missing_rate": 0.0,
        "outliers": 0, "outlier_rate": 0.0, "psi": psi, "ks": None, "mean": None, "std": None,
    }  # fmt: skip
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
