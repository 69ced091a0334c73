"""Which store errors are retried (the store is unavailable) and which fail at once (the request
is wrong), against the real exceptions of clickhouse_connect and chDB: a held directory, a
full disk (a small tmpfs), a closed port, a server answering 5xx, bad SQL, unknown tables and
columns. And run(): it waits out an outage, logs it once at each end, and gives up only when
asked to."""

import errno
import logging
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import clickhouse_connect
import pytest

from mlvigil import clickhouse
from tests.conftest import fill_disk

HOLD = textwrap.dedent(
    """
    import sys, time, clickhouse_connect
    c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    c.close()
    """
)


def _error(fn) -> BaseException:
    try:
        fn()
    except Exception as e:  # the exception is what the test looks at
        return e
    raise AssertionError("no error")


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that opens the chDB directory and keeps it for `seconds`."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.fixture
def store(tmp_path) -> str:
    url = f"chdb://{tmp_path / 'ch'}"

    def schema(c):
        c.command("CREATE DATABASE IF NOT EXISTS t")
        c.command("CREATE TABLE t.rows (k UInt32, v String) ENGINE = ReplacingMergeTree ORDER BY k")

    clickhouse.run(url, schema)
    return url


def test_a_held_directory_is_retryable(store, tmp_path, capfd):
    holder = _hold(tmp_path / "ch", 30)
    try:
        raw = _error(lambda: clickhouse_connect.get_client(dsn=store))
        said = capfd.readouterr().err
        ours = _error(lambda: clickhouse._open(store))
        said_then = capfd.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # What chDB says: a generic error, the real cause only on stderr...
    assert "Error initializing EmbeddedServer" in str(raw) and "Cannot lock file" not in str(raw)
    assert "Cannot lock file" in said
    assert clickhouse.retry_reason(raw) == "embedded store could not open"
    # ...which the store's own open catches, adds to the error and keeps off stderr.
    assert "Cannot lock file" in str(ours) and "Cannot lock file" not in said_then
    assert clickhouse.retry_reason(ours) == "store locked by another process"


def test_requests_that_cannot_succeed_are_not_retried(store):
    c = clickhouse_connect.get_client(dsn=store)
    try:
        errors = {
            "syntax": _error(lambda: c.query("SELEC 1")),
            "unknown table": _error(lambda: c.query("SELECT * FROM t.nope")),
            "unknown database": _error(lambda: c.insert("rows", [[1, "a"]], column_names=["k", "v"], database="nodb")),
            "unknown column": _error(lambda: c.insert("rows", [[1, "a"]], column_names=["k", "w"], database="t")),
            "wrong type": _error(lambda: c.insert("rows", [["one", "a"]], column_names=["k", "v"], database="t")),
            "column count": _error(lambda: c.insert("rows", [[1]], column_names=["k", "v"], database="t")),
            "function": _error(lambda: c.query("SELECT throwIf(1)")),
        }
    finally:
        c.close()
    assert {k: clickhouse.retry_reason(e) for k, e in errors.items()} == dict.fromkeys(errors)
    assert errors["syntax"].code == 62 and errors["unknown table"].code == 60


