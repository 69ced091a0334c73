"""Job throughput and peak memory on a generated data set (bench/generate.py).

    python bench/throughput.py --data bench/data/base [--label base]

Runs the real job (jobs/monitor.py) on Flink's local mini-cluster with the JSON-lines files as
sources, samples the RSS of the whole process tree (Python driver + JVM + Python workers) every
0.2 s, and reports events per second over the job's net runtime (Flink's own measure, from job
start to finish, so JVM start-up and planning are excluded) and over the whole wall time.
Results are appended to bench/results/throughput.jsonl.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tree_rss_bytes(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.machine()}, Python {platform.python_version()}"


def net_runtime_s(job_stderr: str) -> float:
    m = re.search(r"net runtime (\d+) ms", job_stderr)
    if not m:
        raise SystemExit("the job did not report its net runtime")
    return int(m.group(1)) / 1000


def run_measured(cmd: list[str]) -> tuple[str, float, int]:
    """Runs the job; returns its stderr, wall seconds and the process tree's peak RSS in bytes."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    err = proc.stderr.read()
    rc = proc.wait()
    if rc != 0:
        sys.exit(f"job failed ({rc}):\n{err[-3000:]}")
    return err, time.monotonic() - t0, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--label", default=None)
    ap.add_argument("--parallelism", type=int, default=None)
    args = ap.parse_args()
    data = Path(args.data)
    events = count_lines(data / "features.jsonl") + count_lines(data / "predictions.jsonl")
    subprocess.run(["rm", "-rf", str(data / "clickhouse"), str(data / "checkpoints")], check=True)
    cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(data / "config.yaml"),
           "--source-files", f"features={data / 'features.jsonl'},predictions={data / 'predictions.jsonl'}"]  # fmt: skip
    if args.parallelism:
        cmd += ["--parallelism", str(args.parallelism)]
    err, wall, peak = run_measured(cmd)
    net = net_runtime_s(err)
    result = {
        "label": args.label or data.name,
        "events": events,
        "net_runtime_s": round(net, 2),
        "wall_s": round(wall, 2),
        "events_per_s_net": round(events / net),
        "events_per_s_wall": round(events / wall),
        "peak_rss_mb": round(peak / 2**20),
        "source": "JSON-lines files",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    with open(ROOT / "bench" / "results" / "throughput.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
