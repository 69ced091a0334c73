#!/usr/bin/env bash
# A local Flink standalone cluster from the PyFlink wheel, and the monitor job submitted to it.
#
#   scripts/cluster.sh start                       JobManager + TaskManager; waits for the REST API
#   scripts/cluster.sh submit [FLINK OPTS] -- ARGS flink run -py <the installed package's job>
#                                                  ($MLVIGIL_PYTHON -m mlvigil path job), that package
#                                                  also shipped to the Python workers with -pyfs
#                                                  (attached: returns when the job ends, with its status).
#                                                  FLINK OPTS go to flink run before -py; what the job sets
#                                                  itself (parallelism, checkpoints, jars) wins over -p/-D.
#                                                  -d (detached) submits and the job runs, but the client
#                                                  then exits 1: the job asks for the net runtime
#   scripts/cluster.sh status                      the cluster's overview and jobs (exit 1 if down)
#   scripts/cluster.sh stop                        stops the cluster, and kills any leftover process
#
# ARGS are the job's own arguments: --config FILE [--stop-offsets JSON] [--clickhouse-url URL] ...
# The daemons and the client log with mlvigil's conf/log4j*.properties (the wheel's, with the Beam
# loggers that print the Python workers' environment, secrets included, turned down).
# Secrets the job reads (alerting ${VAR}s, kafka.properties ${VAR}s, MLVIGIL_CLICKHOUSE_PASSWORD)
# must be in the environment of `start` (the daemons) and of `submit` (the client checks them).
# Example:
#   scripts/cluster.sh start
#   scripts/cluster.sh submit -- --config config.yaml
#   scripts/cluster.sh stop
#
# Environment (read by start; the other commands use what start wrote to the work dir):
#   MLVIGIL_CLUSTER_DIR      work dir for conf, logs, pids, tmp (default: .mlvigil/cluster)
#   MLVIGIL_FLINK_REST_PORT  REST API / web UI port (default 8081); "0" picks a free port
#   MLVIGIL_FLINK_SLOTS      task slots of the TaskManager (default 4)
#   MLVIGIL_FLINK_TM_MEMORY  TaskManager process size (default 4g); MLVIGIL_FLINK_JM_MEMORY (default 1600m)
#   MLVIGIL_PYTHON           Python with PyFlink and mlvigil installed (default: .venv/bin/python); it
#                            runs the client and the Python workers, so it must exist on every
#                            TaskManager host. The job, its SQL and conf/ come from its mlvigil package
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${MLVIGIL_PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || { echo "cluster: no Python at $python (run scripts/setup.sh)" >&2; exit 1; }
work=${MLVIGIL_CLUSTER_DIR:-$root/.mlvigil/cluster}
case $work in /*) ;; *) work=$PWD/$work ;; esac
pyflink=$("$python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
bin=$pyflink/bin

# Everything the Flink scripts write goes to the work dir, not into the wheel or /tmp.
export FLINK_CONF_DIR=$work/conf FLINK_LOG_DIR=$work/log FLINK_PID_DIR=$work/pid
# The Flink scripts and the Python workers run `python`: make it this one.
export PATH="$(dirname "$python"):$PATH"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

rest_port() { sed -n 's/^rest\.port: *//p' "$FLINK_CONF_DIR/config.yaml" 2>/dev/null; }

rest() {  # GET path -> body; fails if the REST API does not answer
  local port; port=$(rest_port)
  [ -n "$port" ] || return 1
  curl -sf --max-time 5 "http://127.0.0.1:$port$1"
}

pids() {  # this cluster's daemons (pid files, or a log file in this work dir) and their descendants
  local p
  for p in $( (cat "$FLINK_PID_DIR"/*.pid 2>/dev/null; ps -eww -o pid=,args= |
    LOG_ARG="-Dlog.file=$FLINK_LOG_DIR/" awk '$2 ~ /java$/ && index($0, ENVIRON["LOG_ARG"]) {print $1}') | sort -u); do
    if kill -0 "$p" 2>/dev/null; then
      echo "$p"
      descendants "$p"
    fi
  done
}

descendants() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}

write_conf() {
  local port=$1 rpc_port=$2
  rm -rf "$FLINK_CONF_DIR"
  cp -r "$pyflink/conf" "$FLINK_CONF_DIR"
  # mlvigil's log4j files: the wheel's, with the loggers that print the Python workers'
  # environment (secrets included) turned down (see conf/log4j.properties).
  cp "$("$python" -P -m mlvigil path conf)"/log4j*.properties "$FLINK_CONF_DIR"/
  mkdir -p "$FLINK_LOG_DIR" "$FLINK_PID_DIR" "$work/tmp"
  # The wheel's config.yaml (JVM options etc.), flattened, with this cluster's settings on top.
  "$python" - "$FLINK_CONF_DIR/config.yaml" <<PY
import sys, yaml

path = sys.argv[1]
def flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
conf = dict(flat(yaml.safe_load(open(path)) or {}))
conf.update({
    "jobmanager.rpc.address": "localhost",
    "jobmanager.rpc.port": $rpc_port,
    "jobmanager.bind-host": "localhost",
    "taskmanager.bind-host": "localhost",
    "taskmanager.host": "localhost",
    "rest.address": "localhost",
    "rest.bind-address": "localhost",
    "rest.port": $port,
    "taskmanager.numberOfTaskSlots": ${MLVIGIL_FLINK_SLOTS:-4},
    "taskmanager.memory.process.size": "${MLVIGIL_FLINK_TM_MEMORY:-4g}",
    "jobmanager.memory.process.size": "${MLVIGIL_FLINK_JM_MEMORY:-1600m}",
    "io.tmp.dirs": "$work/tmp",
    "web.tmpdir": "$work/tmp",
    "python.executable": "$python",
    "python.client.executable": "$python",
})
with open(path, "w") as f:
    for k, v in conf.items():
        f.write(f"{k}: {v}\n")
PY
  echo localhost >"$FLINK_CONF_DIR/workers"
  echo "localhost:$port" >"$FLINK_CONF_DIR/masters"
}

cmd_start() {
  if [ -n "$(pids)" ]; then
    if rest /overview >/dev/null; then
      echo "cluster: already running, REST on http://localhost:$(rest_port)"
      return 0
    fi
    echo "cluster: daemons of $work are up but the REST API does not answer; run stop first" >&2
    return 1
  fi
  local port=${MLVIGIL_FLINK_REST_PORT:-8081}
  [ "$port" != 0 ] || port=$(free_port)
  if "$python" -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$port"; then
    echo "cluster: port $port is in use; set MLVIGIL_FLINK_REST_PORT to a free port (or 0)" >&2
    return 1
  fi
  rm -rf "$FLINK_LOG_DIR" "$FLINK_PID_DIR" "$work/tmp"
  mkdir -p "$work"
  write_conf "$port" "$(free_port)"
  "$bin/start-cluster.sh" >"$FLINK_LOG_DIR/start.out" 2>&1 || {
    cat "$FLINK_LOG_DIR/start.out" >&2
    return 1
  }
  # Up when the REST API answers and a TaskManager has registered its slots.
  local deadline=$((SECONDS + ${MLVIGIL_FLINK_START_TIMEOUT:-120})) body
  while [ $SECONDS -lt $deadline ]; do
    if body=$(rest /overview) && ! echo "$body" | grep -q '"slots-total":0'; then
      echo "cluster: up, REST and web UI on http://localhost:$port (work dir $work)"
      return 0
    fi
    if [ -z "$(pids)" ]; then break; fi
    sleep 1
  done
  echo "cluster: did not come up; log tails:" >&2
  tail -n 30 "$FLINK_LOG_DIR"/*.log >&2 || true
  cmd_stop >&2
  return 1
}

cmd_submit() {
  rest /overview >/dev/null || { echo "cluster: not running (scripts/cluster.sh start)" >&2; return 1; }
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    opts+=("$1")
    shift
  done
  [ $# -gt 0 ] && shift  # the "--"
  cd "$root"
  # The client runs the job as `python -m <module>` from here: without the working directory on
  # sys.path (PYTHONSAFEPATH), so this checkout cannot shadow the mlvigil MLVIGIL_PYTHON has installed.
  export PYTHONSAFEPATH=1
  local job package
  job=$("$python" -m mlvigil path job)
  package=$("$python" -m mlvigil path package)
  echo "cluster: submitting $job" >&2
  echo "cluster: shipping $package to the Python workers (-pyfs)" >&2
  # -pyfs adds a shipped directory itself to the workers' PYTHONPATH (not its parent), so the
  # package goes as a zip holding mlvigil/ (unpacked to a dir that is put on PYTHONPATH).
  mkdir -p "$work/pyfs"
  "$python" - "$package" "$work/pyfs/mlvigil.zip" <<'PY'
import os, sys, zipfile
from pathlib import Path

src, dest = Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
    # All of it (the .py files and the SQL, conf and jar they read), through a checkout's symlinks.
    for parent, dirs, names in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            f = Path(parent, name)
            z.write(f, Path(src.name) / f.relative_to(src))
PY
  # The job sets pipeline.jars (Kafka connector, UDFs), which replaces the flink-python jar that
  # flink run puts there for a Python program: add that jar back as a classpath (-C).
  local flink_python
  flink_python=$(ls "$pyflink"/opt/flink-python-*.jar)
  # The client runs the package's job file (it reads the package's SQL and creates the
  # ClickHouse tables); the Python workers import mlvigil from the shipped zip.
  exec "$bin/flink" run "${opts[@]}" \
    -C "file://$flink_python" \
    -py "$job" \
    -pyfs "$work/pyfs/mlvigil.zip" \
    -pyexec "$python" \
    -pyclientexec "$python" \
    -- "$@"
}

cmd_status() {
  local body
  if ! body=$(rest /overview); then
    echo "cluster: not running (work dir $work)"
    return 1
  fi
  echo "cluster: http://localhost:$(rest_port) $body"
  rest /jobs/overview | "$python" -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    print("  job", j["jid"], j["name"], j["state"], "%.1f s" % (j["duration"] / 1000))'
}

cmd_stop() {
  local before
  before=$(pids)
  if [ -d "$FLINK_CONF_DIR" ]; then
    "$bin/stop-cluster.sh" >>"$FLINK_LOG_DIR/stop.out" 2>&1 || true
  fi
  # Leftovers: Python workers of a killed TaskManager, daemons the scripts lost track of.
  local p left=""
  for p in $before; do
    if kill -0 "$p" 2>/dev/null; then left="$left $p"; fi
  done
  if [ -n "$left" ]; then
    kill $left 2>/dev/null || true
    sleep 2
    for p in $left; do
      kill -9 "$p" 2>/dev/null || true
    done
  fi
  rm -f "$FLINK_PID_DIR"/*.pid
  echo "cluster: stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  submit) shift; cmd_submit "$@" ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  *) usage ;;
esac
