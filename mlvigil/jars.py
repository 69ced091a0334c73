"""Where the job's jars are: the Kafka connector (from scripts/setup.sh) and mlvigil's UDFs."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = Path(os.environ.get("MLVIGIL_VENDOR", ROOT / "vendor"))
CONNECTOR_JARS = ("flink-connector-kafka.jar", "kafka-clients.jar")
UDF_JAR = ROOT / "udfs" / "java" / "mlvigil-udfs.jar"


def job_jars() -> list[Path]:
    jars = [VENDOR / "flink-jars" / j for j in CONNECTOR_JARS] + [UDF_JAR]
    missing = [str(j) for j in jars if not j.exists()]
    if missing:
        raise FileNotFoundError(f"missing jars {missing}: run scripts/setup.sh")
    return jars
