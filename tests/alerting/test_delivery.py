"""Payload formats and delivery, against a real HTTP server on 127.0.0.1.

Signatures are checked here with hmac/hashlib directly, not with the code under test.
"""

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import ssl
import subprocess
import time

import pytest
import requests

from mlvigil.alerting import Notification
from mlvigil.alerting.delivery import Deliverer, redact, safe_url
from mlvigil.alerting.formats import markdown_escape, slack_escape
from mlvigil.alerting.rules import Receiver
from mlvigil.webhook_receiver import WebhookReceiver

from .conftest import Hook, free_port

NOW_MS = 1_795_000_045_123  # the wall clock the deliverer signs with (fixed, so payloads are exact)
DUE = 1_795_000_020_000
SECRETS = ["XXXSLACKSECRETXXX", "DINGTOKENSECRET", "SECdingsigningkey", "FEISHUHOOKSECRET", "feishu-signing-key",
           "WECOMKEYSECRET", "GENERICTOKEN42"]  # fmt: skip
TITLE = "[FIRING:1] warning m<1>&co v2 [region=<eu>]: drift on a_b*c<d>"
TEXT = "drift: a_b*c<d> PSI 0.5 (mean now 2.0)"
ALERT = {
    "fingerprint": "0123456789abcdef", "status": "firing",
    "labels": {"alertname": "psi_drift", "severity": "warning", "layer": "data", "metric": "psi", "model_id": "m<1>&co",
               "model_version": "v2", "segment": "region=<eu>", "feature": "a_b*c<d>"},
    "annotations": {"summary": "a_b*c<d> psi 0.5 > 0.2"},
    "startsAt": "2026-11-18T11:06:00.000Z", "endsAt": None, "starts_ms": 1_794_999_960_000, "ends_ms": None,
    "value": 0.5, "observed": 0.5, "baseline": None, "threshold": 0.2,
}  # fmt: skip


def notification(receiver: str, nid: str = "n-0001") -> Notification:
    return Notification(
        id=nid, status="firing", severity="warning", receiver=receiver,
        group_key='{model_id="m<1>&co",model_version="v2",segment="region=<eu>"}',
        group_labels={"model_id": "m<1>&co", "model_version": "v2", "segment": "region=<eu>"},
        alerts=[ALERT], title=TITLE, text=TEXT, window_end_ms=DUE, due_ms=DUE, actions=[], valid_for_ms=14_700_000,
    )  # fmt: skip


def receivers(base: str) -> list[Receiver]:
    return [
        Receiver("generic", "generic", f"{base}/generic/GENERICTOKEN42"),
        Receiver("slack", "slack", f"{base}/services/T000/B000/XXXSLACKSECRETXXX"),
        Receiver("dingtalk", "dingtalk", f"{base}/robot/send?access_token=DINGTOKENSECRET", secret="SECdingsigningkey"),
        Receiver("feishu", "feishu", f"{base}/open-apis/bot/v2/hook/FEISHUHOOKSECRET", secret="feishu-signing-key"),
        Receiver("wecom", "wecom", f"{base}/cgi-bin/webhook/send?key=WECOMKEYSECRET"),
        Receiver("am", "alertmanager", f"{base}/am", generator_url="https://grafana.example.com/d/x"),
        Receiver("log", "log"),
    ]


def deliverer(recs, records, dropped=None, **kw) -> Deliverer:
    kw = {"backoff_initial_s": 0.05, "backoff_max_s": 0.25, "max_total_s": 15.0, "seed": 7, **kw}
    return Deliverer(
        recs, on_attempt=lambda *a: records.append(a), on_dropped=lambda n, r: (dropped if dropped is not None else []).append((n.id, r)),
        wall_clock_ms=lambda: NOW_MS, **kw,
    )  # fmt: skip


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


def test_escaping():
    assert slack_escape("a<b>&c <!channel>") == "a&lt;b&gt;&amp;c &lt;!channel&gt;"
    assert slack_escape("_x_ a_b *y* ~z~ `w`") == "\u02cdx\u02cd a_b \u2217y\u2217 \u223cz\u223c \u02cbw\u02cb"
    assert markdown_escape("a_b*c [x](y) <font> #1 `z` ~ | @all &lt;") == (
        "a_b\u2217c [x\uff3d(y) \uff1cfont> #1 \u02cbz\u02cb \u223c | \uff20all \uff06lt;"
    )
    assert markdown_escape("# h\n> q\n  #x") == "\uff03 h\n\uff1e q\n  \uff03x"


