"""The Java decoder called directly (py4j): a verdict for every way an event can be wrong, and the packing
of the monitored columns that the window aggregates read.

Every dead-letter verdict of the Java source (each `fail("code", reason)` call, by the shape of its
reason) must have a case here: test_every_verdict_of_the_java_source_has_a_case reads them from the
source, so a new verdict without a case fails.
"""

import json
import math
import re
import struct
from pathlib import Path

import orjson
import pytest

from mlvigil.categories import category_text
from tests.java_gateway import feature_event, label_event, now_ms, prediction_event, row_dict, unpack

ROOT = Path(__file__).resolve().parents[2]
JAVA_SRC = ROOT / "udfs" / "java" / "src" / "io" / "mlvigil" / "udf"
DAY = 86_400_000


def _drop(event: dict, key: str) -> dict:
    return {k: v for k, v in event.items() if k != key}


def _with(event: dict, **features) -> dict:
    return {**event, "features": {**event["features"], **features}}


def decoder_cases() -> dict[str, tuple[str, bytes | None, str | None]]:
    """case -> (stream, payload, expected reason code or None for valid)."""
    f, p, lab = feature_event(), prediction_event(), label_event()
    good = orjson.dumps(f)
    cases = {
        "null_payload": ("features", None, "malformed_json"),
        "too_large": ("features", orjson.dumps(_with(f, pad="x" * 20_001)), "too_large"),
        "not_an_object": ("features", b"[1, 2]", "not_an_object"),
        "trailing_content": ("features", good + b" {}", "malformed_json"),
        "syntax_error": ("features", b'{"request_id": }', "malformed_json"),
        "nesting_limit": ("features", good[:-1] + b', "deep": ' + b"[" * 1500 + b"]" * 1500 + b"}", "malformed_json"),
        "duplicate_key": ("features", good[:-1] + b', "model_id": "multi"}', "duplicate_key"),
        "event_time_bigint": ("features", json.dumps({**f, "event_time": 10**30}).encode(), "absurd_timestamp"),
        "event_time_not_iso": ("features", orjson.dumps({**f, "event_time": "yesterday"}), "bad_timestamp"),
        "event_time_type": ("features", orjson.dumps({**f, "event_time": True}), "wrong_type"),
        "empty_id": ("features", orjson.dumps({**f, "request_id": ""}), "missing_field"),
        "id_type": ("features", orjson.dumps({**f, "request_id": 1.5}), "wrong_type"),
        "score_absurd": ("predictions", orjson.dumps({**p, "score": 1e300}), "absurd_value"),
        "score_type": ("predictions", orjson.dumps({**p, "score": "high"}), "wrong_type"),
        "status_type": ("predictions", orjson.dumps({**p, "status": [1]}), "wrong_type"),
        "segments_type": ("features", orjson.dumps({**f, "segments": "eu"}), "wrong_type"),
        "features_type": ("features", orjson.dumps({**f, "features": [1]}), "wrong_type"),
        "too_many_features": ("features", orjson.dumps(_with(f, **{f"u{i}": i for i in range(30)})), "too_many_features"),
        "outcomes_type": ("labels", orjson.dumps({**lab, "outcomes": "x"}), "wrong_type"),
        "outcome_not_bool": ("labels", orjson.dumps({**lab, "outcomes": {"clicked": 1}}), "wrong_type"),
        "probabilities_type": ("predictions", orjson.dumps({**p, "probabilities": "x"}), "wrong_type"),
        "probabilities_values": ("predictions", orjson.dumps({**p, "probabilities": ["a"]}), "wrong_type"),
        "probability_range": ("predictions", orjson.dumps({**p, "probabilities": [0.2, 1.5]}), "absurd_value"),
        "no_request_id": ("features", orjson.dumps(_drop(f, "request_id")), "missing_field"),
        "no_model_id": ("features", orjson.dumps(_drop(f, "model_id")), "missing_field"),
        "no_model_version": ("predictions", orjson.dumps(_drop(p, "model_version")), "missing_field"),
        "no_event_time": ("features", orjson.dumps(_drop(f, "event_time")), "missing_field"),
        "no_features": ("features", orjson.dumps(_drop(f, "features")), "missing_field"),
        "no_label": ("labels", orjson.dumps(_drop(lab, "label")), "missing_field"),
        "before_2000": ("features", orjson.dumps({**f, "event_time": 631_152_000_000}), "absurd_timestamp"),
        "too_old": ("features", orjson.dumps({**f, "event_time": now_ms() - 100 * DAY}), "too_old"),
        "latency_negative": ("predictions", orjson.dumps({**p, "latency_ms": -1}), "absurd_value"),
        "status_value": ("predictions", orjson.dumps({**p, "status": "maybe"}), "wrong_type"),
        "unknown_model": ("features", orjson.dumps({**f, "model_id": "nope"}), "unknown_model"),
        "regression_label_text": ("labels", orjson.dumps({**label_event("reg"), "label": "x"}), "wrong_type"),
        "unknown_version": ("features", orjson.dumps({**f, "model_version": "v9"}), "unknown_model"),
        "numeric_gets_string": ("features", orjson.dumps(_with(f, x="a")), "wrong_type"),
        "numeric_absurd": ("features", orjson.dumps(_with(f, x=1e200)), "absurd_value"),
        "categorical_nested": ("features", orjson.dumps(_with(f, device={"a": 1})), "wrong_type"),
        # valid ones next to the edges
        "valid_features": ("features", good, None),
        "valid_fallback_version": ("features", orjson.dumps(feature_event("multi", "v7")), None),
        "valid_label_without_version": ("labels", orjson.dumps(lab), None),
        "valid_probabilities_only": ("predictions", orjson.dumps({**_drop(p, "score"), "probabilities": [0.2, 0.8]}), None),
        "valid_latency_bound": ("predictions", orjson.dumps({**p, "latency_ms": 600_000}), None),
        "valid_unmonitored_nested": ("features", orjson.dumps(_with(f, other={"a": [1]})), None),
    }  # fmt: skip
    return cases


