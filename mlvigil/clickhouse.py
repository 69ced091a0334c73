"""ClickHouse access: an embedded chDB directory by default, or a server by URL.

chDB lets one process hold a data directory at a time, so every user of the embedded store
(the job's writer, the CLI's readers, the tests) opens it, does its work and closes it, and
retries with backoff and jitter while another process holds it. A server URL keeps one client.

URLs: `chdb:///abs/dir` (embedded), `http://user@host:8123` or `https://...` (server). The
password comes from MLVIGIL_CLICKHOUSE_PASSWORD, never from the URL or config in git.
"""

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import clickhouse_connect

log = logging.getLogger(__name__)
T = TypeVar("T")
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "sql" / "clickhouse"
_LOCKED_MARKERS = ("EmbeddedServer", "Cannot lock", "already running", "BAD_ARGUMENTS")
# One embedded session at a time per process: Flink's local mode runs every Python operator
# (writer, alert delivery thread) in one process, and chDB does not survive concurrent
# open/close from several threads.
_EMBEDDED_LOCK = threading.RLock()


def is_embedded(url: str) -> bool:
    return url.startswith("chdb://")


def redact(url: str) -> str:
    """The URL without credentials, for logs."""
    u = urlparse(url)
    if u.password or u.username:
        host = u.hostname or ""
        if u.port:
            host += f":{u.port}"
        return u._replace(netloc=host).geturl()
    return url


def _open(url: str) -> Any:
    if is_embedded(url):
        path = url[len("chdb://") :]
        Path(path).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=f"chdb://{path}")
    u = urlparse(url)
    return clickhouse_connect.get_client(
        host=u.hostname or "localhost",
        port=u.port or (8443 if u.scheme == "https" else 8123),
        username=u.username or "default",
        password=os.environ.get("MLVIGIL_CLICKHOUSE_PASSWORD", ""),
        secure=u.scheme == "https",
    )


@contextmanager
def client(url: str, timeout_s: float = 120.0):
    """A client; for chDB, waits (backoff + jitter) while another process holds the directory."""
    if not is_embedded(url):
        with _client(url, timeout_s) as c:
            yield c
        return
    with _EMBEDDED_LOCK:
        with _client(url, timeout_s) as c:
            yield c


@contextmanager
def _client(url: str, timeout_s: float):
    delay, deadline = 0.02, time.monotonic() + timeout_s
    while True:
        try:
            c = _open(url)
            break
        except Exception as e:  # chDB reports the lock only as a generic init error
            if not is_embedded(url) or not any(m in str(e) for m in _LOCKED_MARKERS):
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"ClickHouse store {url} stayed locked for {timeout_s:.0f} s") from e
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)
    try:
        yield c
    finally:
        c.close()


def run(url: str, fn: Callable[[Any], T], timeout_s: float = 120.0) -> T:
    with client(url, timeout_s) as c:
        return fn(c)


def schema_statements(database: str) -> list[str]:
    stmts = []
    for f in sorted(SCHEMA_DIR.glob("*.sql")):
        text = "\n".join(line for line in f.read_text().splitlines() if not line.strip().startswith("--"))
        stmts += [s.strip().replace("{db}", database) for s in text.split(";") if s.strip()]
    return stmts


def apply_schema(url: str, database: str) -> None:
    def go(c: Any) -> None:
        for stmt in schema_statements(database):
            c.command(stmt)

    run(url, go)


def query_rows(url: str, sql: str, parameters: dict | None = None) -> list[tuple]:
    return run(url, lambda c: c.query(sql, parameters=parameters).result_rows)


def query_df(url: str, sql: str, parameters: dict | None = None):
    return run(url, lambda c: c.query_df(sql, parameters=parameters))


def insert(url: str, table: str, rows: list[list], columns: list[str], database: str) -> None:
    run(url, lambda c: c.insert(table, rows, column_names=columns, database=database))
