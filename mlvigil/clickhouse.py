"""ClickHouse access: an embedded chDB directory by default, or a server by URL.

Every use of the store goes through run() (query_rows, insert, apply_schema are thin wrappers):
it opens a client, calls the caller's function, closes the client, and when the store is
unavailable it waits and tries again, with exponential backoff and jitter, for as long as it
takes (or up to a caller's give_up_after_s). What counts as "unavailable" is retry_reason():
the embedded directory held by another process, a full disk, a refused/reset/timed-out
connection, a server 5xx or an overload code. Errors that no retry can fix (bad SQL, unknown
table or column, wrong types, bad credentials) are raised at once.

chDB lets one process hold a data directory at a time, so every user of the embedded store
(the job's writer, the CLI's readers, the tests) opens it, does its work and closes it. A
server URL opens one HTTP client per run() as well (cheap, and a fresh connection after a fault).

An outage is logged once when it starts, every RetryPolicy.log_every_s with its duration, and
once when it ends; counts per URL are in health(url) (the job's writer exports them as Flink
metrics).

URLs: `chdb:///abs/dir` (embedded), `http://user@host:8123` or `https://...` (server). The
password comes from MLVIGIL_CLICKHOUSE_PASSWORD, never from the URL or config in git.
"""

import dataclasses
import errno
import logging
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import clickhouse_connect

from mlvigil.resources import CLICKHOUSE_SQL

log = logging.getLogger(__name__)
T = TypeVar("T")
SCHEMA_DIR = CLICKHOUSE_SQL  # sql/clickhouse/*.sql, shipped in the package
# One embedded session at a time per process: Flink's local mode runs every Python operator
# (writer, alert delivery thread) in one process, and chDB does not survive concurrent
# open/close from several threads. Held for one attempt, never while waiting to retry.
_EMBEDDED_LOCK = threading.RLock()

# chDB reports "Cannot lock file <dir>/status. Another server instance in same directory is
# already running" only on stderr; the exception says "Error initializing EmbeddedServer".
_LOCKED_MARKERS = ("Cannot lock file", "Another server instance")
_OPEN_FAILED_MARKER = "Error initializing EmbeddedServer"  # the lock, or another cause (then on stderr)
# Contention that is normal for a moment (a CLI reader holds the directory): quiet for quiet_lock_s.
_CONTENTION = ("store locked by another process", "embedded store could not open")
_DISK_FULL_MARKERS = ("NOT_ENOUGH_SPACE", "No space left on device", "errno: 28,", "ENOSPC")
# ClickHouse error codes that a later attempt can get past (ErrorCodes.cpp). Any other code
# (SYNTAX_ERROR 62, UNKNOWN_TABLE 60, NO_SUCH_COLUMN_IN_TABLE 16, TYPE_MISMATCH 53,
# AUTHENTICATION_FAILED 516, ...) means the request itself is wrong.
RETRYABLE_CODES = {
    159: "TIMEOUT_EXCEEDED",
    173: "CANNOT_ALLOCATE_MEMORY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    236: "ABORTED",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",
    279: "ALL_CONNECTION_TRIES_FAILED",
    319: "UNKNOWN_STATUS_OF_INSERT",
    394: "QUERY_WAS_CANCELLED",
    425: "SYSTEM_ERROR",
    439: "CANNOT_SCHEDULE_TASK",
    999: "KEEPER_EXCEPTION",
}
_ERRNO_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk full",
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection reset",
    errno.EPIPE: "connection reset",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "host unreachable",
    errno.EHOSTDOWN: "host unreachable",
    errno.EAGAIN: "resource temporarily unavailable",
}
_MESSAGE_REASONS = (  # connection faults as clickhouse_connect/urllib3 word them
    ("Connection refused", "connection refused"),
    ("Connection reset", "connection reset"),
    ("Connection aborted", "connection reset"),
    ("RemoteDisconnected", "connection reset"),
    ("timed out", "timeout"),
    ("Name or service not known", "host unreachable"),
    ("Temporary failure in name resolution", "host unreachable"),
)
_HTTP_5XX = re.compile(r"HTTP status (5\d\d)")


