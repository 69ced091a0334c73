#!/usr/bin/env bash
# Builds udfs/java/mlvigil-udfs.jar (or the jar path given as $1: setup.py builds the wheel's copy)
# against the PyFlink wheel's jars (javac ships with the JDK).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/mlvigil-udfs.jar}
python=${MLVIGIL_PYTHON:-python}
pyflink=$("$python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
classes=$(mktemp -d)
trap 'rm -rf "$classes"' EXIT
javac -Xlint:-options --release 11 -cp "$pyflink/lib/*" -d "$classes" $(find "$here/src" -name '*.java')
mkdir -p "$(dirname "$out")"
jar cf "$out" -C "$classes" .
echo "built $out"
