"""The contracts between the Java UDFs and the Python around them, tested on both sides:

- category text: tests/category_text_cases.json against ParseEventFunction.categoryText (through
  mlv_parse) and mlvigil.categories.category_text (profiles, the config's positive_label);
- the catalog: what mlvigil.catalog.compile_catalog sends is what MonitorCatalog decodes, field by
  field; Java has no defaults of its own, a missing field fails loudly;
- the stats JSON: schemas/window_stats.v1.json and quality_stats.v1.json list exactly what Java writes,
  and their required keys are exactly what mlvigil.finalize / mlvigil.quality read.
"""

import json
import math
import random
import re
import struct
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from py4j.java_gateway import get_field
from py4j.protocol import Py4JJavaError

import mlvigil.finalize
import mlvigil.quality
from mlvigil.catalog import compile_catalog, encode_catalog
from mlvigil.categories import category_text
from mlvigil.config import parse_config
from tests.java_gateway import (
    DEVICE_VALUES,
    JavaUdfs,
    feature_event,
    label_event,
    now_ms,
    prediction_event,
    row_dict,
    unpack,
)

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests" / "category_text_cases.json").read_text())["cases"]
SCHEMAS = ROOT / "schemas"
CATALOG_JAVA = ROOT / "udfs" / "java" / "src" / "io" / "mlvigil" / "udf" / "MonitorCatalog.java"


def _raw_event(event: dict, field: str, token: str) -> bytes:
    """The event's JSON with field's value replaced by the JSON token, as a producer would send it."""
    return orjson.dumps({**event, field: "@@"}).replace(b'"@@"', token.encode())


# --- category text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["json"] for c in CASES])
def test_category_text_python(case):
    value = json.loads(case["json"])
    assert category_text(value) == case["text"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # a profile built from a DataFrame sees numpy scalars
        assert category_text(np.float64(value)) == case["text"]
        if isinstance(value, int) and abs(value) < 2**63:
            assert category_text(np.int64(value)) == case["text"]


def test_category_text_java(contract):
    """The same cases through mlv_parse: predicted_label and label carry their category text."""
    now = now_ms()
    checked = 0
    for case in CASES:
        pred = row_dict(
            contract.java.parse(_raw_event(prediction_event(), "predicted_label", case["json"]), "predictions", now)
        )
        assert pred["ok"], (case, pred)
        assert pred["predicted_label"] == case["text"], case
        value = json.loads(case["json"])
        if isinstance(value, str) or isinstance(value, bool) or abs(value) <= 1e100:  # larger labels are absurd_value
            lab = row_dict(contract.java.parse(_raw_event(label_event(), "label", case["json"]), "labels", now))
            assert lab["ok"] and lab["label"] == case["text"], (case, lab)
            checked += 1
        # and the function itself, on the value as the decoder holds it (a double, a Boolean, a String)
        java_value = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
        assert contract.java.udf.ParseEventFunction.categoryText(java_value) == case["text"], case
    assert checked > 30


def test_category_text_of_random_doubles_is_the_same_on_both_sides(contract):
    """Any double, both sides: bit patterns, short decimals, all magnitudes."""
    rng = random.Random(17)
    java = contract.java.udf.ParseEventFunction.categoryText
    values = []
    for _ in range(700):
        values.append(struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0])
        values.append(round(rng.uniform(-1000, 1000), rng.randint(0, 8)))
        values.append(rng.randint(1, 999) * 10.0 ** rng.randint(-330, 308))
    values += [math.nextafter(1e15, 0), 1e15, math.nextafter(1e7, 0), 1e-3, math.nextafter(1e-3, 0), 2**53 + 2.0]
    mismatches = [(v, java(v), category_text(v)) for v in values if not math.isnan(v) and java(v) != category_text(v)]
    assert not mismatches, mismatches[:10]


