#!/usr/bin/env bash
# Builds udfs/java/mlvigil-udfs.jar against the PyFlink wheel's jars (javac ships with the JDK).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${MLVIGIL_PYTHON:-python}
pyflink=$("$python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
rm -rf "$here/build" && mkdir -p "$here/build"
javac -Xlint:-options --release 11 -cp "$pyflink/lib/*" -d "$here/build" $(find "$here/src" -name '*.java')
jar cf "$here/mlvigil-udfs.jar" -C "$here/build" .
echo "built $here/mlvigil-udfs.jar"