class _QuietWhileRetrying(logging.Filter):
    """Drops the drivers' own per-attempt warnings (urllib3 "Retrying ...", clickhouse_connect
    "Unexpected Http Driver Exception") inside run(), which logs the outage itself, rate-limited."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_RETRYING, "active", False) or record.levelno >= logging.ERROR


_RETRYING = threading.local()
for _name in ("urllib3.connectionpool", "clickhouse_connect.driver._backend.http_sync", "clickhouse_connect"):
    logging.getLogger(_name).addFilter(_QuietWhileRetrying())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def retry_reason(exc: BaseException) -> str | None:
    """Why exc may go away on its own (a short reason for logs: 'store locked', 'disk full',
    'connection refused', ...), or None when retrying cannot help and the caller must fail."""
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, StoreUnavailable):
        return None  # a caller already waited as long as it was told to
    for e in _chain(exc):
        code = getattr(e, "code", None)
        if isinstance(code, int) and code:
            # The server named the error: trust its code over any wording.
            return ("disk full" if code == 243 else RETRYABLE_CODES[code]) if code in RETRYABLE_CODES else None
    for e in _chain(exc):
        text = str(e)
        if any(m in text for m in _LOCKED_MARKERS):
            return "store locked by another process"
        if _OPEN_FAILED_MARKER in text:
            return "embedded store could not open"
        if any(m in text for m in _DISK_FULL_MARKERS):
            return "disk full"
        if isinstance(e, OSError) and e.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[e.errno]
        if isinstance(e, TimeoutError):  # socket.timeout too
            return "timeout"
        m = _HTTP_5XX.search(text)
        if m:
            return f"server error {m.group(1)}"
        if isinstance(e, OperationalError | ConnectionError):
            return next((r for marker, r in _MESSAGE_REASONS if marker in text), "connection error")
    return None


class StoreUnavailable(TimeoutError):
    """The store stayed unavailable for longer than the caller's give_up_after_s."""


@dataclass(frozen=True)
class RetryPolicy:
    first_delay_s: float = 0.05
    max_delay_s: float = 2.0  # bounds how late the end of an outage is noticed
    give_up_after_s: float | None = None  # None: wait as long as the outage lasts
    log_every_s: float = 30.0
    # Lock contention this short is normal (a CLI reader holds the directory for a moment):
    # counted, but not logged as an outage. Other failures are logged at once.
    quiet_lock_s: float = 1.0


DEFAULT_POLICY = RetryPolicy()


@dataclass
class StoreHealth:
    """What this process has seen of one store, for metrics (monotonic counters + a flag)."""

    retries: int = 0  # failed attempts that were retried
    outages: int = 0  # outages logged (contention shorter than quiet_lock_s is not one)
    unavailable_s: float = 0.0  # total time callers spent waiting for the store
    waiting: int = 0  # callers waiting for the store right now
    last_reason: str = ""


_HEALTH: dict[str, StoreHealth] = {}
_HEALTH_LOCK = threading.Lock()


def health(url: str) -> StoreHealth:
    with _HEALTH_LOCK:
        return _HEALTH.setdefault(url, StoreHealth())


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


class EmbeddedOpenError(Exception):
    """chDB could not open its directory; the message adds what chDB wrote to stderr about it."""


@contextmanager
def _stderr_lines_of_chdb(into: list[str]):
    """chDB writes why an open failed ("Cannot lock file ...") only to file descriptor 2, once per
    attempt. For the open, fd 2 goes to a temporary file: chDB's DB::Exception lines are kept
    for our (rate-limited) message, anything else written meanwhile is passed on to stderr."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            other = []
            for line in tmp.read().decode(errors="replace").splitlines(keepends=True):
                (into if "DB::Exception" in line else other).append(line.strip() if "DB::Exception" in line else line)
            if other:
                os.write(2, "".join(other).encode())


def _open(url: str) -> Any:
    if is_embedded(url):
        path = url[len("chdb://") :]
        Path(path).mkdir(parents=True, exist_ok=True)
        said: list[str] = []
        try:
            with _stderr_lines_of_chdb(said):
                return clickhouse_connect.get_client(dsn=f"chdb://{path}")
        except Exception as e:
            if said:
                raise EmbeddedOpenError(f"{e} (chDB: {' '.join(said)})") from e
            raise
    u = urlparse(url)
    return clickhouse_connect.get_client(
        host=u.hostname or "localhost",
        port=u.port or (8443 if u.scheme == "https" else 8123),
        username=u.username or "default",
        password=os.environ.get("MLVIGIL_CLICKHOUSE_PASSWORD", ""),
        secure=u.scheme == "https",
        connect_timeout=10,
        query_retries=0,  # run() retries, with backoff, and logs it
    )


@contextmanager
def _session(url: str):
    """One attempt: a client, closed afterwards (for chDB: under the process-wide lock)."""
    with _EMBEDDED_LOCK if is_embedded(url) else _NO_LOCK:
        c = _open(url)
        try:
            yield c
        finally:
            try:
                c.close()
            except Exception:  # a client that failed mid-request may not close cleanly
                log.debug("closing the ClickHouse client failed", exc_info=True)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


_NO_LOCK = _NoLock()


class _Outage:
    """One caller's wait for the store: rate-limited logging and the health counters."""

    def __init__(self, url: str, what: str, policy: RetryPolicy):
        self.url, self.what, self.policy = url, what, policy
        self.start = time.monotonic()
        self.attempts = 0
        self.logged_at: float | None = None  # when the last "unavailable" line was logged
        self.health = health(url)
        with _HEALTH_LOCK:
            self.health.waiting += 1

    def failed(self, reason: str, exc: BaseException) -> None:
        now = time.monotonic()
        self.attempts += 1
        with _HEALTH_LOCK:
            self.health.retries += 1
            self.health.last_reason = reason
        waited = now - self.start
        if self.logged_at is None:
            if reason in _CONTENTION and waited < self.policy.quiet_lock_s:
                return
            self.logged_at = now
            with _HEALTH_LOCK:
                self.health.outages += 1
            log.warning(
                "ClickHouse store %s unavailable (%s: %s); %s waits and retries%s",
                redact(self.url), reason, _short(exc), self.what,
                "" if self.policy.give_up_after_s is None else f" for up to {self.policy.give_up_after_s:.0f} s",
            )  # fmt: skip
        elif now - self.logged_at >= self.policy.log_every_s:
            self.logged_at = now
            log.warning(
                "ClickHouse store %s still unavailable after %.0f s (%s: %s; %d attempts); %s still waiting",
                redact(self.url), waited, reason, _short(exc), self.attempts, self.what,
            )  # fmt: skip

    def ended(self, ok: bool) -> None:
        waited = time.monotonic() - self.start
        with _HEALTH_LOCK:
            self.health.waiting -= 1
            self.health.unavailable_s += waited
        if ok and self.logged_at is not None:
            log.warning(
                "ClickHouse store %s available again after %.1f s (%d failed attempts); %s done",
                redact(self.url), waited, self.attempts, self.what,
            )  # fmt: skip


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def run(
    url: str,
    fn: Callable[[Any], T],
    give_up_after_s: float | None = None,
    what: str = "a store request",
    policy: RetryPolicy = DEFAULT_POLICY,
) -> T:
    """fn(client) with a fresh client; retried from the start while the store is unavailable.

    fn may run more than once, so it must be safe to repeat (the tables are ReplacingMergeTree;
    the writer also skips tables a failed attempt already wrote). give_up_after_s overrides
    policy.give_up_after_s: then StoreUnavailable is raised after that long."""

    def attempt() -> T:
        with _session(url) as c:
            return fn(c)

    return _retrying(url, attempt, give_up_after_s, what, policy)


