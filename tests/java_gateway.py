"""The Java UDF classes in PyFlink's py4j gateway JVM, for tests that call them directly (no job, no Maven).

One JVM per test session (PyFlink's get_gateway is a process-wide singleton); the UDF jar is
added to its context class loader once. JavaUdfs opens the functions the way Flink does: with a
FunctionContext whose job parameters carry the encoded catalog (mlvigil.catalog.CATALOG_PARAM).
"""

from functools import cache
from typing import Any

from mlvigil.catalog import CATALOG_PARAM
from mlvigil.jars import UDF_JAR


@cache
def get_gateway() -> Any:
    from pyflink.java_gateway import get_gateway as pyflink_gateway
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    assert UDF_JAR.exists(), "build the UDF jar: bash udfs/java/build.sh"
    gw = pyflink_gateway()
    add_jars_to_context_class_loader([UDF_JAR.as_uri()])
    return gw


class JavaUdfs:
    """The io.mlvigil.udf classes, opened against one encoded catalog."""

    def __init__(self, gateway: Any, encoded_catalog: str):
        self.gateway = gateway
        self.jvm = gateway.jvm
        self.udf = gateway.jvm.io.mlvigil.udf
        self.encoded = encoded_catalog
        self.catalog = self.udf.MonitorCatalog.fromEncoded(encoded_catalog)
        self.parser = self.inner("ParseEventFunction", "Parser").forThread()

    def inner(self, outer: str, name: str) -> Any:
        return getattr(self.udf, f"{outer}${name}")

    def function_context(self) -> Any:
        """What Flink hands open(): here only the job parameters, as WithConfigurationOpenContext."""
        conf = self.jvm.org.apache.flink.configuration.Configuration()
        conf.setString(CATALOG_PARAM, self.encoded)
        open_ctx = self.jvm.org.apache.flink.api.common.functions.WithConfigurationOpenContext(conf)
        return self.jvm.org.apache.flink.table.functions.FunctionContext(None, None, open_ctx)

    def opened(self, class_name: str) -> Any:
        """A new instance of an io.mlvigil.udf function class, opened like Flink opens it."""
        fn = getattr(self.udf, class_name)()
        fn.open(self.function_context())
        return fn

    def instant(self, ms: int | None) -> Any:
        return None if ms is None else self.jvm.java.time.Instant.ofEpochMilli(ms)

    def parse(self, payload: bytes | None, stream: str, now_ms: int, kafka_ms: int | None = None) -> Any:
        """mlv_parse's row (org.apache.flink.types.Row) at processing time now_ms."""
        return self.parser.parseAt(payload, stream, self.instant(kafka_ms), now_ms, self.catalog)

    def list_of(self, items: list) -> Any:
        """A java.util.ArrayList (e.g. the Iterable of accumulators merge takes)."""
        out = self.jvm.java.util.ArrayList()
        for item in items:
            out.add(item)
        return out

    def double_array(self, values: list[float]) -> Any:
        arr = self.gateway.new_array(self.jvm.double, len(values))
        for i, v in enumerate(values):
            arr[i] = float(v)
        return arr


# --- one catalog that reaches every branch the contract tests need -----------------------------
MAX_SEGMENT_VALUES = 3
"""Small, so a few region values reach the cardinality cap ("region=(other)")."""
DEVICE_VALUES = ["ios", "android", "web", 3, 2.5, True, 1e-4, 1e23]
"""A categorical feature whose categories are strings, integers, floats and a boolean (category text)."""
MULTI_CLASSES = ["a", "b", "c", "d"]


def contract_training(seed: int = 11, n: int = 400) -> dict[str, dict[str, list]]:
    """Training columns per model: ties, -0.0 and repeated custom edges (shop), classes (multi), a target (reg)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # x: one decimal, many exact zeros and -0.0, so quantile edges repeat (the profile keeps unique ones)
    x = np.round(rng.normal(0.0, 1.0, n), 1)
    x[: n // 4] = 0.0
    x[n // 4 : n // 3] = -0.0
    y = rng.uniform(-2.0, 4.0, n)
    score = rng.uniform(0.0, 1.0, n)
    shop = {
        "x": x.tolist(),
        "y": y.tolist(),
        "device": [DEVICE_VALUES[i % len(DEVICE_VALUES)] for i in range(n)],
        "score": score.tolist(),
        "predicted_label": [int(s >= 0.4) for s in score],
    }
    multi = {
        "z": rng.exponential(2.0, n).tolist(),
        "score": rng.uniform(0.2, 1.0, n).tolist(),
        "predicted_label": [MULTI_CLASSES[i % 3] for i in range(n)],
    }
    reg = {"w": rng.normal(10.0, 3.0, n).tolist(), "score": rng.normal(50.0, 10.0, n).tolist()}
    return {"shop": shop, "multi": multi, "reg": reg}


SHOP_CUSTOM_EDGES = [-1.0, 0.0, -0.0, 1.0, 1.0, 2.5]
"""Custom edges of shop's y, with a repeat and both zeros: the profile keeps [-1, 0, 1, 2.5]."""