def test_categories_of_a_profile_are_found_by_the_stream(contract):
    """Each training value of a categorical feature, sent as JSON, lands in its own category."""
    profile = contract.catalog["profiles"][contract.catalog["models"]["shop"]["versions"]["v1"]]
    names = [c["name"] for c in profile["features"]]
    device = profile["features"][names.index("device")]
    now = now_ms()
    for value in DEVICE_VALUES:
        event = feature_event(features={"device": value})
        row = row_dict(contract.java.parse(orjson.dumps(event), "features", now))
        packed = unpack(bytes(row["packed"]), contract.catalog)["values"][names.index("device")]
        assert packed == ("category", device["categories"].index(category_text(value))), value


def test_positive_label_in_the_config_is_the_stream_text(contract):
    """positive_label from the config (any JSON/YAML scalar) is the category text the stream gives the
    same value: a label and a predicted_label equal to it count as true positives in QualityStatsFunction.
    (Before, config.py used str() for non-integral numbers: positive_label 0.0001 was "0.0001" while the
    stream's labels were "1.0E-4", so no label was ever positive.)"""
    shop = contract.raw["models"]["shop"]
    now = now_ms()
    for case in CASES:
        value = json.loads(case["json"])
        raw = {"models": {"shop": {**shop, "positive_label": value}}}
        cfg = parse_config(raw)
        assert cfg.models["shop"].positive_label == case["text"]
        if not isinstance(value, (str, bool)) and abs(value) > 1e100:
            continue  # an absurd label value: dead letter
        java = JavaUdfs(contract.java.gateway, encode_catalog(compile_catalog(cfg)))
        pred = row_dict(java.parse(_raw_event(prediction_event(), "predicted_label", case["json"]), "predictions", now))
        lab = row_dict(java.parse(_raw_event(label_event(), "label", case["json"]), "labels", now))
        fn = java.opened("QualityStatsFunction")
        acc = fn.createAccumulator()
        fn.accumulate(acc, True, bytes(pred["packed"]), pred["score"], pred["predicted_label"], lab["label"],
                      lab["label_value"], None, None, None)  # fmt: skip
        seg = json.loads(fn.getValue(acc))["segments"][0]
        assert (seg["tp"], seg["fp"], seg["fn"], seg["tn"]) == (1, 0, 0, 0), case


# --- the catalog --------------------------------------------------------------------------------------

TOP_LEVEL = {
    "window_ms": "windowMs",
    "min_event_ms": "minEventMs",
    "max_future_ms": "maxFutureMs",
    "max_latency_ms": "maxLatencyMs",
    "max_segment_values": "maxSegmentValues",
    "max_message_bytes": "maxMessageBytes",
    "max_features": "maxFeatures",
    "max_event_age_ms": "maxEventAgeMs",
    "dead_letter_prefix_bytes": "deadLetterPrefixBytes",
}


def java_read_keys() -> set[str]:
    """The catalog keys MonitorCatalog reads (required(node, "key") / n.get("key"))."""
    src = CATALOG_JAVA.read_text()
    return set(re.findall(r'required\(\w+, "(\w+)"\)', src)) | set(re.findall(r'\.get\("(\w+)"\)', src))


def _columns(java_cols) -> list[dict]:
    out = []
    for c in java_cols:
        numeric = get_field(c, "type") == 1
        col = {"name": get_field(c, "name"), "type": "numeric" if numeric else "categorical"}
        if numeric:
            col |= {"edges": list(get_field(c, "edges")), "ks_points": list(get_field(c, "ksPoints")),
                    "mean": get_field(c, "mean"), "std": get_field(c, "std")}  # fmt: skip
        else:
            index = dict(get_field(c, "categoryIndex"))
            col["categories"] = sorted(index, key=index.__getitem__)
            assert sorted(index.values()) == list(range(len(index))) and get_field(c, "categoryCount") == len(index)
        out.append(col)
    return out


