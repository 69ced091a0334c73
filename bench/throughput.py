"""Job throughput and peak memory on a generated data set (bench/generate.py).

    python bench/throughput.py --data bench/data/base [--label base]
    python bench/throughput.py --data .peerbench/project --numpy-data .peerbench/data \
        --numpy-python .peerbench/venv/bin/python --rounds 2      # side by side with the numpy pass

Runs the real job (jobs/monitor.py) on Flink's local mini-cluster with the JSON-lines files as
sources (a stream's source may also be a directory of files: one split per file, so that many
source subtasks can read), samples the RSS and CPU time of the whole process tree (Python driver
+ JVM + Python workers) every 0.2 s, and reports events per second over the job's net runtime
(Flink's own measure, from job start to finish, so JVM start-up and planning are excluded) and
over the whole wall time, with start-up (process start to job submission: JVM, planning) apart.
CPU seconds are the tree's user + system time from submission to the end of the job: on a
machine shared with other work they move less than the wall times.

With --numpy-data, the peer benchmark's numpy single pass (../shared/peerbench/ref_numpy.py)
runs on the same requests right before each job run, and the ratio of the two rates is stated
(requests/s = feature events / net runtime: one request is one feature and one prediction event).
Results are appended to bench/results/throughput.jsonl.
"""

import argparse
import json
import os
import platform
import re
import resource
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


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (and of their reaped children)."""
    total, todo, tick = 0.0, [pid], os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


def count_lines(path: Path) -> int:
    """Lines of a file, or of all files in a directory (a source read as many splits)."""
    if path.is_dir():
        return sum(count_lines(p) for p in sorted(path.iterdir()) if p.is_file())
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))


def source_path(data: Path, stream: str) -> Path:
    """<data>/<stream>.jsonl, or <data>/<stream>/ (a directory of JSON-lines files)."""
    return data / f"{stream}.jsonl" if (data / f"{stream}.jsonl").exists() else data / stream


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


class Measured:
    def __init__(self, stderr: str, wall_s: float, startup_s: float, peak_rss: int, cpu_s: float):
        self.stderr, self.wall_s, self.startup_s, self.peak_rss, self.cpu_s = stderr, wall_s, startup_s, peak_rss, cpu_s


def run_measured(cmd: list[str], env: dict | None = None) -> Measured:
    """Runs the job; measures wall time, start-up (until the job is submitted: JVM start and
    planning), the process tree's peak RSS, and its CPU seconds from submission to the end."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    peak, cpu = [0], [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            cpu[0] = max(cpu[0], tree_cpu_s(proc.pid))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    lines, submitted, cpu_at_submit, cpu_at_end = [], None, 0.0, None
    for line in proc.stderr:
        lines.append(line)
        if submitted is None and "starting job" in line:
            submitted, cpu_at_submit = time.monotonic(), tree_cpu_s(proc.pid)
        if "net runtime" in line:
            cpu_at_end = tree_cpu_s(proc.pid)
    rc = proc.wait()
    err = "".join(lines)
    if rc != 0:
        sys.exit(f"job failed ({rc}):\n{err[-3000:]}")
    end = time.monotonic()
    # The job exits right after printing its net runtime, often before that line is read here:
    # then the sampler's last reading (at most 0.2 s before the end) is the end's.
    cpu_end = max(cpu[0], cpu_at_end or 0.0)
    return Measured(err, end - t0, (submitted or end) - t0, peak[0], cpu_end - cpu_at_submit)


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def numpy_pass(python: str, data: Path, out: Path) -> dict:
    """The peer benchmark's numpy single pass on the same requests (its own timing: parse + metrics)."""
    script = ROOT.parent / "shared" / "peerbench" / "ref_numpy.py"
    if not script.exists():
        script = Path("/work/shared/peerbench/ref_numpy.py")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([python, str(script), "--data", str(data), "--out", str(out)], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"numpy pass failed:\n{r.stderr[-2000:]}")
    m = re.search(r"RESULT numpy events/s=([\d,]+) \(load\+compute ([\d.]+)s\)", r.stdout)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    # cpu_s_process: the whole process, reference preparation and CSV writing included
    return {
        "requests_per_s": int(m.group(1).replace(",", "")),
        "seconds": float(m.group(2)),
        "cpu_s_process": round(cpu, 1),
    }


def run_job(data: Path, parallelism: int | None, extra_env: dict | None = None) -> dict:
    """One job run on <data>'s files; returns the measures (events = feature + prediction events)."""
    feats, preds = source_path(data, "features"), source_path(data, "predictions")
    requests = count_lines(feats)
    events = requests + count_lines(preds)
    subprocess.run(["rm", "-rf", str(data / "clickhouse"), str(data / "checkpoints")], check=True)
    cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(data / "config.yaml"),
           "--source-files", f"features={feats},predictions={preds}"]  # fmt: skip
    if parallelism:
        cmd += ["--parallelism", str(parallelism)]
    load = load_average()
    m = run_measured(cmd, {**os.environ, **(extra_env or {})})
    net = net_runtime_s(m.stderr)
    return {
        "events": events,
        "requests": requests,
        "parallelism": parallelism or 1,
        "net_runtime_s": round(net, 2),
        "wall_s": round(m.wall_s, 2),
        "startup_s": round(m.startup_s, 2),
        "events_per_s_net": round(events / net),
        "requests_per_s_net": round(requests / net),
        "events_per_s_wall": round(events / m.wall_s),
        "cpu_s_job": round(m.cpu_s, 1),
        "peak_rss_mb": round(m.peak_rss / 2**20),
        "load_average_1m_at_start": load,
    }


def append_result(name: str, result: dict) -> None:
    print(json.dumps(result), flush=True)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    with open(ROOT / "bench" / "results" / name, "a") as f:
        f.write(json.dumps(result) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--label", default=None)
    ap.add_argument("--parallelism", type=int, default=None)
    ap.add_argument("--numpy-data", help="peer benchmark data dir (events.jsonl): run the numpy pass side by side")
    ap.add_argument("--numpy-python", default=sys.executable, help="python with numpy and orjson for the numpy pass")
    ap.add_argument("--rounds", type=int, default=1, help="numpy pass + job run, this many times back to back")
    args = ap.parse_args()
    data = Path(args.data)
    for _ in range(args.rounds):
        peer = None
        if args.numpy_data:
            load = load_average()
            peer = numpy_pass(args.numpy_python, Path(args.numpy_data), data / "numpy-results")
            peer["load_average_1m_at_start"] = load
        result = {"label": args.label or data.name, **run_job(data, args.parallelism), "source": "JSON-lines files"}
        if peer is not None:
            result["numpy_pass"] = peer
            result["ratio_to_numpy_net"] = round(result["requests_per_s_net"] / peer["requests_per_s"], 3)
        result.update(machine=machine(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        append_result("throughput.jsonl", result)


if __name__ == "__main__":
    main()
