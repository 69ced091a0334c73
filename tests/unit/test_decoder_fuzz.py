"""The Java decoder under fuzzing, called directly through PyFlink's py4j gateway (no job).

Whatever the bytes, ParseEventFunction.Parser gives a verdict: valid, or one documented reason
code (schemas/README.md); it never throws. mlv_event_time gives the event time of valid events
only (0 otherwise), so invalid input can never move the watermark. Targeted properties cover
duplicate keys, size and feature limits, non-finite numbers, deep nesting and time bounds.
"""

import hashlib
import json
import re
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvigil import synth
from mlvigil.catalog import MAX_EVENT_AGE_MS, REASON_CODES, catalog_key, compile_catalog, encode_catalog
from mlvigil.config import parse_config
from mlvigil.profile import build_profile, save_profile

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400_000
MAX_MESSAGE = 16_384  # small limits, so the fuzzer reaches them cheaply
MAX_FEATURES = 40
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


CODES = set(REASON_CODES)


class Decoder:
    """ParseEventFunction.Parser and EventTimeFunction in the gateway JVM, for one catalog."""

    def __init__(self, gateway, encoded: str):
        udf = gateway.jvm.io.mlvigil.udf
        self.gateway = gateway
        self.catalog = udf.MonitorCatalog.fromEncoded(encoded)
        self.key = catalog_key(encoded)
        self.parser = getattr(udf, "ParseEventFunction$Parser").forThread()
        self.event_time_fn = udf.EventTimeFunction()

    def instant(self, ms: int | None):
        return None if ms is None else self.gateway.jvm.java.time.Instant.ofEpochMilli(ms)

    def verdict(self, payload: bytes | None, stream: str = "features", kafka_ms: int | None = None,
                now_ms: int | None = None) -> dict:  # fmt: skip
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        row = self.parser.parseAt(payload, stream, self.instant(kafka_ms), now_ms, self.catalog)
        names = ["ok", "reason_code", "reason", "request_id", "model_id", "model_version", "event_ms"]
        out = {n: row.getField(i) for i, n in enumerate(names)}
        out["dl_payload"] = row.getField(17)
        return out

    def event_time(self, payload: bytes | None, stream: str = "features", kafka_ms: int | None = None) -> int:
        return self.event_time_fn.eval(payload, stream, self.instant(kafka_ms), self.key)

    def remembered(self, payload: bytes | None, stream: str = "features", kafka_ms: int | None = None) -> dict:
        """What mlv_parse emits right after mlv_event_time saw the same record."""
        row = self.parser.parse(payload, stream, self.instant(kafka_ms), self.catalog)
        return {"ok": row.getField(0), "reason_code": row.getField(1), "event_ms": row.getField(6)}


def _catalog(tmp: Path, **limits) -> str:
    models = {}
    for m in synth.MODELS:
        profile = build_profile(synth.training_columns(m, 500), m, "v1")
        save_profile(profile, tmp / f"{m}.json")
        models[m] = {"segments": synth.SEGMENTS[m], "profiles": {"v1": str(tmp / f"{m}.json")}}
    raw = {"models": models, "limits": {"max_message_bytes": MAX_MESSAGE, "max_features": MAX_FEATURES, **limits}}
    return encode_catalog(compile_catalog(parse_config(raw)))


@pytest.fixture(scope="module")
def decoder(gateway, tmp_path_factory) -> Decoder:
    return Decoder(gateway, _catalog(tmp_path_factory.mktemp("catalog")))


@pytest.fixture(scope="module")
def backfill_decoder(gateway, tmp_path_factory) -> Decoder:
    return Decoder(gateway, _catalog(tmp_path_factory.mktemp("catalog"), backfill=True))


def now_ms() -> int:
    return int(time.time() * 1000)


def feature_event(**changes) -> dict:
    e = {
        "request_id": "r-1",
        "model_id": "recsys",
        "model_version": "v1",
        "event_time": now_ms() - 60_000,
        "segments": {"user_type": "new", "region": "eu"},
        "features": {"age": 31, "browsing_duration": 9.5, "items_viewed": 3, "price_sensitivity": 0.4,
                     "device": "ios"},
    }  # fmt: skip
    e.update(changes)
    return e


def check_verdict(d: Decoder, payload: bytes | None, stream: str = "features", kafka_ms: int | None = None) -> dict:
    """The invariants every input must meet; returns the verdict."""
    v = d.verdict(payload, stream, kafka_ms)
    assert v["ok"] in (True, False)
    if v["ok"]:
        assert v["reason_code"] is None and v["event_ms"] is not None
        assert v["dl_payload"] is None
    else:
        assert v["reason_code"] in CODES, v
        assert v["reason"]
    # The watermark column agrees with mlv_parse's verdict on the same record.
    wm = d.event_time(payload, stream, kafka_ms)
    again = d.remembered(payload, stream, kafka_ms)
    assert wm == (again["event_ms"] if again["ok"] else 0)
    if payload is not None and len(payload) > MAX_MESSAGE:
        assert v["reason_code"] == "too_large"
    return v


