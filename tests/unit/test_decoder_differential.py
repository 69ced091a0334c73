"""The strict scanner (udfs/java/.../StrictJsonScanner.java, EventDecoder's fast path) against two references
on thousands of random and mutated events: Jackson's parser, which decided every event before the scanner
existed and still decides whatever the scanner gives up on (the whole mlv_parse row must be identical), and
Python's json with duplicate keys and NaN/Infinity rejected (the verdict's JSON-level reason code, and the
decoded fields of a valid event).

Inputs: valid events of the three streams, and mutations of them: duplicate keys at any depth, odd numbers
(1e400, -0, -0.0, 1E-7, 19- and 400-digit integers, long fractions), escapes and surrogates (pairs, lone
ones, escaped quotes), raw UTF-8 (valid, overlong, encoded surrogates, truncated), deep nesting around the
scanner's and Jackson's limits, whitespace, BOMs, trailing content, and random byte edits.
"""

import json
import random
import re

import orjson
import pytest

from tests.java_gateway import feature_event, label_event, now_ms, prediction_event, row_dict, unpack
from tests.unit.test_java_decoder import expected_packing

JSON_CODES = {"malformed_json", "duplicate_key", "not_an_object"}
N_RANDOM = 2500

ODD_NUMBERS = [b"1e400", b"-1e400", b"-0", b"-0.0", b"0.0", b"1E-7", b"1e-400", b"0e999", b"2.5E+3", b"123456789012345678",
               b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808", b"-9223372036854775809",
               b"1" + b"7" * 399, b"0.1000000000000000055511151231257827", b"3.141592653589793238462643383279",
               b"9007199254740993", b"9007199254740993.0", b"1e22", b"1e23", b"4.9e-324", b"1.7976931348623157e308",
               b"01", b"1.", b".5", b"-", b"+1", b"1e", b"1e+", b"0x10", b"NaN", b"Infinity", b"-Infinity", b"1.5.2",
               b"1" * 1001]  # fmt: skip
ODD_STRINGS = [rb'"\u00e9t\u00e9"', rb'"\ud83d\ude00"', rb'"\ud83d"', rb'"\ude00x"', rb'"a\"b\\c\/d\b\f\n\r\t"',
               rb'"\x"', rb'"\u12"', rb'"\u12G4"', '"日本語"'.encode(), "\"😀\"".encode(), b'"\xc0\xa1"', b'"\xed\xa0\x80"',
               b'"\xe2\x82"', b'"\x80"', b'"\xf8\x88\x80\x80\x80"', b'"\xf4\x90\x80\x80"', b'"a\x01b"', b'"tab\tin"',
               b'"' + b"x" * 3000 + b'"', b'""']  # fmt: skip


def _events(rng: random.Random) -> tuple[str, dict]:
    kind = rng.choice(["features", "predictions", "labels"])
    model = rng.choice(["shop", "shop", "multi", "reg"])
    version = {"shop": "v1", "multi": rng.choice(["v1", "v7"]), "reg": "v2"}[model]
    if kind == "features":
        e = feature_event(model, version)
        if model == "shop":
            e["features"] = {"x": rng.choice([0.3, -1.25, 0, 7, 1e-3]), "y": rng.uniform(-3, 5),
                             "device": rng.choice(["ios", "web", 3, 2.5, True, 1e-4, 1e23, "new"])}  # fmt: skip
    elif kind == "predictions":
        e = prediction_event(model, version, score=rng.random(), predicted_label=rng.choice([0, 1, "a", "c", 2.5]))
        if rng.random() < 0.3:
            del e["score"]
            e["probabilities"] = rng.choice([[0.2, 0.8], {"a": 0.1, "b": 0.9}, [0.5]])
    else:
        e = label_event(model, label=rng.choice([1, 0, "spam", 42.25]) if model != "reg" else rng.uniform(0, 9))
    if rng.random() < 0.2:
        e["request_id"] = rng.choice(["é-1", 'r"1', "r\\2", "日本", 17, "x" * 70])
    if rng.random() < 0.2:
        e["extra"] = rng.choice([{"a": [1, {"b": None}]}, [], {}, "s", [[[]]], {"k": {"k": {"k": 1}}}])
    return kind, e


def _splice_number(payload: bytes, token: bytes) -> bytes:
    """Replaces one number of the document with token."""
    spans = [m.span() for m in re.finditer(rb"(?<=[:\[,])-?\d+(\.\d+)?([eE][+-]?\d+)?", payload)]
    if not spans:
        return payload
    a, b = random.Random(len(payload)).choice(spans)
    return payload[:a] + token + payload[b:]