def test_java_decodes_every_field_python_sends(contract):
    catalog, java = contract.catalog, contract.java.catalog
    assert java_read_keys() <= set(catalog) | {k for m in catalog["models"].values() for k in m} | {
        k for p in catalog["profiles"] for k in p
    } | {k for p in catalog["profiles"] for c in p["features"] + p["prediction"] for k in c}
    for key, field in TOP_LEVEL.items():
        assert get_field(java, field) == catalog[key], key
    assert set(TOP_LEVEL) == set(catalog) - {"models", "profiles"}, "a top-level field Java does not read"
    profiles = get_field(java, "profiles")
    assert profiles.size() == len(catalog["profiles"])
    for i, p in enumerate(catalog["profiles"]):
        jp = profiles.get(i)
        assert (get_field(jp, "index"), get_field(jp, "model"), get_field(jp, "version")) == (
            i,
            p["model"],
            p["version"],
        )
        for stream in ("features", "prediction"):
            want = [{k: c[k] for k in ("name", "type", "edges", "ks_points", "mean", "std", "categories") if k in c}
                    for c in p[stream]]  # fmt: skip
            assert _columns(get_field(jp, stream)) == want, (i, stream)
            index = dict(get_field(jp, "featureIndex" if stream == "features" else "predictionIndex"))
            assert index == {c["name"]: k for k, c in enumerate(p[stream])}
    models = get_field(java, "models")
    assert set(models.keySet()) == set(catalog["models"])
    for model_id, m in catalog["models"].items():
        jm = models.get(model_id)
        assert get_field(jm, "id") == model_id
        assert list(get_field(jm, "segments")) == m["segments"]
        assert get_field(jm, "regression") is (m["task"] == "regression")
        assert get_field(jm, "positiveLabel") == m["positive_label"]
        assert get_field(jm, "threshold") == m["threshold"]
        by_version = {v: get_field(p, "index") for v, p in dict(get_field(jm, "byVersion")).items()}
        fallback = get_field(jm, "fallback")
        assert by_version == {v: k for v, k in m["versions"].items() if v != "*"}
        assert (None if fallback is None else get_field(fallback, "index")) == m["versions"].get("*")


def _without(catalog: dict, path: tuple) -> dict:
    out = json.loads(json.dumps(catalog))
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def test_a_catalog_without_a_field_fails_loudly(contract):
    """MonitorCatalog has no defaults: every field comes from compile_catalog, a missing one is an error
    that names it (never a silent default that could disagree with Python's)."""
    model = next(iter(contract.catalog["models"]))
    paths = [(k,) for k in TOP_LEVEL] + [("models", model, k) for k in contract.catalog["models"][model]]
    for path in paths:
        encoded = encode_catalog(_without(contract.catalog, path))
        with pytest.raises(Py4JJavaError) as err:
            contract.java.udf.MonitorCatalog.fromEncoded(encoded)
        assert f"no field {path[-1]}" in str(err.value.java_exception.getMessage()), path


# --- the stats JSON -----------------------------------------------------------------------------------


class Recording(dict):
    """A JSON object that notes every key read from it, under its path in the document."""

    def __init__(self, value: dict, path: str, reads: set):
        super().__init__(value)
        self.path, self.reads = path, reads

    def __getitem__(self, key):
        self.reads.add((self.path, key))
        return wrap(super().__getitem__(key), f"{self.path}.{key}", self.reads)


def wrap(value, path: str, reads: set):
    if isinstance(value, dict) and not path.endswith(".classes"):  # classes: a map, its keys are data
        return Recording(value, path, reads)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [wrap(v, path + "[]", reads) for v in value]
    return value


def schema_keys(schema: dict) -> dict[str, tuple[set, set]]:
    """path -> (properties, required) of every object in the stats schema (oneOf alternatives merged)."""
    out: dict[str, tuple[set, set]] = {}

    def resolve(node):
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def visit(node, path):
        node = resolve(node)
        for alt in node.get("oneOf", []):
            visit(alt, path)
        if node.get("type") == "object" and "properties" in node:
            props, req = out.setdefault(path, (set(), set()))
            props |= set(node["properties"])
            req |= set(node.get("required", []))
            for name, child in node["properties"].items():
                visit(child, f"{path}.{name}")
        if node.get("type") == "array" and "items" in node:
            visit(node["items"], path + "[]")

    visit(schema, "")
    return out


