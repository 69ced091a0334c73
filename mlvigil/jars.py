"""The job's jars: mlvigil's UDFs (shipped in the package) and Flink's Kafka connector (not shipped).

The connector (flink-connector-kafka.jar, kafka-clients.jar) comes from the PyPI wheel
shigawire-apache-flink-libraries, which is only unpacked, never installed (installing it would
replace PyFlink's own jars). `mlvigil fetch-jars` downloads it with pip (so pip's own index,
proxy and mirror settings apply) into the user cache. The first directory holding both jars wins:
  1. $MLVIGIL_FLINK_JARS
  2. ${XDG_CACHE_HOME:-~/.cache}/mlvigil/flink-jars   (mlvigil fetch-jars)
  3. vendor/flink-jars beside the package, in a development checkout (scripts/setup.sh)
"""

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mlvigil.resources import package_file

CONNECTOR_JARS = ("flink-connector-kafka.jar", "kafka-clients.jar")
CONNECTOR_WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
UDF_JAR = package_file("udfs", "java", "mlvigil-udfs.jar")
CHECKOUT_JARS = Path(__file__).resolve().parent.parent / "vendor" / "flink-jars"


class MissingJarsError(FileNotFoundError):
    """A jar the job needs is not there; the message says which command provides it."""


def user_cache_jars() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlvigil" / "flink-jars"


def connector_dirs() -> list[Path]:
    """Where the connector jars are looked for, in order."""
    env = os.environ.get("MLVIGIL_FLINK_JARS")
    return [*([Path(env)] if env else []), user_cache_jars(), CHECKOUT_JARS]


def connector_jars() -> list[Path]:
    searched = connector_dirs()
    for d in searched:
        if all((d / j).is_file() for j in CONNECTOR_JARS):
            return [d / j for j in CONNECTOR_JARS]
    raise MissingJarsError(
        f"the Flink Kafka connector jars ({', '.join(CONNECTOR_JARS)}) are not in {', '.join(map(str, searched))}. "
        f"Run `mlvigil fetch-jars` (downloads them into {user_cache_jars()}), or set MLVIGIL_FLINK_JARS to a "
        "directory holding them"
    )


def job_jars() -> list[Path]:
    """Every jar the job puts in pipeline.jars; MissingJarsError if one is missing."""
    if not UDF_JAR.is_file():  # only in a checkout: the wheel carries the jar
        raise MissingJarsError(f"the UDF jar {UDF_JAR} is missing: run udfs/java/build.sh (or scripts/setup.sh)")
    return [*connector_jars(), UDF_JAR]


def fetch_connector_jars(dest: Path | None = None) -> list[Path]:
    """Downloads the connector wheel with pip and unpacks its two jars into dest (default: the
    user cache). Written to a temporary name first, so an interrupted fetch leaves no half jar."""
    dest = dest or user_cache_jars()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, CONNECTOR_WHEEL], check=True
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in CONNECTOR_JARS:
                part = dest / f".{name}.part"
                part.write_bytes(z.read(f"pyflink/lib/{name}"))
                part.replace(dest / name)
    return [dest / j for j in CONNECTOR_JARS]