def _random_number(rng: random.Random) -> bytes:
    """A decimal of 1 to 20 significant digits, with or without an exponent: both sides of the scanner's exact
    fast path (at most 18 digits, mantissa below 2**53, power of ten within 22) and the correctly rounded rest."""
    digits = str(rng.randrange(1, 10 ** rng.randint(1, 20)))
    point = rng.randint(0, len(digits))
    text = (digits[:point] or "0") + ("." + digits[point:] if point < len(digits) else "")
    if rng.random() < 0.5:
        text += rng.choice(["e", "E"]) + rng.choice(["", "+", "-"]) + str(rng.randint(0, 30))
    return (rng.choice(["", "-"]) + text).encode()


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    m = rng.randrange(14)
    if m == 0:  # a duplicate key at the top, in features or segments, or in a skipped nested value
        key = rng.choice([b'"request_id":', b'"region":', b'"x":', b'"extra":{'])
        i = payload.find(key)
        if i < 0:
            return payload[:-1] + b',"model_id":"shop"}'
        j = i + len(key)
        return payload[:j] + (b'"d":1,"d":2,' if key.endswith(b"{") else b"1," + key) + payload[j:]
    if m == 1:
        return _splice_number(payload, rng.choice(ODD_NUMBERS) if rng.random() < 0.5 else _random_number(rng))
    if m == 2:  # an odd string in place of one string value
        spans = [mm.span() for mm in re.finditer(rb':"[^"\\]*"', payload)]
        if spans:
            a, b = rng.choice(spans)
            return payload[: a + 1] + rng.choice(ODD_STRINGS) + payload[b:]
        return payload
    if m == 3:  # an odd string as a key (escaped keys, non-ASCII keys)
        return payload[:-1] + b"," + rng.choice(ODD_STRINGS) + b":1}"
    if m == 4:  # nesting around the scanner's (64) and Jackson's (1000) limits
        d = rng.choice([1, 62, 63, 64, 65, 200, 999, 1000, 1001])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return payload[:-1] + b',"deep":' + opener * d + b"1" + closer * d + b"}"
    if m == 5:  # trailing content
        return payload + rng.choice([b" ", b"\n\r\t", b" {}", b"x", b"]", b",", b"\x00", b" 1", b"}"])
    if m == 6:  # whitespace between tokens, and odd spaces
        ws = rng.choice([b" ", b"\t", b"\n", b"\r\n ", b"\x0b", b"\x0c", b"\xc2\xa0"])
        return payload.replace(b",", b"," + ws).replace(b":", ws + b":", 1)
    if m == 7:  # a BOM or another encoding
        return rng.choice(
            [b"\xef\xbb\xbf" + payload, payload.decode(errors="replace").encode("utf-16-le"), b"\xfe\xff" + payload]
        )
    if m == 8:  # literals and their near misses
        return (
            payload[:-1]
            + b',"lit":'
            + rng.choice([b"true", b"false", b"null", b"tru", b"nul", b"truex", b"True"])
            + b"}"
        )
    if m == 9:  # truncated
        return payload[: rng.randrange(len(payload))]
    if m == 10:  # one byte replaced
        i = rng.randrange(len(payload))
        return payload[:i] + bytes([rng.randrange(256)]) + payload[i + 1 :]
    if m == 11:  # one byte inserted
        i = rng.randrange(len(payload))
        return (
            payload[:i] + rng.choice([b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"0", b"-", b"e"]) + payload[i:]
        )
    if m == 12:  # many keys in one object (around the scanner's 128 and the feature limit)
        n = rng.choice([20, 31, 127, 128, 129, 300])
        return payload[:-1] + b',"many":{' + b",".join(b'"k%d":%d' % (i, i) for i in range(n)) + b"}}"
    return b"  " + payload + b"\n"  # m == 13: valid, with outer whitespace