# --- JSON-ish input: values of every type, nested, with event-shaped keys -------------------------

KEYS = st.sampled_from(["request_id", "model_id", "model_version", "event_time", "features", "segments",
                        "score", "probabilities", "predicted_label", "latency_ms", "status", "error_code",
                        "label", "outcomes", "age", "device", "x"])  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["recsys", "fraud", "v1", "ok", "error", "2026-01-01T00:00:00Z", "1970-01-01T00:00:00Z"])
)
JSONISH = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(KEYS, kids, max_size=6),
                       max_leaves=25)  # fmt: skip
STREAMS = st.sampled_from(["features", "predictions", "labels"])


@FUZZ
@given(st.binary(max_size=300), STREAMS)
def test_random_bytes_get_a_verdict(decoder, payload, stream):
    v = check_verdict(decoder, payload, stream)
    assert not v["ok"] or payload.lstrip().startswith(b"{")


@FUZZ
@given(st.dictionaries(KEYS, JSONISH, max_size=10), STREAMS, st.none() | st.integers(0, 2**42))
def test_random_objects_get_a_verdict(decoder, doc, stream, kafka_ms):
    check_verdict(decoder, json.dumps(doc).encode(), stream, kafka_ms)


@FUZZ
@given(
    st.sampled_from(["event_time", "model_id", "request_id", "age", "region", "features", "deep"]),
    st.integers(0, 2),
)
def test_duplicate_keys_anywhere_are_duplicate_key(decoder, key, where):
    good = orjson.dumps(feature_event()).decode()
    later = json.dumps(now_ms() + 20 * 3600 * 1000)
    dup = {
        "event_time": f', "event_time": {later}',
        "model_id": ', "model_id": "fraud"',
        "request_id": ', "request_id": "r-2"',
    }
    if key in dup:
        text = good[:-1] + dup[key] + "}"
    elif key == "age":
        text = good.replace('"age":31', '"age":31,"age":32')
    elif key == "region":
        text = good.replace('"region":"eu"', '"region":"eu","region":"us"')
    elif key == "features":
        text = good[:-1] + ', "features": {"age": 1}}'
    else:  # inside an unmonitored nested value, which the decoder skips
        text = good[:-1] + ', "extra": [{"a": {"b": 1, "b": 2}}]}'
    if where == 1:
        text = text.replace('"request_id":"r-1",', "", 1) if key != "request_id" else text
    v = check_verdict(decoder, text.encode())
    assert v["reason_code"] == "duplicate_key", (text, v)
    assert decoder.event_time(text.encode()) == 0


@FUZZ
@given(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e300", b"-1e101", b"1e-400", b'"1e400"']),
       st.sampled_from(["age", "unmonitored", "score", "latency_ms"]))  # fmt: skip
def test_non_finite_numbers(decoder, token, field):
    if field in ("age", "unmonitored"):
        doc = feature_event()
        doc["features"][field] = "@@"
        stream = "features"
    else:
        doc = {k: v for k, v in feature_event().items() if k != "features"}
        doc[field] = "@@"
        stream = "predictions"
    payload = orjson.dumps(doc).replace(b'"@@"', token)
    v = check_verdict(decoder, payload, stream)
    if token in (b"NaN", b"Infinity", b"-Infinity"):
        assert v["reason_code"] == "malformed_json"  # not JSON
    elif token in (b"1e400", b"-1e400", b"1e300", b"-1e101"):  # infinite, or would overflow the statistics
        assert v["reason_code"] == ("absurd_value" if field != "unmonitored" else None)
    elif token == b'"1e400"':
        assert v["reason_code"] == ({"age": "wrong_type", "score": "wrong_type", "latency_ms": "wrong_type"}.get(field))
    else:
        assert v["ok"]