def _retrying(url: str, attempt: Callable[[], T], give_up_after_s: float | None, what: str, policy: RetryPolicy) -> T:
    if give_up_after_s is not None:
        policy = dataclasses.replace(policy, give_up_after_s=give_up_after_s)
    outage: _Outage | None = None
    delay = policy.first_delay_s
    while True:
        outer = getattr(_RETRYING, "active", False)
        _RETRYING.active = True
        try:
            result = attempt()
        except Exception as e:
            reason = retry_reason(e)
            if reason is None:
                if outage is not None:
                    outage.ended(ok=False)
                raise
            outage = outage or _Outage(url, what, policy)
            outage.failed(reason, e)
            waited = time.monotonic() - outage.start
            if policy.give_up_after_s is not None and waited >= policy.give_up_after_s:
                outage.ended(ok=False)
                log.error("ClickHouse store %s unavailable for %.0f s: %s gives up", redact(url), waited, what)
                raise StoreUnavailable(
                    f"ClickHouse store {redact(url)} unavailable for {waited:.0f} s ({reason})"
                ) from e
            # Jitter: callers in several processes do not retry in lockstep.
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, policy.max_delay_s)
            continue
        finally:
            _RETRYING.active = outer
        if outage is not None:
            outage.ended(ok=True)
        return result


@contextmanager
def client(url: str, give_up_after_s: float | None = None):
    """A client for a block of work: the open is retried like run(), errors inside the block
    are the caller's (prefer run(), which retries the whole block)."""
    with _EMBEDDED_LOCK if is_embedded(url) else _NO_LOCK:
        c = _retrying(url, lambda: _open(url), give_up_after_s, "opening the store", DEFAULT_POLICY)
        try:
            yield c
        finally:
            c.close()


def schema_statements(database: str) -> list[str]:
    stmts = []
    for f in sorted((f for f in SCHEMA_DIR.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name):
        text = "\n".join(line for line in f.read_text().splitlines() if not line.strip().startswith("--"))
        stmts += [s.strip().replace("{db}", database) for s in text.split(";") if s.strip()]
    return stmts


def apply_schema(url: str, database: str) -> None:
    def go(c: Any) -> None:
        for stmt in schema_statements(database):
            c.command(stmt)

    run(url, go, what="creating the tables")


def query_rows(url: str, sql: str, parameters: dict | None = None) -> list[tuple]:
    return run(url, lambda c: c.query(sql, parameters=parameters).result_rows, what="a query")


def query_df(url: str, sql: str, parameters: dict | None = None):
    return run(url, lambda c: c.query_df(sql, parameters=parameters), what="a query")


def insert(url: str, table: str, rows: list[list], columns: list[str], database: str) -> None:
    run(url, lambda c: c.insert(table, rows, column_names=columns, database=database), what=f"an insert into {table}")
