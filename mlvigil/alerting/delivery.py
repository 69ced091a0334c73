"""Delivery of notifications: one queue and one worker per receiver, retries, deduplication.

* One lane per receiver (its own bounded queue, worker thread and ``requests.Session``), so a
  receiver that hangs or is down delays only its own notifications, never another receiver's.
* ``submit`` never blocks. An attempt is an HTTP POST with the header
  ``Idempotency-Key: <notification id>``, connect and read timeouts, TLS verification on and
  proxies from the environment (requests' ``trust_env``). Network errors, timeouts, HTTP
  408/429/5xx and the chat APIs' rate-limit codes are retried with exponential backoff and
  jitter (Retry-After is honoured) until ``max_total_s`` (default 10 min) after the first attempt.
* Every give-up is reported twice: to ``on_attempt`` with status "failed" and an error that
  starts with the reason, and to ``on_dropped(notification, reason)``. Reasons: retries_exhausted,
  rejected (a non-retryable answer), queue_full (the receiver's queue holds ``queue_size``),
  unknown_receiver. ``close()`` hands what is still queued to ``on_dropped`` with reason
  "shutdown": not a give-up, the caller still owns it (the job keeps it in Flink state).
* Deduplication: ids delivered by this process are remembered (LRU), and ``already_delivered(id)``
  (if given) is asked before the first attempt. Receivers get the Idempotency-Key to dedupe
  what a crash between their answer and our record makes us send again.
* Every attempt is reported to ``on_attempt(notification_id, receiver, attempt, status,
  http_status, error)`` with status one of delivered, retrying, failed, duplicate.
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
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable

import requests

from mlvigil.alerting import formats
from mlvigil.alerting.engine import Notification
from mlvigil.alerting.rules import Receiver

log = logging.getLogger(__name__)
# urllib3 logs each request line at DEBUG, with the webhook's path and query: its token
# (clickhouse_connect, when imported, already sets "urllib3" to WARNING; this holds without it).
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
MAX_ANSWER_BYTES = 1 << 16


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
    __slots__ = ("n", "attempt", "first", "due")

    def __init__(self, n: Notification, due: float):
        self.n, self.attempt, self.first, self.due = n, 0, None, due


class _Lane:
    """One receiver's queue (a schedule of attempts), worker thread and HTTP session."""

    def __init__(self, receiver: Receiver, session: requests.Session | None):
        self.receiver = receiver
        self.session = session
        self.heap: list[tuple[float, int, _Item]] = []
        self.queued: set[str] = set()  # ids queued or in flight
        self.busy = 0
        self.current: _Item | None = None  # the item in flight
        self.thread: threading.Thread | None = None

    def size(self) -> int:
        return len(self.heap) + self.busy