def written_keys(doc, path: str = "", out: dict | None = None) -> dict[str, set]:
    out = {} if out is None else out
    if isinstance(doc, dict) and not path.endswith(".classes"):
        out.setdefault(path, set()).update(doc)
        for k, v in doc.items():
            written_keys(v, f"{path}.{k}", out)
    elif isinstance(doc, list):
        for v in doc:
            written_keys(v, path + "[]", out)
    return out


def java_outputs(contract) -> dict[str, list[tuple[str, str]]]:
    """(stream, getValue) of both aggregates for every model and stream of the contract catalog."""
    now = now_ms()
    window = contract.java.opened("WindowStatsFunction")
    quality = contract.java.opened("QualityStatsFunction")
    out: dict[str, list[tuple[str, str]]] = {"window_stats": [], "quality_stats": []}
    for model, version in [("shop", "v1"), ("multi", "v1"), ("reg", "v2")]:
        for stream, event in [
            ("features", feature_event(model, version)),
            ("predictions", prediction_event(model, version)),
        ]:
            if model == "reg":
                event.pop("predicted_label", None)
            row = row_dict(contract.java.parse(orjson.dumps(event), stream, now))
            acc = window.createAccumulator()
            window.accumulate(acc, bytes(row["packed"]))
            out["window_stats"].append((stream, window.getValue(acc)))
            if stream == "predictions":
                lab = row_dict(contract.java.parse(orjson.dumps(label_event(model, label=1)), "labels", now))
                acc = quality.createAccumulator()
                quality.accumulate(acc, False, bytes(row["packed"]), row["score"], row["predicted_label"], *[None] * 5)
                quality.accumulate(acc, True, bytes(row["packed"]), row["score"], row["predicted_label"], lab["label"],
                                   lab["label_value"], lab["clicked"], lab["converted"], lab["revenue"])  # fmt: skip
                out["quality_stats"].append((stream, quality.getValue(acc)))
    return out


def python_reads(contract, name: str, stream: str, stats_json: str, monkeypatch) -> set:
    """The (path, key) pairs finalize.window_rows / quality.quality_rows read from the stats JSON."""
    reads: set = set()
    module = mlvigil.finalize if name == "window_stats" else mlvigil.quality

    class Loader:
        @staticmethod
        def loads(text):
            return wrap(orjson.loads(text), "", reads)

    monkeypatch.setattr(module, "orjson", Loader)
    now = mlvigil.finalize.now_utc()
    if name == "window_stats":
        rows = module.window_rows(stats_json, contract.catalog, stream, now, now, "m", "v", now)
    else:
        rows = module.quality_rows(stats_json, now, now, "m", "v", 1, now)
    monkeypatch.undo()
    assert rows
    return reads


@pytest.mark.parametrize("name", ["window_stats", "quality_stats"])
def test_stats_schema_is_what_java_writes_and_python_reads(contract, name, monkeypatch):
    schema = json.loads((SCHEMAS / f"{name}.v1.json").read_text())
    Draft202012Validator.check_schema(schema)
    keys = schema_keys(schema)
    outputs = java_outputs(contract)[name]
    written: dict[str, set] = {}
    read: set = set()
    for stream, doc in outputs:
        Draft202012Validator(schema).validate(json.loads(doc))
        written_keys(json.loads(doc), out=written)
        read |= python_reads(contract, name, stream, doc, monkeypatch)
    # Java writes every key the schema defines, and no other (additionalProperties: false)
    assert {p: props for p, (props, _) in keys.items() if not p.endswith(".classes")} == written
    # Python reads only keys the schema defines, and the schema requires exactly those
    by_path: dict[str, set] = {}
    for path, key in read:
        by_path.setdefault(path, set()).add(key)
    for path, (props, required) in keys.items():
        assert by_path.get(path, set()) <= props, path
        assert required == by_path.get(path, set()), (
            f"{path}: required {sorted(required)}, read {sorted(by_path.get(path, set()))}"
        )
