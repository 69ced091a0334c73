"""Payloads per receiver type: pure functions (notification, receiver, now_ms) -> Payload.

Each returns the headers, the body bytes and what to add to the receiver's URL (a path suffix
for Alertmanager, the signing query for DingTalk). ``now_ms`` is the wall clock of the attempt,
used only for signatures and Alertmanager's endsAt lease, so a retry a minute later is signed
afresh.

Text from the data (model ids, versions, segments, feature names, all of which the engine puts
in ``title`` and ``text``) is escaped for each chat's markup before the receiver's template is
applied, titles included; the template itself is trusted configuration. Control characters
from the data are written as visible escapes (\x1b), and only the text keeps line breaks. Templates are ``str.format`` strings with
the fields title, text, status, severity, receiver, model_id, model_version, segment, group_key,
id and alert_count.
"""

import base64
import hashlib
import hmac
import json
import re
import urllib.parse
from typing import NamedTuple

from mlvigil.alerting.engine import Notification, render, rfc3339
from mlvigil.alerting.rules import LABEL_NAME, Receiver
from mlvigil.safetext import visible_controls

DEFAULT_TEMPLATES = {
    "slack": "*{title}*\n{text}",
    "dingtalk": "#### {title}\n\n{text}",
    "wecom": "**{title}**\n{text}",
    "feishu": "{text}",
    "log": "{title}\n{text}",
}
SEVERITY_COLOR = {"critical": "warning", "warning": "comment", "info": "info"}  # WeCom font colours


class Payload(NamedTuple):
    """(headers, body, url_suffix): unpacks as a tuple."""

    headers: dict[str, str]
    body: bytes
    url_suffix: str = ""


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


# Chat markup has no escape every chat honours (Slack's mrkdwn has none beyond three entities,
# and DingTalk's and WeCom's markdown subsets do not document backslash escapes), so a markup
# character from the data becomes a look-alike that is only text.
LOOKALIKE = {
    "*": "\u2217", "~": "\u223c", "`": "\u02cb", "_": "\u02cd", "<": "\uff1c", ">": "\uff1e", "#": "\uff03",
    "]": "\uff3d", "&": "\uff06", "@": "\uff20", "\\": "\u29f5",
}  # fmt: skip
_EMPHASIS = str.maketrans({c: LOOKALIKE[c] for c in "*~`"})  # bold, strike, code: anywhere
_MARKDOWN = str.maketrans({c: LOOKALIKE[c] for c in "*~`<&@"})  # + tags, entities, mentions
# A backslash escapes only the punctuation after it (or the template's, after a field's end).
_ESCAPING_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~]|$)")
# "_" opens or closes italics only at a word's edge: inside one (browsing_duration) it stays.
_EDGE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
_LINE_MARK = re.compile(r"(?m)^([ \t]*)([#>])")  # a heading or a quote where a line starts
_LINK_BRACKET = re.compile(r"\](?=[(\[])")  # [text](url), ![img](url), [text][ref]
_LINK_DEFINITION = re.compile(r"(?m)^([ \t]*\[[^\]\n]*)\](?=:)")  # [ref]: url, where a line starts


def _line_marks(s: str) -> str:
    return _LINE_MARK.sub(lambda m: m.group(1) + LOOKALIKE[m.group(2)], s)


def slack_escape(s: str) -> str:
    """Slack mrkdwn: &, < and > as the entities Slack documents (so <!channel>, <@U1> and
    <http://x|y> stay text), and bold, italics, strike, code and quotes made plain text."""
    s = _line_marks(s)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _EDGE_UNDERSCORE.sub(LOOKALIKE["_"], s.translate(_EMPHASIS))