class Deliverer:
    def __init__(
        self,
        receivers: dict[str, Receiver] | Iterable[Receiver],
        *,
        queue_size: int = 1000,
        max_total_s: float = 600.0,
        connect_timeout_s: float = 5.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        backoff_factor: float = 2.0,
        jitter: float = 0.2,
        dedup_size: int = 10_000,
        on_attempt: Callable[[str, str, int, str, int | None, str | None], None] | None = None,
        on_dropped: Callable[[Notification, str], None] | None = None,
        already_delivered: Callable[[str], bool] | None = None,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        session_factory: Callable[[], requests.Session] = requests.Session,
        seed: int | None = None,
        start: bool = True,
    ):
        self.receivers = dict(receivers) if isinstance(receivers, dict) else {r.name: r for r in receivers}
        self.queue_size = queue_size  # per receiver
        self.max_total_s = max_total_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.backoff_factor, self.jitter = backoff_factor, jitter
        self.on_attempt, self.on_dropped, self.already_delivered = on_attempt, on_dropped, already_delivered
        self.wall_clock_ms = wall_clock_ms
        self._rng = random.Random(seed)
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._dedup_size = dedup_size
        self._seq = itertools.count()
        # One condition for all lanes: queues are small and notifications rare; a worker waits
        # only on its own lane's schedule, and drain() waits for all of them.
        self._cond = threading.Condition()
        self._stop = False
        self.stats = {"submitted": 0, "delivered": 0, "retried": 0, "failed": 0, "duplicates": 0, "dropped": 0}
        self._secrets = [s for r in self.receivers.values() for s in secret_parts(r.url, r.secret)]
        self._lanes: dict[str, _Lane] = {}
        for name, rec in self.receivers.items():
            lane = _Lane(rec, None if rec.type == "log" else session_factory())
            lane.thread = threading.Thread(
                target=self._run, args=(lane,), name=f"mlvigil-alert-delivery-{name}", daemon=True
            )
            self._lanes[name] = lane
        if start:
            for lane in self._lanes.values():
                lane.thread.start()

    # -- caller side -------------------------------------------------------------------------------

    def submit(self, n: Notification) -> bool:
        """Queue a notification; never blocks. False if it was a duplicate or given up at once."""
        lane = self._lanes.get(n.receiver)
        reason = None
        with self._cond:
            if n.id in self._delivered or (lane is not None and n.id in lane.queued):
                self.stats["duplicates"] += 1
                dup = True
            else:
                dup = False
                if lane is None:
                    reason = "unknown_receiver"
                elif lane.size() >= self.queue_size:
                    reason = "queue_full"
                else:
                    lane.queued.add(n.id)
                    now = time.monotonic()
                    heapq.heappush(lane.heap, (now, next(self._seq), _Item(n, now)))
                    self.stats["submitted"] += 1
                    self._cond.notify_all()
                    return True
        if dup:
            self._report(n.id, n.receiver, 0, "duplicate", None, None)
        else:
            self._give_up(n, n.receiver, 0, None, reason, "")
        return False

    def pending(self, receiver: str | None = None) -> int:
        """Notifications queued or in flight (of one receiver, or all)."""
        with self._cond:
            lanes = [self._lanes[receiver]] if receiver in self._lanes else self._lanes.values()
            return sum(lane.size() for lane in lanes)

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight; True if so within timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(lane.size() for lane in self._lanes.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers; what is still queued goes to on_dropped (reason "shutdown").

        A worker stuck in a request is not waited for beyond timeout (it is a daemon thread);
        its notification is handed back too."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for lane in self._lanes.values():
            if lane.thread.is_alive():
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        left: list[Notification] = []
        with self._cond:
            for lane in self._lanes.values():
                left += [item.n for _, _, item in lane.heap]
                lane.heap = []
                if lane.current is not None:  # stuck in flight: the caller must treat it as not delivered
                    left.append(lane.current.n)
                    lane.current = None
                lane.queued.clear()
        for lane in self._lanes.values():
            if lane.session is not None:
                lane.session.close()
        for n in left:
            self.stats["dropped"] += 1
            self._drop(n, "shutdown")

    def delivered(self, notification_id: str) -> bool:
        with self._cond:
            return notification_id in self._delivered

    # -- worker ------------------------------------------------------------------------------------

    def _run(self, lane: _Lane) -> None:
        while True:
            with self._cond:
                while not self._stop and (not lane.heap or lane.heap[0][0] > time.monotonic()):
                    wait = lane.heap[0][0] - time.monotonic() if lane.heap else None
                    self._cond.wait(wait)
                if self._stop:
                    return
                _, _, item = heapq.heappop(lane.heap)
                lane.busy += 1
                lane.current = item
            again = False
            try:
                again = self._attempt(lane, item)
            except Exception as e:  # never let the worker die; never print the exception's URL
                log.error("alert delivery of %s failed unexpectedly: %s", item.n.id, self._scrub(repr(e)))
                again = True  # not given up: try again later
                item.due = time.monotonic() + self._backoff(max(item.attempt, 1), None)
            finally:
                handed_back = False
                with self._cond:
                    lane.busy -= 1
                    mine = lane.current is item  # else close() has handed it back already
                    lane.current = None
                    if again and not self._stop:
                        heapq.heappush(lane.heap, (item.due, next(self._seq), item))
                    else:
                        lane.queued.discard(item.n.id)
                        handed_back = again and mine  # stopping: hand it back to the caller
                    self._cond.notify_all()
                if handed_back:
                    self.stats["dropped"] += 1
                    self._drop(item.n, "shutdown")

    def _attempt(self, lane: _Lane, item: _Item) -> bool:
        """One attempt; True to try again later."""
        n, rec = item.n, lane.receiver
        item.attempt += 1
        if item.first is None:
            item.first = time.monotonic()
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
        status, body, retry_after, error = self._post(lane, url, payload.body, headers)
        if status is not None:
            ok, retryable, error = formats.check_response(rec.type, status, body)
        else:
            ok, retryable = False, True
        error = self._scrub(error, url)
        if ok:
            self._success(item, rec, status)
            return False
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
        self._give_up(n, rec.name, item.attempt, status, "retries_exhausted" if retryable else "rejected", error)
        return False

    def _post(self, lane: _Lane, url: str, body: bytes, headers: dict) -> tuple[int | None, bytes, str | None, str]:
        """(http status, answer body, Retry-After, error) of one POST."""
        rec = lane.receiver
        try:
            # stream=True: read at most MAX_ANSWER_BYTES of the answer (a chat API says little).
            with lane.session.post(
                url, data=body, headers=headers, timeout=(min(self.connect_timeout_s, rec.timeout_s), rec.timeout_s),
                stream=True, allow_redirects=False,
            ) as resp:  # fmt: skip
                answer = resp.raw.read(MAX_ANSWER_BYTES, decode_content=True) or b""
                return resp.status_code, answer, resp.headers.get("Retry-After"), ""
        except requests.exceptions.RequestException as e:
            return None, b"", None, f"{type(e).__name__}: {e}"
        except (OSError, ValueError) as e:
            return None, b"", None, f"{type(e).__name__}: {e}"

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

    def _give_up(self, n: Notification, receiver: str, attempt: int, status: int | None, reason: str, error: str):
        """A final failure: one "failed" attempt record whose error starts with the reason, then on_dropped."""
        rec = self.receivers.get(receiver)
        log.error(
            "alert %s to %s (%s): giving up after %d attempts: %s %s",
            n.id, receiver, safe_url(rec.url) if rec else "?", attempt, reason, error,
        )  # fmt: skip
        self._count("failed")
        self._report(n.id, receiver, attempt, "failed", status, f"{reason}: {error}" if error else reason)
        self._drop(n, reason)

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