def test_a_closed_port_and_server_errors(tmp_path):
    e = _error(lambda: clickhouse_connect.get_client(host="127.0.0.1", port=_closed_port(), query_retries=0))
    assert clickhouse.retry_reason(e) == "connection refused"

    # A real HTTP server answering like a ClickHouse server (or a proxy in front of one) in trouble.
    answers: list[tuple[int, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.do_POST()

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers = answers[0]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            body = b"Code: %s. DB::Exception: trouble" % headers.get("X-ClickHouse-Exception-Code", "0").encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    cases = [
        ((503, {}), "server error 503"),  # a proxy: no ClickHouse code
        ((502, {}), "server error 502"),
        ((500, {"X-ClickHouse-Exception-Code": "243"}), "disk full"),
        ((500, {"X-ClickHouse-Exception-Code": "241"}), "MEMORY_LIMIT_EXCEEDED"),
        ((500, {"X-ClickHouse-Exception-Code": "202"}), "TOO_MANY_SIMULTANEOUS_QUERIES"),
        ((400, {"X-ClickHouse-Exception-Code": "62"}), None),  # syntax error
        ((404, {"X-ClickHouse-Exception-Code": "60"}), None),  # unknown table
        ((500, {"X-ClickHouse-Exception-Code": "516"}), None),  # authentication failed
    ]
    try:
        got = []
        for answer, _ in cases:
            answers[:] = [answer]
            got.append(
                clickhouse.retry_reason(
                    _error(lambda: clickhouse_connect.get_client(host="127.0.0.1", port=port, query_retries=0))
                )
            )
    finally:
        server.shutdown()
        server.server_close()
    assert got == [reason for _, reason in cases]


def test_a_connection_reset():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def reset() -> None:
        while True:  # every connection (the HTTP pool may try again)
            try:
                conn, _ = srv.accept()
            except OSError:
                return  # the test closed the socket
            conn.recv(1024)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()  # linger 0: an RST instead of a FIN

    t = threading.Thread(target=reset, daemon=True)
    t.start()
    try:
        e = _error(lambda: clickhouse_connect.get_client(host="127.0.0.1", port=srv.getsockname()[1], query_retries=0))
    finally:
        srv.close()
    assert clickhouse.retry_reason(e) in ("connection reset", "connection error")
    assert clickhouse.retry_reason(OSError(errno.ENOSPC, "No space left on device")) == "disk full"
    assert clickhouse.retry_reason(ConnectionResetError(errno.ECONNRESET, "reset")) == "connection reset"
    assert clickhouse.retry_reason(ValueError("bad value")) is None


def test_a_full_disk_is_retryable_and_healed_by_run(small_disk, caplog):
    url = f"chdb://{small_disk / 'ch'}"

    def schema(c):
        c.command("CREATE DATABASE IF NOT EXISTS t")
        c.command("CREATE TABLE t.rows (k UInt32, v String) ENGINE = ReplacingMergeTree ORDER BY k")

    clickhouse.run(url, schema)
    fill_disk(small_disk)
    rows = [[i, "x" * 100] for i in range(1000)]
    c = clickhouse_connect.get_client(dsn=url)
    try:
        e = _error(lambda: c.insert("rows", rows, column_names=["k", "v"], database="t"))
    finally:
        c.close()
    assert clickhouse.retry_reason(e) == "disk full", e

    # run() waits until space comes back: freed right after the third attempt has failed (freed
    # before or during it, a race, the third attempt could succeed).
    attempts = []

    def write(c):
        attempts.append(1)
        try:
            c.insert("rows", rows, column_names=["k", "v"], database="t")
        finally:
            if len(attempts) == 3:
                for f in small_disk.glob("filler-*"):
                    f.unlink()

    caplog.set_level(logging.WARNING, "mlvigil.clickhouse")
    before = clickhouse.health(url).retries
    clickhouse.run(url, write, what="the test")
    assert len(attempts) >= 4
    assert clickhouse.health(url).retries - before == len(attempts) - 1
    assert clickhouse.query_rows(url, "SELECT count() FROM t.rows FINAL") == [(1000,)]
    lines = [r.getMessage() for r in caplog.records if r.name == "mlvigil.clickhouse"]
    assert sum("unavailable (disk full" in m for m in lines) == 1, lines
    assert sum("available again" in m for m in lines) == 1, lines


def test_run_waits_out_a_held_store_and_logs_it_once(store, tmp_path, caplog):
    caplog.set_level(logging.WARNING, "mlvigil.clickhouse")
    holder = _hold(tmp_path / "ch", 3)
    try:
        clickhouse.run(store, lambda c: c.insert("rows", [[7, "b"]], column_names=["k", "v"], database="t"))
    finally:
        holder.kill()
        holder.wait()
    assert clickhouse.query_rows(store, "SELECT k, v FROM t.rows") == [(7, "b")]
    lines = [r.getMessage() for r in caplog.records if r.name == "mlvigil.clickhouse"]
    assert len(lines) == 2, lines
    assert "unavailable (store locked by another process" in lines[0] and "available again" in lines[1]


def test_run_fails_fast_on_bad_requests_and_gives_up_only_when_asked(store, caplog):
    calls = []

    def bad(c):
        calls.append(1)
        c.query("SELECT * FROM t.nope")

    before = clickhouse.health(store).retries
    with pytest.raises(clickhouse_connect.driver.exceptions.DatabaseError, match="UNKNOWN_TABLE"):
        clickhouse.run(store, bad)
    assert calls == [1] and clickhouse.health(store).retries == before

    caplog.set_level(logging.WARNING, "mlvigil.clickhouse")
    url = f"http://127.0.0.1:{_closed_port()}"
    fast = clickhouse.RetryPolicy(max_delay_s=0.2, log_every_s=0.5)
    with pytest.raises(clickhouse.StoreUnavailable, match="connection refused") as gave_up:
        clickhouse.run(url, lambda c: c.command("SELECT 1"), give_up_after_s=2, what="the test", policy=fast)
    assert clickhouse.retry_reason(gave_up.value) is None  # an outer caller does not wait again
    assert clickhouse.health(url).retries >= 5
    lines = [r.getMessage() for r in caplog.records if r.name == "mlvigil.clickhouse"]
    assert "unavailable (connection refused" in lines[0] and "for up to 2 s" in lines[0]
    # rate-limited: about one line per log_every_s, not one per attempt
    still = [m for m in lines if "still unavailable" in m]
    assert 1 <= len(still) <= 5 and len(still) < clickhouse.health(url).retries
    assert "gives up" in lines[-1]
    # the drivers' own per-attempt warnings are held back while run() retries
    assert not [r for r in caplog.records if r.name.startswith(("urllib3", "clickhouse_connect"))]