def markdown_escape(s: str) -> str:
    """DingTalk / WeCom markdown: no tags (WeCom renders <font> and <@userid>), entities,
    mentions, emphasis, code, headings, quotes or links ([x](url), ![x](url)) from the data."""
    s = _line_marks(_ESCAPING_BACKSLASH.sub(LOOKALIKE["\\"], s).translate(_MARKDOWN))
    s = _LINK_DEFINITION.sub(lambda m: m.group(1) + LOOKALIKE["]"], _LINK_BRACKET.sub(LOOKALIKE["]"], s))
    return _EDGE_UNDERSCORE.sub(LOOKALIKE["_"], s)


def plain_escape(s: str) -> str:
    """Feishu post text elements are plain text; only an <at ...> tag is kept from forming."""
    return s.replace("<", LOOKALIKE["<"])


def template_fields(n: Notification, escape=lambda s: s) -> dict:
    """The template's fields, data-derived ones escaped; control characters written visibly
    (mlvigil.safetext), only the text keeping its line breaks."""
    g = n.group_labels
    one = lambda s: escape(visible_controls(s))  # noqa: E731
    return {
        "title": one(n.title), "text": escape(visible_controls(n.text, keep="\n")), "status": n.status,
        "severity": n.severity, "receiver": one(n.receiver), "model_id": one(g.get("model_id", "")),
        "model_version": one(g.get("model_version", "")), "segment": one(g.get("segment", "")),
        "group_key": one(n.group_key), "id": n.id, "alert_count": len(n.alerts),
    }  # fmt: skip


def _text(n: Notification, receiver: Receiver, escape) -> tuple[str, str]:
    fields = template_fields(n, escape)
    body = render(receiver.template or DEFAULT_TEMPLATES.get(receiver.type, "{title}\n{text}"), fields)
    title = render(receiver.title_template or "{title}", fields)
    return title, body


def generic(n: Notification, receiver: Receiver, now_ms: int) -> Payload:
    """The notification itself as JSON."""
    return Payload(dict(JSON_HEADERS), _json(n.to_dict()))


def slack(n: Notification, receiver: Receiver, now_ms: int) -> Payload:
    """Slack incoming webhook: fallback text + blocks (mrkdwn)."""
    title, body = _text(n, receiver, slack_escape)
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{n.status} · {n.severity} · id {n.id}"}]},
    ]
    return Payload(dict(JSON_HEADERS), _json({"text": title, "blocks": blocks}))


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu custom bot: base64(HMAC-SHA256(key = f"{timestamp}\\n{secret}", message = b""))."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def feishu(n: Notification, receiver: Receiver, now_ms: int) -> Payload:
    """Feishu custom bot, rich text ("post"): text elements are plain text, so no markup to escape."""
    title, body = _text(n, receiver, plain_escape)
    lines = [[{"tag": "text", "text": line}] for line in body.split("\n")]
    msg: dict = {"msg_type": "post", "content": {"post": {"zh_cn": {"title": title, "content": lines}}}}
    if receiver.secret:
        ts = now_ms // 1000
        msg = {"timestamp": str(ts), "sign": feishu_sign(receiver.secret, ts), **msg}
    return Payload(dict(JSON_HEADERS), _json(msg))


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk: urlencode(base64(HMAC-SHA256(key = secret, message = f"{timestamp_ms}\\n{secret}")))."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest))


def dingtalk(n: Notification, receiver: Receiver, now_ms: int) -> Payload:
    """DingTalk custom robot, markdown; signing as &timestamp=..&sign=.. on the URL."""
    title, body = _text(n, receiver, markdown_escape)
    body = body.replace("\n", "\n\n").replace("\n\n\n\n", "\n\n")
    # The title is what the chat list and the notification show: escaped as well.
    msg = {"msgtype": "markdown", "markdown": {"title": title[:64], "text": body}}
    suffix = ""
    if receiver.secret:
        suffix = f"timestamp={now_ms}&sign={dingtalk_sign(receiver.secret, now_ms)}"
    return Payload(dict(JSON_HEADERS), _json(msg), suffix)