def reference_verdict(payload: bytes) -> tuple[str, object]:
    """("ok", doc) for a JSON object (the decoder's other rules then decide), ("codes", set) for what the verdict
    may be, or ("none", None) where Python's json and Jackson legitimately differ (Jackson reads BOMs, UTF-16 and
    lenient UTF-8; Python has no depth or number-length limit of Jackson's kind)."""
    if payload.startswith((b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")) or b"\x00" in payload[:4]:
        return "none", None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "none", None  # Jackson accepts overlong forms and encoded surrogates: compared with Jackson only
    if re.search(r"\d{1001}", text):
        return "none", None

    def no_constants(name):
        raise ValueError(f"not JSON: {name}")

    dups = []

    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            dups.append(keys)
        return dict(items)

    stripped = text.lstrip(" \t\n\r")
    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=no_constants)
    except RecursionError:
        return "none", None
    except ValueError:
        # Jackson reads the first token only when it is not an object, and stops at the first error.
        return "codes", ({"not_an_object", "malformed_json"} if not stripped.startswith("{")
                         else {"malformed_json", "duplicate_key"})  # fmt: skip
    if _depth(doc) > 1000:
        return "codes", {"malformed_json"}
    if not isinstance(doc, dict):
        return "codes", {"not_an_object"}
    if dups:
        return "codes", {"duplicate_key"}
    return "ok", doc


def _depth(v) -> int:
    depth, todo = 0, [(v, 1)]
    while todo:
        x, d = todo.pop()
        if isinstance(x, (dict, list)):
            depth = max(depth, d)
            todo += [(y, d + 1) for y in (x.values() if isinstance(x, dict) else x)]
    return depth


def _inputs() -> list[tuple[str, bytes]]:
    rng = random.Random(20261201)
    # Documents that are not objects, or barely: Jackson reads only their first token.
    out = [
        ("features", p)
        for p in [b"", b"  ", b"[1, 2]", b"[1, 2", b'"s', b"1", b"1x", b"null", b"true]", b"]", b"{", b"{}"]
    ]
    for i in range(N_RANDOM):
        stream, event = _events(rng)
        payload = orjson.dumps(event)
        for _ in range(0 if i % 4 == 0 else rng.choice([1, 1, 2])):
            payload = _mutate(rng, payload)
        out.append((stream, payload))
    return out


@pytest.fixture(scope="module")
def verdicts(contract) -> list[tuple[str, bytes, dict, dict]]:
    now = now_ms()
    out = []
    for stream, payload in _inputs():
        fast = row_dict(contract.java.parser.parseAt(payload, stream, None, now, contract.java.catalog, False))
        jackson = row_dict(contract.java.parser.parseAt(payload, stream, None, now, contract.java.catalog, True))
        out.append((stream, payload, fast, jackson))
    return out


def _comparable(row: dict) -> dict:
    return {k: bytes(v) if isinstance(v, (bytes, bytearray)) else v for k, v in row.items()}


def test_the_scanner_gives_jacksons_row_for_every_input(verdicts):
    diffs = [(p, f, j) for _, p, f, j in verdicts if _comparable(f) != _comparable(j)]
    assert not diffs, diffs[:3]
    # The inputs reach both sides of every JSON-level verdict, and many valid events.
    codes = {f["reason_code"] for _, _, f, _ in verdicts}
    assert JSON_CODES | {None} <= codes, codes
    assert sum(f["ok"] for _, _, f, _ in verdicts) > N_RANDOM // 4


def test_the_verdict_agrees_with_pythons_json(verdicts, contract):
    checked_values = 0
    for stream, payload, row, _ in verdicts:
        kind, ref = reference_verdict(payload)
        if kind == "none":
            continue
        if kind == "codes":
            assert row["reason_code"] in ref, (payload, row, ref)
            continue
        assert row["reason_code"] not in JSON_CODES, (payload, row)
        if not row["ok"]:
            continue
        # The decoded fields of a valid event are the ones Python reads.
        for field in ("request_id", "model_id", "model_version"):
            if isinstance(ref.get(field), str) and not re.search("[\ud800-\udfff]", ref[field]):
                # (a lone surrogate does not cross py4j intact; the Jackson comparison covers it)
                assert row[field] == ref[field], (payload, field, row)
        if isinstance(ref["event_time"], int):
            assert row["event_ms"] == ref["event_time"]
        if stream != "labels":
            expected = expected_packing(contract, ref, stream)
            # Java's UTF-8 encoder writes a lone surrogate of a segment value as "?", as Python's "replace" does.
            expected["segments"] = [
                None if v is None else v.encode("utf-8", "replace").decode() for v in expected["segments"]
            ]
            assert unpack(bytes(row["packed"]), contract.catalog) == expected, payload
        elif isinstance(ref["label"], float):
            assert row["label_value"] == ref["label"]
        checked_values += 1
    assert checked_values > N_RANDOM // 4