@pytest.fixture(scope="module")
def verdicts(contract) -> dict[str, dict]:
    now = now_ms()
    return {
        name: {**row_dict(contract.java.parse(payload, stream, now)), "expected": code}
        for name, (stream, payload, code) in decoder_cases().items()
    }


@pytest.mark.parametrize("case", list(decoder_cases()))
def test_verdict(verdicts, case):
    v = verdicts[case]
    assert v["reason_code"] == v["expected"], v
    assert v["ok"] is (v["expected"] is None)
    assert bool(v["reason"]) is (not v["ok"])


def java_verdict_sites() -> dict[tuple[str, str], int]:
    """(reason code, regex of the reason) of every fail(...) call in the Java source -> its literal length.

    A reason is literals joined by code (`name + " is empty"`): the literals must appear in order,
    anything in between. Calls whose reasons have the same shape are one verdict."""
    sites: dict[tuple[str, str], int] = {}
    for path in sorted(JAVA_SRC.glob("*.java")):
        for code, expr in re.findall(r'\bfail\("(\w+)",\s*(.*?)\);', path.read_text(), flags=re.S):
            parts = re.split(r'"((?:[^"\\]|\\.)*)"', expr)
            regex, literal_len = "", 0
            for i, part in enumerate(parts):
                if i % 2:  # a string literal
                    text = part.replace('\\"', '"').replace("\\\\", "\\")
                    regex += re.escape(text)
                    literal_len += len(text)
                elif part.strip(" \n+"):  # code between literals
                    regex += ".*"
            sites[(code, regex)] = literal_len
    return sites


def test_every_verdict_of_the_java_source_has_a_case(verdicts):
    sites = java_verdict_sites()
    assert len(sites) >= 30, "the fail(...) calls of the Java source were not found"
    covered = set()
    for name, v in verdicts.items():
        if v["ok"]:
            continue
        # The most specific shape the reason starts with (the one with the most literal text; mlv_parse may
        # append to it, e.g. the sha256 of a too_large message).
        matching = [s for s in sites if s[0] == v["reason_code"] and re.match(s[1], v["reason"], flags=re.S)]
        assert matching, f"{name}: reason {v['reason']!r} has no fail(...) in the Java source"
        covered.add(max(matching, key=sites.__getitem__))
    missing = sorted(set(sites) - covered)
    assert not missing, f"verdicts of the Java source without a case in decoder_cases(): {missing}"


# --- packing --------------------------------------------------------------------------------------


def _profile(contract, model: str, version: str) -> tuple[int, dict]:
    versions = contract.catalog["models"][model]["versions"]
    index = versions.get(version, versions.get("*"))
    return index, contract.catalog["profiles"][index]


def expected_packing(contract, event: dict, stream: str) -> dict:
    """The packed columns as Python reads the contract: profile order, -0.0 folded, category indexes by text."""
    index, profile = _profile(contract, event["model_id"], event["model_version"])
    dims = contract.catalog["models"][event["model_id"]]["segments"]
    segs = event.get("segments") or {}
    values = []
    for col in profile["features"] if stream == "features" else profile["prediction"]:
        if stream == "features":
            v = event["features"].get(col["name"])
        elif col["name"] == "score":
            probs = event.get("probabilities") or []
            probs = list(probs.values()) if isinstance(probs, dict) else probs
            v = event.get("score", max(probs, default=None))
        else:
            v = event.get("predicted_label")
        if v is None:
            values.append(None)
        elif col["type"] == "numeric":
            values.append(float(v) + 0.0)
        else:
            text = category_text(v)
            values.append(("category", col["categories"].index(text) if text in col["categories"] else -1))
    return {"profile": index, "stream": 0 if stream == "features" else 1,
            "segments": [segment_text(segs.get(d)) for d in dims], "values": values}  # fmt: skip


