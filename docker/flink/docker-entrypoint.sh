#!/usr/bin/env bash
# mlvigil Flink image entry point. Roles:
#   jobmanager     Flink JobManager in the foreground (REST and web UI on 8081)
#   taskmanager    Flink TaskManager in the foreground
#   submit         submits jobs/monitor.py to the JobManager (--config $MLVIGIL_CONFIG), detached;
#                  does nothing if an mlvigil-monitor job is already running or starting
#   produce        demo traffic to Kafka (docker/demo_producer.py)
#   help           this text
# Anything else runs as a command (the Flink Kubernetes Operator starts the Flink scripts so).
# Flink settings: FLINK_PROPERTIES, "key: value" lines, on top of the wheel's conf/config.yaml.
set -euo pipefail

root=${MLVIGIL_HOME:-/opt/mlvigil}
python=${MLVIGIL_WORKER_PYTHON:-$root/.venv/bin/python}

write_conf() {
  mkdir -p "$FLINK_CONF_DIR"
  if [ "$FLINK_CONF_DIR" != "$FLINK_HOME/conf" ]; then
    cp -r "$FLINK_HOME"/conf/. "$FLINK_CONF_DIR"/
  fi
  # mlvigil's log4j files over the wheel's: the same, with Beam's loggers that print the Python
  # workers' environment (secrets included) turned off (conf/log4j-console.properties is what
  # jobmanager.sh/taskmanager.sh start-foreground use; scripts/cluster.sh does the same).
  cp "$root"/conf/log4j*.properties "$FLINK_CONF_DIR"/
  "$python" - "$FLINK_CONF_DIR/config.yaml" <<'PY'
import os, sys, yaml

path = sys.argv[1]
def flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
conf = dict(flat(yaml.safe_load(open(path)) or {}))
conf.update({
    "jobmanager.bind-host": "0.0.0.0",
    "taskmanager.bind-host": "0.0.0.0",
    "rest.bind-address": "0.0.0.0",
    "python.executable": os.environ["MLVIGIL_WORKER_PYTHON"],
    "python.client.executable": os.environ["MLVIGIL_WORKER_PYTHON"],
})
for line in os.environ.get("FLINK_PROPERTIES", "").splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
        key, _, value = line.partition(":")
        conf[key.strip()] = value.strip()
with open(path, "w") as f:
    for k, v in conf.items():
        f.write(f"{k}: {v}\n")
PY
}

rest_url() {
  local host port
  host=$(sed -n 's/^rest\.address: *//p' "$FLINK_CONF_DIR/config.yaml")
  port=$(sed -n 's/^rest\.port: *//p' "$FLINK_CONF_DIR/config.yaml")
  echo "http://${host:-localhost}:${port:-8081}"
}

# Prints the state of the newest job named mlvigil-monitor (nothing if there is none).
job_state() {
  "$python" - "$(rest_url)" <<'PY'
import json, sys, urllib.request
jobs = json.load(urllib.request.urlopen(sys.argv[1] + "/jobs/overview", timeout=10))["jobs"]
mine = sorted((j for j in jobs if j["name"] == "mlvigil-monitor"), key=lambda j: j["start-time"])
print(mine[-1]["state"] if mine else "")
PY
}

submit() {
  local url state
  url=$(rest_url)
  for _ in $(seq 1 120); do
    if "$python" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1] + '/overview', timeout=5)" "$url" 2>/dev/null; then
      break
    fi
    sleep 2
  done
  state=$(job_state || true)
  case "$state" in
    RUNNING|CREATED|INITIALIZING|RESTARTING|RECONCILING)
      echo "submit: mlvigil-monitor is already $state on $url"; return 0 ;;
  esac
  cd "$root"
  flink run --detached -py jobs/monitor.py -pyexec "$python" -pyclientexec "$python" \
    -- --config "$MLVIGIL_CONFIG" "$@" || echo "submit: flink run exited $? (checking the job's state)"
  for _ in $(seq 1 60); do
    state=$(job_state || true)
    case "$state" in
      RUNNING) echo "submit: mlvigil-monitor is running, web UI $url"; return 0 ;;
      FAILED|CANCELED|FINISHED) echo "submit: mlvigil-monitor is $state" >&2; return 1 ;;
    esac
    sleep 2
  done
  echo "submit: mlvigil-monitor did not start (state: ${state:-none})" >&2
  return 1
}

role=${1:-help}
case "$role" in
  jobmanager)
    shift; write_conf
    exec "$FLINK_HOME/bin/jobmanager.sh" start-foreground "$@" ;;
  taskmanager)
    shift; write_conf
    exec "$FLINK_HOME/bin/taskmanager.sh" start-foreground "$@" ;;
  submit)
    shift; write_conf
    submit "$@" ;;
  produce)
    shift
    exec "$python" "$root"/docker/demo_producer.py "$@" ;;
  help|--help|-h)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    exec "$@" ;;
esac
