"""Delivery of notifications: a background worker, a bounded queue, retries, deduplication.

* ``submit`` never blocks: when the queue is full the notification goes to ``on_dropped``
  (reason "queue_full"), for the caller to keep in an outbox and submit again later.
* One worker thread keeps a schedule of attempts, so a receiver that is down does not hold up
  the others. An attempt is an HTTP POST (urllib, per-receiver timeout) with the header
  ``Idempotency-Key: <notification id>``. Network errors, timeouts, HTTP 408/429/5xx and the
  chat APIs' rate-limit codes are retried with exponential backoff and jitter (Retry-After is
  honoured) until ``max_total_s`` (default 10 min) after the first attempt; then, or on any
  other error, the notification goes to ``on_dropped`` (reason "retries_exhausted" or
  "rejected").
* At-least-once with deduplication: ids delivered by this process are remembered (LRU), and
  ``already_delivered(id)`` (e.g. backed by the stored attempts) is asked before the first
  attempt, so a replay or a restart does not send the same notification twice.
* Every attempt is reported to ``on_attempt(notification_id, receiver, attempt, status,
  http_status, error)`` with status one of delivered, retrying, failed, duplicate, dropped.
* Secrets never leave: logs, errors and on_attempt data carry the receiver's name and its URL
  reduced to scheme://host; error texts are scrubbed of the URL, its query and the signing key.
"""

import heapq
import itertools
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable

from mlvigil.alerting import formats
from mlvigil.alerting.engine import Notification
from mlvigil.alerting.rules import Receiver

log = logging.getLogger("mlvigil.alerting.delivery")

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def safe_url(url: str) -> str:
    """scheme://host[:port] only: paths and queries of webhook URLs are credentials."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{p.scheme}://{host}" + (f":{p.port}" if p.port else "")
    except ValueError:
        return "<url>"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Removes the given secrets (and their URL-quoted forms), then cuts every URL to scheme://host."""
    for s in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        for form in {s, urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)}:
            text = text.replace(form, "***")
    return _URL.sub(lambda m: safe_url(m.group(0)), text)


def secret_parts(url: str, secret: str = "") -> list[str]:
    """What of a receiver must not be shown: the URL, its path, long path segments (webhook
    tokens), query values, the signing secret."""
    out = [url, secret]
    try:
        p = urllib.parse.urlsplit(url)
        out += [p.path, p.query] + [seg for seg in p.path.split("/") if len(seg) >= 8]
        out += [v for _, v in urllib.parse.parse_qsl(p.query)]
    except ValueError:
        pass
    return [s for s in out if s and len(s) >= 4 and s != "/"]


class _Item:
    __slots__ = ("n", "attempt", "first", "due", "last_status", "last_error")

    def __init__(self, n: Notification, due: float):
        self.n, self.attempt, self.first, self.due = n, 0, None, due
        self.last_status: int | None = None
        self.last_error = ""