def test_exact_payloads_and_signatures(hook, caplog):
    caplog.set_level(logging.DEBUG, logger="mlvigil")
    hook.ok_body = b'{"code":0,"errcode":0,"msg":"ok"}'
    records: list = []
    recs = receivers(hook.url)
    d = deliverer(recs, records)
    for r in recs:
        assert d.submit(notification(r.name, nid=f"id-{r.name}"))
    assert d.drain(10)
    d.close()
    got = {r["path"]: r for r in hook.requests}
    assert len(hook.requests) == 6  # the log receiver only logs
    paths = {
        "generic": "/generic/GENERICTOKEN42", "slack": "/services/T000/B000/XXXSLACKSECRETXXX", "dingtalk": "/robot/send",
        "feishu": "/open-apis/bot/v2/hook/FEISHUHOOKSECRET", "wecom": "/cgi-bin/webhook/send", "am": "/am/api/v2/alerts",
    }  # fmt: skip
    assert {r["path"]: r["headers"]["idempotency-key"] for r in hook.requests} == {
        p: f"id-{k}" for k, p in paths.items()
    }
    assert {r["headers"]["content-type"] for r in hook.requests} == {"application/json; charset=utf-8"}

    assert json.loads(got["/generic/GENERICTOKEN42"]["body"]) == notification("generic", "id-generic").to_dict()

    esc_title = "[FIRING:1] warning m&lt;1&gt;&amp;co v2 [region=&lt;eu&gt;]: drift on a_b\u2217c&lt;d&gt;"
    assert json.loads(got["/services/T000/B000/XXXSLACKSECRETXXX"]["body"]) == {
        "text": esc_title,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{esc_title}*\ndrift: a_b\u2217c&lt;d&gt; PSI 0.5 (mean now 2.0)"},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "firing · warning · id id-slack"}]},
        ],
    }

    md_title = "[FIRING:1] warning m\uff1c1>\uff06co v2 [region=\uff1ceu>]: drift on a_b\u2217c\uff1cd>"
    md_text = "drift: a_b\u2217c\uff1cd> PSI 0.5 (mean now 2.0)"
    ding = got["/robot/send"]
    assert json.loads(ding["body"]) == {
        "msgtype": "markdown",
        "markdown": {"title": md_title[:64], "text": f"#### {md_title}\n\n{md_text}"},
    }
    # DingTalk signing, checked independently: sign = base64(HMAC-SHA256(secret, f"{ts}\n{secret}")),
    # URL-encoded in the query next to the access token.
    assert ding["query"]["access_token"] == ["DINGTOKENSECRET"]
    ts = ding["query"]["timestamp"][0]
    assert ts == str(NOW_MS)
    key = b"SECdingsigningkey"
    expected = base64.b64encode(hmac.new(key, f"{ts}\n".encode() + key, hashlib.sha256).digest()).decode()
    assert ding["query"]["sign"] == [expected]  # parse_qs undid the URL encoding
    assert "%2B" in ding["raw_query"] or "%2F" in ding["raw_query"] or "%3D" in ding["raw_query"]

    fs = json.loads(got["/open-apis/bot/v2/hook/FEISHUHOOKSECRET"]["body"])
    # Feishu signing, checked independently: HMAC-SHA256 keyed with f"{timestamp}\n{secret}" over an
    # empty message, base64; timestamp in seconds.
    assert fs["timestamp"] == str(NOW_MS // 1000)
    fkey = f"{fs['timestamp']}\nfeishu-signing-key".encode()
    assert fs["sign"] == base64.b64encode(hmac.new(fkey, b"", hashlib.sha256).digest()).decode()
    assert fs == {
        "timestamp": fs["timestamp"], "sign": fs["sign"], "msg_type": "post",
        "content": {"post": {"zh_cn": {"title": TITLE.replace("<", "\uff1c"),
                                       "content": [[{"tag": "text", "text": TEXT.replace("<", "\uff1c")}]]}}},
    }  # fmt: skip

    wc = got["/cgi-bin/webhook/send"]
    assert wc["query"] == {"key": ["WECOMKEYSECRET"]}
    assert json.loads(wc["body"]) == {
        "msgtype": "markdown",
        "markdown": {"content": f'<font color="comment">FIRING warning</font>\n**{md_title}**\n{md_text}'},
    }

    (am_alert,) = json.loads(got["/am/api/v2/alerts"]["body"])
    assert am_alert == {
        "labels": ALERT["labels"],
        "annotations": {"summary": "a_b*c<d> psi 0.5 > 0.2", "description": TEXT, "notification_id": "id-am"},
        "startsAt": "2026-11-18T11:06:00.000Z",
        "endsAt": "2026-11-18T15:12:25.123Z",  # lease: max(due, now) + repeat + group interval
        "generatorURL": "https://grafana.example.com/d/x",
    }
    assert {(a[1], a[3], a[4]) for a in records} == {
        (r.name, "delivered", None if r.type == "log" else 200) for r in recs
    }
    assert "id-log" in caplog.text, "the log receiver logs the notification"
    for s in SECRETS:
        assert s not in caplog.text
        assert s not in repr(records)


def test_receiver_down_then_back_delivers_everything_once(caplog):
    caplog.set_level(logging.DEBUG, logger="mlvigil")
    port = free_port()  # nothing listens yet: connection refused
    recs = receivers(f"http://127.0.0.1:{port}")
    generic = recs[0]
    records: list = []
    dropped: list = []
    d = deliverer([generic], records, dropped)
    ids = [f"down-{i:02d}" for i in range(20)]
    for nid in ids:
        assert d.submit(notification("generic", nid))
    assert not d.submit(notification("generic", ids[0])), "already queued: a duplicate"
    time.sleep(1.0)
    assert not any(r[3] == "delivered" for r in records)
    retrying = [r for r in records if r[3] == "retrying"]
    assert retrying and all(r[4] is None and "Connection" in r[5] for r in retrying)
    hook = Hook(port=port).start()
    try:
        assert d.drain(10)
        keys = [r["headers"]["idempotency-key"] for r in hook.requests]
        assert sorted(keys) == ids, "all delivered after recovery, each once"
        assert not d.submit(notification("generic", ids[3])), "delivered ids are remembered"
        # A restarted process asks already_delivered (backed by stored attempts in the job): no resend.
        delivered = {r[0] for r in records if r[3] == "delivered"}
        d2 = deliverer([generic], records, already_delivered=delivered.__contains__)
        for nid in ids[:5]:
            d2.submit(notification("generic", nid))
        assert d2.drain(5)
        d2.close()
        assert len(hook.requests) == 20
    finally:
        d.close()
        hook.stop()
    assert dropped == []
    assert [r for r in records if r[3] == "duplicate"], "duplicates are reported"
    text = caplog.text + repr(records)
    for s in SECRETS:
        assert s not in text
    assert safe_url(generic.url) in caplog.text  # only scheme://host:port


def test_retry_after_rate_limit_codes_rejections_and_redaction(caplog):
    caplog.set_level(logging.DEBUG, logger="mlvigil")
    answers = [
        (503, b"busy", {"Retry-After": "0"}),
        # Feishu answers 200 with an error code; 11232 is its rate limit: retried. This one also
        # echoes the webhook path, which must not reach logs or records.
        (200, b'{"code":11232,"msg":"frequency limited for /open-apis/bot/v2/hook/FEISHUHOOKSECRET"}', {}),
        (200, b'{"code":0,"msg":"success"}', {}),
        (400, b"invalid_payload", {}),  # not retryable
    ]
    hook = Hook(answers=answers).start()
    records: list = []
    dropped: list = []
    recs = {r.name: r for r in receivers(hook.url)}
    d = deliverer([recs["feishu"], recs["slack"]], records, dropped)
    try:
        d.submit(notification("feishu", "r-1"))
        assert d.drain(5)
        d.submit(notification("slack", "r-2"))
        assert d.drain(5)
    finally:
        d.close()
        hook.stop()
    assert [(r[0], r[2], r[3], r[4]) for r in records] == [
        ("r-1", 1, "retrying", 503), ("r-1", 2, "retrying", 200), ("r-1", 3, "delivered", 200), ("r-2", 1, "failed", 400),
    ]  # fmt: skip
    assert "frequency limited" in records[1][5] and "FEISHUHOOKSECRET" not in records[1][5]
    assert dropped == [("r-2", "rejected")]
    for s in SECRETS:
        assert s not in caplog.text + repr(records)


def test_queue_full_is_a_give_up_with_a_failed_record():
    records: list = []
    dropped: list = []
    d = deliverer(receivers("http://127.0.0.1:9"), records, dropped, queue_size=2, start=False)
    assert [d.submit(notification("generic", f"q-{i}")) for i in range(3)] == [True, True, False]
    # The queue is per receiver: another receiver still takes notifications.
    assert d.submit(notification("slack", "q-slack"))
    assert dropped == [("q-2", "queue_full")]
    assert records == [("q-2", "generic", 0, "failed", None, "queue_full")]
    d.close()
    assert sorted(dropped[1:]) == [("q-0", "shutdown"), ("q-1", "shutdown"), ("q-slack", "shutdown")], (
        "close hands the queues back: not a give-up, the caller still owns them"
    )
    assert len(records) == 1, "a shutdown is not recorded as a failure"


def test_unknown_receiver_is_a_give_up():
    records: list = []
    dropped: list = []
    d = deliverer(receivers("http://127.0.0.1:9")[:1], records, dropped, start=False)
    assert not d.submit(notification("nowhere", "u-1"))
    d.close()
    assert dropped == [("u-1", "unknown_receiver")]
    assert records == [("u-1", "nowhere", 0, "failed", None, "unknown_receiver")]


def test_a_hanging_receiver_does_not_delay_another():
    """One lane per receiver: while one receiver holds its request, the other gets its own; at
    close the stuck notification is handed back (not delivered, not given up)."""
    records: list = []
    dropped: list = []
    with WebhookReceiver(answer=lambda m: "hang") as stuck, WebhookReceiver() as healthy:
        recs = [Receiver("stuck", "generic", stuck.url, timeout_s=60.0), Receiver("healthy", "generic", healthy.url)]
        d = deliverer(recs, records, dropped)
        try:
            assert d.submit(notification("stuck", "h-stuck"))
            wait_until(lambda: stuck.received(), 10, "the stuck receiver holds a request")
            assert d.submit(notification("healthy", "h-ok"))
            wait_until(lambda: "h-ok" in healthy.accepted, 10, "the healthy receiver got its notification")
            assert d.pending("stuck") == 1, "the stuck one is still in flight"
            assert [r[:4] for r in records] == [("h-ok", "healthy", 1, "delivered")]
            d.close(timeout=0.5)
            assert dropped == [("h-stuck", "shutdown")]
        finally:
            stuck.release()
            d.close(timeout=2)
    assert dropped == [("h-stuck", "shutdown")], "handed back once"
    assert not [r for r in records if r[0] == "h-stuck" and r[3] in ("delivered", "failed")]


def test_delivery_options():
    from mlvigil.alert_operators import delivery_options

    assert delivery_options(None) == {"max_total_s": 600.0, "end_wait_s": 600.0, "queue_size": 1000,
                                      "connect_timeout_s": 5.0}  # fmt: skip
    opts = delivery_options({"delivery": {"max_total": "2m", "end_wait": "30s", "queue_size": 5}})
    assert opts == {"max_total_s": 120.0, "end_wait_s": 30.0, "queue_size": 5, "connect_timeout_s": 5.0}
    with pytest.raises(ValueError, match="unknown keys"):
        delivery_options({"delivery": {"max_totl": "2m"}})


def test_retries_exhausted_rejected_and_read_timeouts_are_stored_give_ups():
    records: list = []
    dropped: list = []
    with (
        WebhookReceiver(answer=lambda m: 500) as failing,
        WebhookReceiver(answer=lambda m: 404) as rejecting,
        WebhookReceiver(answer=lambda m: "hang", hang_limit_s=3) as hanging,
    ):
        recs = [
            Receiver("failing", "generic", failing.url),
            Receiver("rejecting", "generic", rejecting.url),
            Receiver("hanging", "generic", hanging.url, timeout_s=0.3),
        ]
        d = deliverer(recs, records, dropped, max_total_s=1.0)
        for r in recs:
            d.submit(notification(r.name, f"x-{r.name}"))
        assert d.drain(20)
        d.close()
    assert sorted(dropped) == [("x-failing", "retries_exhausted"), ("x-hanging", "retries_exhausted"),
                               ("x-rejecting", "rejected")]  # fmt: skip
    final = {r[0]: r for r in records if r[3] == "failed"}
    assert final["x-failing"][4] == 500 and final["x-failing"][5] == "retries_exhausted: HTTP 500"
    assert final["x-rejecting"][4] == 404 and final["x-rejecting"][5] == "rejected: HTTP 404"
    assert final["x-hanging"][4] is None and final["x-hanging"][5].startswith("retries_exhausted: ReadTimeout")
    assert [r[3] for r in records if r[0] == "x-rejecting"] == ["failed"], "a rejection is not retried"
    assert len(failing.received()) >= 2 and len(hanging.received()) >= 2, "retried until the budget ran out"


def test_requests_session_per_receiver_verifies_tls(tmp_path):
    """HTTPS with a self-signed certificate: TLS verification is on, so it is refused (and the
    error is an SSLError, not a silent success). Each receiver has its own session."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with WebhookReceiver() as tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        tls.server.socket = ctx.wrap_socket(tls.server.socket, server_side=True)
        url = tls.url.replace("http://", "https://")
        sessions: list = []

        def factory():
            sessions.append(requests.Session())
            return sessions[-1]

        records: list = []
        dropped: list = []
        recs = [
            Receiver("tls", "generic", url),
            Receiver("plain", "generic", "http://127.0.0.1:9"),
            Receiver("log", "log"),
        ]
        d = deliverer(recs, records, dropped, max_total_s=0.5, session_factory=factory)
        d.submit(notification("tls", "t-1"))
        assert d.drain(20)
        d.close()
    assert len(sessions) == 2 and sessions[0] is not sessions[1], "one session per HTTP receiver"
    assert all(s.trust_env and s.verify is True for s in sessions)
    assert dropped == [("t-1", "retries_exhausted")]
    assert "SSLError" in records[-1][5] and tls.accepted == {}


def test_proxies_come_from_the_environment(monkeypatch):
    """requests reads HTTP_PROXY (trust_env): the request goes to the proxy, with the target's
    absolute URL in its request line."""
    with WebhookReceiver() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.rsplit("/", 1)[0])
        monkeypatch.setenv("http_proxy", proxy.url.rsplit("/", 1)[0])
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        records: list = []
        target = "http://192.0.2.10:8080/hook/GENERICTOKEN42"  # TEST-NET: only the proxy can answer
        d = deliverer([Receiver("generic", "generic", target)], records)
        d.submit(notification("generic", "p-1"))
        assert d.drain(10)
        d.close()
    (req,) = proxy.received()
    assert req["path"] == target and req["key"] == "p-1"
    assert records[-1][3] == "delivered"


def test_gives_up_after_max_total_time():
    records: list = []
    dropped: list = []
    d = deliverer(receivers(f"http://127.0.0.1:{free_port()}")[:1], records, dropped, max_total_s=0.3)
    d.submit(notification("generic", "g-1"))
    assert d.drain(5)
    d.close()
    assert records[-1][3] == "failed" and dropped == [("g-1", "retries_exhausted")]
    assert 2 <= len(records) <= 8


def test_redact():
    url = "https://hooks.example.com/services/T0/B0/SECRETSECRET?token=abc123xyz"
    assert redact(f"failed to POST {url}: boom", [url]) == "failed to POST ***: boom"
    assert redact("see https://u:p@host.example:8443/path?q=1") == "see https://host.example:8443"


@pytest.mark.parametrize("status", [408, 429, 500, 502])
def test_retryable_statuses(status):
    from mlvigil.alerting.formats import check_response

    assert check_response("generic", status, b"") == (False, True, f"HTTP {status}")
    assert check_response("dingtalk", 200, b'{"errcode":310000,"errmsg":"sign not match"}')[:2] == (False, False)
    assert check_response("wecom", 200, b'{"errcode":0,"errmsg":"ok"}') == (True, False, "")


def test_notification_round_trips_as_json():
    n = notification("generic")
    assert Notification.from_dict(json.loads(json.dumps(n.to_dict()))) == n
    assert dataclasses.asdict(n) == n.to_dict()