@FUZZ
@given(st.sampled_from([1, 1000, 100_000]), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_never_throws(decoder, depth, opener):
    inner = opener * depth + "1" + ("]" if opener == "[" else "}") * depth
    payload = orjson.dumps(feature_event())[:-1] + b', "nested": ' + inner.encode() + b"}"
    v = check_verdict(decoder, payload)
    if len(payload) <= MAX_MESSAGE and depth < 500:
        assert v["ok"]
    elif len(payload) <= MAX_MESSAGE:
        assert v["reason_code"] == "malformed_json"  # Jackson's nesting limit


@FUZZ
@given(st.integers(1, 4 * MAX_MESSAGE), st.sampled_from(["string", "array", "features"]))
def test_huge_strings_and_arrays(decoder, size, kind):
    doc = feature_event()
    if kind == "string":
        doc["features"]["device"] = "x" * size
    elif kind == "array":
        doc["extra"] = [0] * (size // 2)
    else:
        doc["features"] = {f"f{i}": i for i in range(size // 10)}
    payload = orjson.dumps(doc)
    v = check_verdict(decoder, payload)
    if len(payload) > MAX_MESSAGE:
        assert v["reason_code"] == "too_large"
        assert bytes(v["dl_payload"]) == payload[:4096]
        assert str(len(payload)) in v["reason"] and hashlib.sha256(payload).hexdigest() in v["reason"]
    elif kind == "features" and size // 10 > MAX_FEATURES:
        assert v["reason_code"] == "too_many_features"
    else:
        assert v["ok"], v


@FUZZ
@given(
    st.sampled_from(
        [
            "1970",
            "2100",
            "negative",
            "too_old",
            "recent",
            "future_20h",
            "future_2d",
            "iso_far",
            "iso_overflow",
            "huge_int",
        ]
    ),
    st.booleans(),
)
def test_event_time_bounds(decoder, backfill_decoder, when, iso):
    now = now_ms()
    ms = {"1970": 86_400_000, "2100": 4_102_444_800_000, "negative": -5, "too_old": now - 120 * DAY,
          "recent": now - 30 * 60_000, "future_20h": now + 20 * 3600_000, "future_2d": now + 2 * DAY,
          "iso_far": None, "iso_overflow": None, "huge_int": None}[when]  # fmt: skip
    if when == "iso_far":
        value = "+99999-01-01T00:00:00Z"
    elif when == "iso_overflow":
        value = "-999999999-01-01T00:00:00Z"
    elif when == "huge_int":
        value = 10**30
    elif iso and ms > 0:
        value = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
    else:
        value = ms
    payload = json.dumps(feature_event(event_time=value)).encode()
    v = check_verdict(decoder, payload)
    expected = {"1970": "absurd_timestamp", "2100": "absurd_timestamp", "negative": "absurd_timestamp",
                "too_old": "too_old", "recent": None, "future_20h": None, "future_2d": "absurd_timestamp",
                "iso_far": "absurd_timestamp", "iso_overflow": "absurd_timestamp",
                "huge_int": "absurd_timestamp"}[when]  # fmt: skip
    assert v["reason_code"] == expected, v
    # A backfill keeps old events; the other bounds stay.
    b = check_verdict(backfill_decoder, payload)
    assert b["reason_code"] == (None if when == "too_old" else expected)


def test_future_bound_uses_processing_time_and_kafka_time(decoder):
    now = now_ms()
    ahead = orjson.dumps(feature_event(event_time=now + 20 * 3600_000))
    # A broker timestamp two days ahead does not let an event claim 2.5 days ahead.
    far = orjson.dumps(feature_event(event_time=now + 60 * 3600_000))
    assert check_verdict(decoder, far, kafka_ms=now + 2 * DAY)["reason_code"] == "absurd_timestamp"
    # An old broker timestamp bounds the event too (the existing rule).
    assert check_verdict(decoder, ahead, kafka_ms=now - 2 * DAY)["reason_code"] == "absurd_timestamp"
    assert check_verdict(decoder, ahead, kafka_ms=now)["ok"]


def test_too_old_is_the_minute_retention_minus_the_margin(decoder):
    now = now_ms()
    just_in = orjson.dumps(feature_event(event_time=now - MAX_EVENT_AGE_MS + 60_000))
    just_out = orjson.dumps(feature_event(event_time=now - MAX_EVENT_AGE_MS - 60_000))
    assert decoder.verdict(just_in, now_ms=now)["ok"]
    assert decoder.verdict(just_out, now_ms=now)["reason_code"] == "too_old"


def test_invalid_events_never_give_a_watermark_time(decoder):
    now = now_ms() + 20 * 3600_000
    for payload in [
        orjson.dumps(feature_event(event_time=now, model_id="unknown")),
        orjson.dumps(feature_event(event_time=now, model_version="v9")),
        orjson.dumps(feature_event(event_time=now, features={"age": "thirty"})),
        orjson.dumps(feature_event(event_time=now))[:-1] + b', "event_time": ' + str(now).encode() + b"}",
    ]:
        assert decoder.event_time(payload) == 0
    assert decoder.event_time(orjson.dumps(feature_event(event_time=now))) == now


def test_every_reason_code_is_documented(decoder):
    text = (ROOT / "schemas" / "README.md").read_text()
    table = text.split("## Dead-letter reason codes", 1)[1]
    assert set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M)) == CODES
    java = "".join(p.read_text() for p in (ROOT / "udfs" / "java" / "src").rglob("*.java"))
    assert set(re.findall(r'fail\("(\w+)"', java)) == CODES - {"late"}
    assert check_verdict(decoder, None)["reason_code"] == "malformed_json"