def wecom(n: Notification, receiver: Receiver, now_ms: int) -> Payload:
    """WeCom (企业微信) group robot, markdown (content at most 4096 bytes)."""
    _, body = _text(n, receiver, markdown_escape)
    color = SEVERITY_COLOR.get(n.severity, "info")
    content = f'<font color="{color}">{n.status.upper()} {n.severity}</font>\n{body}'
    raw = content.encode()
    if len(raw) > 4096:
        content = raw[:4090].decode("utf-8", errors="ignore") + "…"
    return Payload(dict(JSON_HEADERS), _json({"msgtype": "markdown", "markdown": {"content": content}}))


def _label_name(k: str) -> str:
    return k if LABEL_NAME.match(k) else re.sub(r"[^A-Za-z0-9_]", "_", k if k[:1].isalpha() else "_" + k)


def alertmanager(n: Notification, receiver: Receiver, now_ms: int) -> Payload:
    """Alertmanager API v2: POST {url}/api/v2/alerts, a JSON list of postable alerts.

    A firing alert's endsAt is a lease: max(due, now) + valid_for_ms (repeat + group interval),
    within which the engine sends the still-firing group again; Alertmanager resolves it by
    itself if that never happens (say the job is gone).
    """
    alerts = []
    for a in n.alerts:
        labels = {_label_name(k): str(v) for k, v in a["labels"].items() if str(v) != ""}
        annotations = {_label_name(k): str(v) for k, v in a["annotations"].items()}
        annotations.setdefault("description", n.text)
        annotations["notification_id"] = n.id
        ends = a.get("ends_ms") if a["status"] == "resolved" else max(n.due_ms, now_ms) + n.valid_for_ms
        item = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(a["starts_ms"]),
            "endsAt": rfc3339(ends),
        }
        if receiver.generator_url:
            item["generatorURL"] = receiver.generator_url
        alerts.append(item)
    return Payload(dict(JSON_HEADERS), _json(alerts), "/api/v2/alerts")


def log_line(n: Notification, receiver: Receiver) -> str:
    """One line of the job's log: a line break from the data cannot forge another record."""
    return visible_controls(_text(n, receiver, lambda s: s)[1])


BUILDERS = {
    "generic": generic, "slack": slack, "feishu": feishu, "dingtalk": dingtalk, "wecom": wecom,
    "alertmanager": alertmanager,
}  # fmt: skip


def build(n: Notification, receiver: Receiver, now_ms: int) -> Payload:
    return BUILDERS[receiver.type](n, receiver, now_ms)


def target_url(receiver: Receiver, payload: Payload) -> str:
    """The receiver's URL with the payload's path suffix or signing query."""
    url = receiver.url
    if not payload.url_suffix:
        return url
    if payload.url_suffix.startswith("/"):
        return url.rstrip("/") + payload.url_suffix
    return url + ("&" if urllib.parse.urlsplit(url).query else "?") + payload.url_suffix


# Chat APIs answer HTTP 200 with an error code in the body. Rate limits are worth a retry.
_RETRYABLE_CODES = {"feishu": {11232, 9499}, "dingtalk": {130101, -1}, "wecom": {45009, -1}}


def check_response(receiver_type: str, http_status: int, body: bytes) -> tuple[bool, bool, str]:
    """(delivered, retryable, error) from an HTTP answer."""
    if http_status == 429 or http_status == 408 or http_status >= 500:
        return False, True, f"HTTP {http_status}"
    if not 200 <= http_status < 300:
        return False, False, f"HTTP {http_status}"
    if receiver_type in _RETRYABLE_CODES:
        try:
            d = json.loads(body or b"{}")
        except ValueError:
            return False, False, "answer is not JSON"
        code = d.get("code", d.get("StatusCode", d.get("errcode", 0))) if isinstance(d, dict) else 0
        if code not in (0, None):
            msg = str(d.get("msg") or d.get("errmsg") or "")[:200]
            return False, code in _RETRYABLE_CODES[receiver_type], f"{receiver_type} error {code}: {msg}"
    return True, False, ""