class Deliverer:
    def __init__(
        self,
        receivers: dict[str, Receiver] | Iterable[Receiver],
        *,
        queue_size: int = 1000,
        max_total_s: float = 600.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        backoff_factor: float = 2.0,
        jitter: float = 0.2,
        dedup_size: int = 10_000,
        on_attempt: Callable[[str, str, int, str, int | None, str | None], None] | None = None,
        on_dropped: Callable[[Notification, str], None] | None = None,
        already_delivered: Callable[[str], bool] | None = None,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        seed: int | None = None,
        start: bool = True,
    ):
        self.receivers = dict(receivers) if isinstance(receivers, dict) else {r.name: r for r in receivers}
        self.queue_size = queue_size
        self.max_total_s = max_total_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.backoff_factor, self.jitter = backoff_factor, jitter
        self.on_attempt, self.on_dropped, self.already_delivered = on_attempt, on_dropped, already_delivered
        self.wall_clock_ms = wall_clock_ms
        self._rng = random.Random(seed)
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._dedup_size = dedup_size
        self._heap: list[tuple[float, int, _Item]] = []
        self._pending: set[str] = set()
        self._busy = 0
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self.stats = {"submitted": 0, "delivered": 0, "retried": 0, "failed": 0, "duplicates": 0, "dropped": 0}
        self._secrets = [s for r in self.receivers.values() for s in secret_parts(r.url, r.secret)]
        self._thread = threading.Thread(target=self._run, name="mlvigil-alert-delivery", daemon=True)
        if start:
            self._thread.start()

    # -- caller side -------------------------------------------------------------------------------

    def submit(self, n: Notification) -> bool:
        """Queue a notification; never blocks. False if it was a duplicate or dropped (queue full)."""
        with self._cond:
            if n.id in self._delivered or n.id in self._pending:
                self.stats["duplicates"] += 1
                dup = True
            elif len(self._heap) + self._busy >= self.queue_size:
                self.stats["dropped"] += 1
                dup = None
            else:
                self._pending.add(n.id)
                heapq.heappush(self._heap, (time.monotonic(), next(self._seq), _Item(n, time.monotonic())))
                self.stats["submitted"] += 1
                self._cond.notify()
                return True
        if dup:
            self._report(n.id, n.receiver, 0, "duplicate", None, None)
        else:
            log.warning("alert queue full: notification %s for %s goes to the outbox", n.id, n.receiver)
            self._report(n.id, n.receiver, 0, "dropped", None, "queue full")
            self._drop(n, "queue_full")
        return False

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._busy

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight; True if so within timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker; what is still queued goes to on_dropped (reason "shutdown")."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            left, self._heap = [item for _, _, item in self._heap], []
            self._pending.clear()
        for item in left:
            self._drop(item.n, "shutdown")

    def delivered(self, notification_id: str) -> bool:
        with self._cond:
            return notification_id in self._delivered

    # -- worker ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stop:
                    return
                _, _, item = heapq.heappop(self._heap)
                self._busy += 1
            again = False
            try:
                again = self._attempt(item)
            except Exception as e:  # never let the worker die; never print the exception's URL
                log.error("alert delivery of %s failed unexpectedly: %s", item.n.id, self._scrub(repr(e)))
            finally:
                handed_back = False
                with self._cond:
                    self._busy -= 1
                    if again and not self._stop:
                        heapq.heappush(self._heap, (item.due, next(self._seq), item))
                    else:
                        self._pending.discard(item.n.id)
                        handed_back = again  # stopping: hand it back to the caller
                    self._cond.notify_all()
                if handed_back:
                    self._drop(item.n, "shutdown")

    def _attempt(self, item: _Item) -> bool:
        """One attempt; True to try again later."""
        n = item.n
        rec = self.receivers.get(n.receiver)
        item.attempt += 1
        if item.first is None:
            item.first = time.monotonic()
        if rec is None:
            self._report(n.id, n.receiver, item.attempt, "failed", None, "unknown receiver")
            self._fail(item, "unknown_receiver")
            return False
        if self._is_delivered(n.id, ask_hook=item.attempt == 1):
            self._count("duplicates")
            self._report(n.id, rec.name, item.attempt, "duplicate", None, None)
            return False
        if rec.type == "log":
            log.info("alert %s [%s] %s", n.id, n.severity, formats.log_line(n, rec))
            self._success(item, rec, None)
            return False
        payload = formats.build(n, rec, self.wall_clock_ms())
        url = formats.target_url(rec, payload)
        headers = {**payload.headers, "Idempotency-Key": n.id, "User-Agent": "mlvigil-alerting/1"}
        req = urllib.request.Request(url, data=payload.body, headers=headers, method="POST")
        status, body, retry_after, error = None, b"", None, ""
        try:
            with urllib.request.urlopen(req, timeout=rec.timeout_s) as resp:
                status, body = resp.status, resp.read(1 << 16)
        except urllib.error.HTTPError as e:
            status, retry_after = e.code, e.headers.get("Retry-After") if e.headers else None
            try:
                body = e.read(1 << 16)
            except OSError:
                body = b""
            e.close()
        except urllib.error.URLError as e:
            error = f"{type(e.reason).__name__}: {e.reason}"
        except (OSError, TimeoutError, ValueError) as e:
            error = f"{type(e).__name__}: {e}"
        if status is not None:
            ok, retryable, error = formats.check_response(rec.type, status, body)
        else:
            ok, retryable = False, True
        error = self._scrub(error, url)
        if ok:
            self._success(item, rec, status)
            return False
        item.last_status, item.last_error = status, error
        delay = self._backoff(item.attempt, retry_after)
        if retryable and time.monotonic() + delay - item.first <= self.max_total_s:
            item.due = time.monotonic() + delay
            self._count("retried")
            log.warning(
                "alert %s to %s (%s): attempt %d failed (%s), retrying in %.1f s",
                n.id, rec.name, safe_url(rec.url), item.attempt, error, delay,
            )  # fmt: skip
            self._report(n.id, rec.name, item.attempt, "retrying", status, error)
            return True
        log.error(
            "alert %s to %s (%s): giving up after %d attempts (%s)",
            n.id,
            rec.name,
            safe_url(rec.url),
            item.attempt,
            error,
        )
        self._report(n.id, rec.name, item.attempt, "failed", status, error)
        self._fail(item, "retries_exhausted" if retryable else "rejected")
        return False

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor ** (attempt - 1))
        delay = base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.backoff_max_s))
            except ValueError:
                pass
        return max(delay, 0.0)

    def _count(self, key: str) -> None:
        with self._cond:
            self.stats[key] += 1

    def _is_delivered(self, nid: str, ask_hook: bool) -> bool:
        with self._cond:
            if nid in self._delivered:
                return True
        if ask_hook and self.already_delivered is not None:
            try:
                return bool(self.already_delivered(nid))
            except Exception as e:
                log.warning("already_delivered(%s) failed, sending anyway: %s", nid, self._scrub(repr(e)))
        return False

    def _success(self, item: _Item, rec: Receiver, status: int | None) -> None:
        with self._cond:
            self._delivered[item.n.id] = None
            while len(self._delivered) > self._dedup_size:
                self._delivered.popitem(last=False)
        self._count("delivered")
        self._report(item.n.id, rec.name, item.attempt, "delivered", status, None)

    def _fail(self, item: _Item, reason: str) -> None:
        self._count("failed")
        self._drop(item.n, reason)

    def _drop(self, n: Notification, reason: str) -> None:
        if self.on_dropped is not None:
            try:
                self.on_dropped(n, reason)
            except Exception as e:
                log.error("on_dropped failed for %s: %s", n.id, self._scrub(repr(e)))

    def _report(self, nid: str, receiver: str, attempt: int, status: str, http: int | None, error: str | None) -> None:
        if self.on_attempt is not None:
            try:
                self.on_attempt(nid, receiver, attempt, status, http, error)
            except Exception as e:
                log.error("on_attempt failed for %s: %s", nid, self._scrub(repr(e)))

    def _scrub(self, text: str, *extra: str) -> str:
        return redact(text or "", [*self._secrets, *extra])
