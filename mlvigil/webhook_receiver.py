"""A tiny chat-webhook stand-in on loopback, for the demo and the tests.

It records every POST and dedupes on the Idempotency-Key header as real receivers do: the first
request of a key that it answers 2xx is accepted, later ones of that key are answered 200 and
counted as duplicates. For fault tests it can misbehave per request: ``answer(msg)`` returns
"ok", "hang" (hold the request until ``release()``, then drop the connection unanswered) or an
HTTP status to answer with; ``on_request(msg)`` runs when a request has been read, before the
answer (a test kills the job there). ``stop()`` closes the port (connections are refused) and
``start()`` opens the same port again.
"""

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(
        self,
        on_message: Callable[[dict], None] | None = None,
        *,
        port: int = 0,
        answer: Callable[[dict], str | int] | None = None,
        on_request: Callable[[dict], None] | None = None,
        hang_limit_s: float = 300.0,
    ):
        self.messages: list[dict] = []  # every request answered 2xx (duplicates included)
        self.requests: list[dict] = []  # every request read, with how it was answered ("outcome")
        self.accepted: dict[str, dict] = {}  # Idempotency-Key -> the request first accepted with it
        self.duplicates: list[dict] = []  # answered 2xx, key already accepted
        self.on_message = on_message
        self.answer = answer
        self.on_request = on_request
        self.hang_limit_s = hang_limit_s
        self.lock = threading.Lock()
        self._release = threading.Event()
        self._port = port
        self.server: ThreadingHTTPServer | None = None
        self._bind()

    def _bind(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                msg = {
                    "path": self.path, "headers": dict(self.headers), "body": json.loads(body or b"null"),
                    "key": self.headers.get("Idempotency-Key"), "received_at": time.time(), "outcome": None,
                }  # fmt: skip
                with receiver.lock:
                    receiver.requests.append(msg)
                if receiver.on_request:
                    receiver.on_request(msg)
                how = receiver.answer(msg) if receiver.answer else "ok"
                if how == "hang":
                    msg["outcome"] = "hang"
                    receiver._release.wait(receiver.hang_limit_s)
                    self.close_connection = True  # never answered
                    return
                status = 200 if how == "ok" else int(how)
                with receiver.lock:
                    if 200 <= status < 300:
                        receiver.messages.append(msg)
                        if msg["key"] in receiver.accepted:
                            receiver.duplicates.append(msg)
                            msg["outcome"] = "duplicate"
                        else:
                            receiver.accepted[msg["key"]] = msg
                            msg["outcome"] = "accepted"
                    else:
                        msg["outcome"] = f"http {status}"
                if 200 <= status < 300 and msg["outcome"] == "accepted" and receiver.on_message:
                    receiver.on_message(msg)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok": true}' if status < 300 else b'{"ok": false}')
                except OSError:  # the sender is gone (killed)
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self._port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def release(self) -> None:
        """Let hanging requests go (unanswered), and every later "hang" answer too."""
        self._release.set()

    def start(self) -> "WebhookReceiver":
        if self.server is None:
            self._bind()
        self.thread.start()
        return self

    def stop(self) -> None:
        """Close the port: connections are refused until start()."""
        if self.server is not None:
            if self.thread.is_alive():
                self.server.shutdown()  # waits for serve_forever, so only when it runs
            self.server.server_close()
            self.server = None

    def received(self, predicate: Callable[[dict], bool] = lambda m: True) -> list[dict]:
        with self.lock:
            return [m for m in self.requests if predicate(m)]

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.release()
        self.stop()
