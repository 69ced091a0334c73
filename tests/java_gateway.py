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
