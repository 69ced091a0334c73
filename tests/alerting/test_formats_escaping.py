"""Hostile names from the data (model ids, segment values, feature names) in every chat format,
checked on the payload a real HTTP receiver gets: no mention, link, tag, emphasis, heading,
quote or control character from the data survives as markup; the names stay readable.

The checks are independent of the code under test: regexes for each chat's markup, and the
template's own markup counted (what the receiver's template adds is all that may be there)."""

import json
import logging
import re

import pytest

from mlvigil.alerting import AlertEngine, Notification
from mlvigil.alerting.delivery import Deliverer
from mlvigil.alerting.engine import describe
from mlvigil.alerting.rules import Receiver, Routing, Rule

from .conftest import MIN, feature_row

FEATURE = "*bold* <!channel> [link](http://x) @all _it_ ~s~ `c` &amp;\n# heading\n> quote\r\x1b[31mred\x1b]0;title\x07"
MODEL = "<@U123>&co"
SEGMENT = "region=<!here>|![img](http://y)"
# Markup and control sequences that must not reach a chat from the data.
CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def hostile_notification(receiver: str) -> Notification:
    """A notification the engine itself writes (title and text) for a hostile feature name."""
    labels = {"model_id": MODEL, "model_version": "v1\nRESOLVED", "segment": SEGMENT}
    alert = {"status": "firing", "severity": "warning", "rule": "psi_drift", "fingerprint": "f0", "layer": "data",
             "metric": "psi", "value": 0.5, "threshold": 0.2, "op": ">", "context": {"psi": 0.5},
             "labels": {**labels, "feature": FEATURE}, "annotations": {}, "starts_ms": 0, "ends_ms": None}  # fmt: skip
    title, text, _ = describe(labels, [alert], [])
    assert FEATURE in title and FEATURE in text  # the engine put the raw name in: escaping is the format's job
    return Notification(
        id=f"id-{receiver}", status="firing", severity="warning", receiver=receiver, group_key=json.dumps(labels),
        group_labels=labels, alerts=[alert], title=title, text=text, window_end_ms=MIN, due_ms=MIN, actions=[],
        valid_for_ms=MIN,
    )  # fmt: skip


def deliver(hook, receivers: list[Receiver]) -> dict[str, dict]:
    d = Deliverer(receivers, on_attempt=lambda *a: None, backoff_initial_s=0.05, max_total_s=5.0)
    try:
        for r in receivers:
            assert d.submit(hostile_notification(r.name))
        assert d.drain(10)
    finally:
        d.close()
    return {r["path"].rsplit("/", 1)[-1]: json.loads(r["body"]) for r in hook.requests}


def strings(x) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in strings(v)]
    return []


def assert_readable(texts: list[str]) -> None:
    joined = "\n".join(texts)
    for word in ("bold", "channel", "link", "heading", "quote", "red", "U123", "region", "img"):
        assert word in joined, (word, joined)
    assert "\\x1b" in joined and "\\r" in joined, "control characters are shown as escapes, not dropped"
    assert not CONTROLS.search(joined), repr(joined)


def assert_no_markdown(text: str, template_stars: int) -> None:
    """CommonMark-ish markup (DingTalk, WeCom): only what the template adds."""
    assert text.count("*") == template_stars, text
    assert not re.search(r"\]\s*[(\[]", text), "a link or an image"
    assert not re.search(r"(?m)^\s*(#(?!### )|>)", text.split("\n", 1)[1]), "a heading or a quote from the data"
    assert not re.search(r"[`~]", text) and not re.search(r"(?<![^\W_])_|_(?![^\W_])", text), "code/strike/italics"
    assert "@" not in text and "&" not in text, "a mention or an entity"


@pytest.fixture
def payloads(hook):
    hook.ok_body = b'{"code":0,"errcode":0}'
    base = hook.url
    return deliver(hook, [
        Receiver("slack", "slack", f"{base}/slack"),
        Receiver("dingtalk", "dingtalk", f"{base}/dingtalk", secret="k"),
        Receiver("wecom", "wecom", f"{base}/wecom"),
        Receiver("feishu", "feishu", f"{base}/feishu"),
        Receiver("slack-own", "slack", f"{base}/slack-own", template="{model_id} / {segment}: {title}",
                 title_template="{model_version} {title}"),
    ])  # fmt: skip


def test_slack(payloads):
    for name in ("slack", "slack-own"):
        p = payloads[name]
        texts = strings(p)
        assert_readable(texts)
        for t in texts:
            # Mentions, links and every <...> control sequence need a raw <; quotes a raw > at a line start.
            assert "<" not in t and ">" not in t, t
            assert not re.search(r"&(?!amp;|lt;|gt;)", t), "only the three entities Slack documents"
            assert not re.search(r"[`~]", t) and not re.search(r"(?<![^\W_])_|_(?![^\W_])", t), t
            assert "\n" not in p["text"], "the fallback text (the title) is one line"
        body = p["blocks"][0]["text"]["text"]
        assert body.count("*") == (2 if name == "slack" else 0), body  # the default template's bold title
        assert "&lt;!channel&gt;" in body and "&lt;@U123&gt;&amp;co" in body
    assert "v1\\nRESOLVED" in payloads["slack-own"]["text"], "a line break in a single-line field is shown"


def test_dingtalk(payloads):
    md = payloads["dingtalk"]["markdown"]
    assert_readable([md["title"], md["text"]])
    assert md["text"].startswith("#### ") and "\n" not in md["title"]
    assert_no_markdown(md["text"], template_stars=0)
    assert_no_markdown("title\n" + md["title"], template_stars=0)
    assert "<" not in md["title"] + md["text"]


def test_wecom(payloads):
    content = payloads["wecom"]["markdown"]["content"]
    assert_readable([content])
    head, rest = content.split("\n", 1)
    assert head == '<font color="comment">FIRING warning</font>'  # the format's own markup, then nothing else
    assert "<" not in rest  # no tag (<font>, <@userid>); a > is markup only where a line starts
    assert_no_markdown("-\n" + rest, template_stars=4)  # **{title}**


def test_feishu(payloads):
    post = payloads["feishu"]["content"]["post"]["zh_cn"]
    assert_readable([post["title"], *strings(post["content"])])
    # Plain-text elements only: nothing from the data can become an at-mention, link or image element.
    assert {e["tag"] for line in post["content"] for e in line} == {"text"}
    assert "<" not in json.dumps(post, ensure_ascii=False)


def test_log_receiver_keeps_one_record_per_line(caplog):
    """The log receiver writes the notification to the job's log: one record, one line."""
    caplog.set_level(logging.INFO, logger="mlvigil")
    routing = Routing({"log": Receiver("log", "log")}, {"warning": ["log"]}, group_wait_ms=0)
    engine = AlertEngine([Rule("psi_drift", "data", "psi", threshold=0.2)], routing, correlation_window_ms=0)
    state: dict = {}
    notes = engine.evaluate(state, [feature_row(FEATURE, 0.5)], MIN) + engine.advance(state, 10 * MIN)
    assert notes
    d = Deliverer(routing.receivers, on_attempt=lambda *a: None)
    for n in notes:
        d.submit(n)
    assert d.drain(5)
    d.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "mlvigil.alerting.delivery"]
    assert lines and all("\n" not in m and "\r" not in m and "\x1b" not in m for m in lines), lines
    assert any("\\x1b[31mred" in m for m in lines), lines