def contract_config_raw(tmp) -> dict:
    """The raw config (as from YAML) of the contract catalog, its profiles saved under tmp."""
    from mlvigil.profile import build_profile, save_profile

    train = contract_training()
    paths = {}
    for model, version, kwargs in [
        ("shop", "v1", {"categorical": ["device"], "custom_edges": {"y": SHOP_CUSTOM_EDGES}}),
        ("multi", "v1", {}),
        ("multi", "v0", {"ks_quantiles": 10, "bins": 4}),
        ("reg", "v2", {"predicted_label_column": None}),
    ]:
        profile = build_profile(train[model], model, version, **kwargs)
        path = tmp / f"{model}-{version}.json"
        save_profile(profile, path)
        paths[(model, version)] = str(path)
    return {
        "models": {
            "shop": {"segments": ["region", "tier"], "profiles": {"v1": paths[("shop", "v1")]},
                     "positive_label": 1, "threshold": 0.4},
            "multi": {"segments": ["region"], "profiles": {"v1": paths[("multi", "v1")], "*": paths[("multi", "v0")]}},
            "reg": {"task": "regression", "profiles": {"v2": paths[("reg", "v2")]}},
        },
        "window": {"size": "30s"},
        "limits": {"max_segment_values": MAX_SEGMENT_VALUES, "max_message_bytes": 20_000, "max_features": 30,
                   "max_future": "2h", "max_latency": "10m"},
    }  # fmt: skip


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


def feature_event(model: str = "shop", version: str = "v1", **changes) -> dict:
    """A valid feature event of the contract catalog, a minute old."""
    features = {
        "shop": {"x": 0.3, "y": 1.5, "device": "ios"},
        "multi": {"z": 1.0},
        "reg": {"w": 9.0},
    }[model]
    e = {"request_id": "r-1", "model_id": model, "model_version": version, "event_time": now_ms() - 60_000,
         "segments": {"region": "eu", "tier": "gold"}, "features": features}  # fmt: skip
    e.update(changes)
    return e


def prediction_event(model: str = "shop", version: str = "v1", **changes) -> dict:
    e = {"request_id": "r-1", "model_id": model, "model_version": version, "event_time": now_ms() - 60_000,
         "segments": {"region": "eu", "tier": "gold"}, "score": 0.7, "predicted_label": 1, "latency_ms": 12.5,
         "status": "ok"}  # fmt: skip
    e.update(changes)
    return e


def label_event(model: str = "shop", **changes) -> dict:
    e = {"request_id": "r-1", "model_id": model, "event_time": now_ms() - 30_000, "label": 1,
         "outcomes": {"clicked": True, "converted": False, "revenue": 2.5}}  # fmt: skip
    e.update(changes)
    return e


# Field positions in mlv_parse's row (ParseEventFunction's @FunctionHint).
ROW_FIELDS = ["ok", "reason_code", "reason", "request_id", "model_id", "model_version", "event_ms", "is_error",
              "latency_ms", "packed", "score", "predicted_label", "label", "label_value", "clicked", "converted",
              "revenue", "dl_payload"]  # fmt: skip


def row_dict(row) -> dict:
    assert row.getArity() == len(ROW_FIELDS)
    return {name: row.getField(i) for i, name in enumerate(ROW_FIELDS)}


def unpack(packed: bytes, catalog: dict) -> dict:
    """ParseEventFunction's packed columns read back (the layout SegmentKeys and the aggregates read):
    profile int, stream byte, segment count byte, per segment an int length (-1: missing) and UTF-8,
    then per monitored column a tag byte (0 missing, 1 number + double, 2 category + int index, -1 other)."""
    import struct

    profile, stream, dims = struct.unpack_from(">ibb", packed, 0)
    pos = 6
    segments = []
    for _ in range(dims):
        (n,) = struct.unpack_from(">i", packed, pos)
        pos += 4
        segments.append(None if n < 0 else packed[pos : pos + n].decode())
        pos += max(n, 0)
    p = catalog["profiles"][profile]
    values = []
    for _ in p["features"] if stream == 0 else p["prediction"]:
        tag = packed[pos]
        pos += 1
        if tag == 1:
            values.append(struct.unpack_from(">d", packed, pos)[0])
            pos += 8
        elif tag == 2:
            values.append(("category", struct.unpack_from(">i", packed, pos)[0]))
            pos += 4
        else:
            assert tag == 0, tag
            values.append(None)
    assert pos == len(packed), "trailing bytes in the packed columns"
    return {"profile": profile, "stream": stream, "segments": segments, "values": values}