def segment_text(value) -> str | None:
    """A segment value as the event's JSON spells it: not category text (1.0 and 1 are two segments)."""
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


PACKING_CASES = [
    ("features", feature_event()),
    ("features", feature_event(segments={"region": "日本", "tier": None})),
    ("features", feature_event(segments={"region": 7, "tier": True})),
    ("features", feature_event(segments={"region": 1.0, "tier": 2.5e-7})),
    ("features", feature_event(segments=None, features={"x": -0.0, "y": 2.5, "device": 1e23})),
    ("features", feature_event(features={"x": 0.0, "device": True, "unmonitored": [1, 2]})),
    ("features", feature_event(features={"x": None, "y": -1, "device": 3.0})),
    ("features", feature_event(features={"y": 1e-100, "device": "tablet"})),
    ("features", feature_event(features={"device": 1e-4})),
    ("features", feature_event("multi", "v7", features={"z": 2.0})),
    ("features", feature_event("reg", "v2", features={})),
    ("predictions", prediction_event()),
    ("predictions", prediction_event(score=None, probabilities={"a": 0.25, "b": 0.75}, predicted_label="1")),
    ("predictions", prediction_event(predicted_label=0.0, score=-0.0)),
    ("predictions", prediction_event(predicted_label=None)),
    ("predictions", prediction_event("multi", "v1", predicted_label="c")),
    ("predictions", prediction_event("multi", "v1", predicted_label="zz", score=None)),
    ("predictions", prediction_event("reg", "v2", predicted_label=None, score=51.5)),
]


def test_packing_of_the_monitored_columns(contract):
    now = now_ms()
    for stream, event in PACKING_CASES:
        event = {k: v for k, v in event.items() if v is not None}
        row = row_dict(contract.java.parse(orjson.dumps(event), stream, now))
        assert row["ok"], (event, row)
        got = unpack(bytes(row["packed"]), contract.catalog)
        assert got == expected_packing(contract, event, stream), event
        # -0.0 reaches the aggregates as 0.0 (Java's binary search would order it before 0.0)
        assert all(not (isinstance(v, float) and math.copysign(1.0, v) < 0 and v == 0) for v in got["values"])


def test_rows_carry_what_the_quality_join_reads(contract):
    now = now_ms()
    pred = row_dict(
        contract.java.parse(orjson.dumps(prediction_event(status="error", predicted_label=2.5)), "predictions", now)
    )
    assert (pred["is_error"], pred["latency_ms"], pred["score"], pred["predicted_label"]) == (True, 12.5, 0.7, "2.5")
    coded = row_dict(contract.java.parse(orjson.dumps(prediction_event(error_code=504)), "predictions", now))
    assert coded["is_error"] is True
    probs = prediction_event(probabilities=[0.1, 0.9])
    del probs["score"]
    assert row_dict(contract.java.parse(orjson.dumps(probs), "predictions", now))["score"] == 0.9
    lab = row_dict(contract.java.parse(orjson.dumps(label_event(label=1.0)), "labels", now))
    assert (lab["label"], lab["label_value"], lab["clicked"], lab["converted"], lab["revenue"]) == (
        "1",
        1.0,
        True,
        False,
        2.5,
    )
    assert lab["packed"] is None and lab["model_version"] is None
    text = row_dict(contract.java.parse(orjson.dumps(label_event(label="spam", outcomes=None)), "labels", now))
    assert (text["label"], text["label_value"], text["clicked"], text["revenue"]) == ("spam", None, None, None)
    reg = row_dict(contract.java.parse(orjson.dumps(label_event("reg", label=42.25)), "labels", now))
    assert (reg["label"], reg["label_value"]) == ("42.25", 42.25)
    # event_ms of a valid event is its event time, the ISO form included
    ms = now - 90_000
    iso = prediction_event(event_time=f"{_iso(ms)}")
    assert row_dict(contract.java.parse(orjson.dumps(iso), "predictions", now))["event_ms"] == ms


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_packed_numbers_are_the_json_doubles(contract):
    """Any finite double within the bound arrives bit for bit (the aggregates' input is exact)."""
    import random

    rng = random.Random(3)
    now = now_ms()
    for _ in range(200):
        v = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        if not math.isfinite(v) or abs(v) > 1e100:
            continue
        event = feature_event(features={"x": v})
        row = row_dict(contract.java.parse(orjson.dumps(event), "features", now))
        assert unpack(bytes(row["packed"]), contract.catalog)["values"][0] == v + 0.0
