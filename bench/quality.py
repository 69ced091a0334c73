"""Model-quality benchmarks: label join throughput, and state memory per open prediction.

    python bench/quality.py throughput [--predictions 300000] [--backend hashmap|rocksdb]
    python bench/quality.py memory [--open 250000,1000000] [--backend rocksdb|hashmap]
    python bench/quality.py side-by-side --data DIR [--baseline CHECKOUT] [--rounds 1]

throughput: the real job (jobs/monitor.py) reading a local Kafka-protocol broker, bounded at the
produced offsets (predictions of two binary models with two segment dimensions; labels for 90 %
of them, 0 to 10 min later, 2 % sent twice, 1 % orphans). Three runs: quality layer off, on
without labels, on with labels. The join's cost is the difference of the last two net runtimes
(Flink's own measure, job start to finish): labels/s = labels / (net with labels - net without).

memory: predictions with no label yet ("open": the label join keeps each for the label
lateness, 24 h) into a local Kafka-protocol broker, the job unbounded, and after each step
(--open) once the job has counted them all and a checkpoint completed after that: the size of
the job's checkpoint directory (with RocksDB: the incremental checkpoint's shared SST files, i.e.
the state's size on disk, compressed), the JVM heap after a full GC (jcmd), and the RSS of the
whole process tree. Memory per million open predictions is the slope between the steps, which
leaves out everything that does not grow with them.

side-by-side: the peer benchmark's requests (../shared/peerbench: to_project.py --limit 500000
--labels writes DIR) through the job from JSON-lines files, without labels (the data layer alone)
and with them, back to back; with --baseline, the labels run also with another checkout's job
(e.g. /work/main) right after this one's, so both are compared in the same conditions. The
machine is shared: compare the ratios and CPU seconds of one run, not absolute times of two.

Every run records Flink's net runtime, wall time, the process tree's peak RSS and its CPU
seconds (user + system of the job and its children), and the load average when it started.
Results are appended to bench/results/quality.jsonl.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent

from throughput import machine, net_runtime_s, tree_rss_bytes  # noqa: E402

from mlvigil import clickhouse, synth  # noqa: E402
from mlvigil.broker import LocalBroker, produce  # noqa: E402
from mlvigil.profile import build_profile, save_profile  # noqa: E402

MODELS = ("recsys", "fraud")
RESULTS = ROOT / "bench" / "results" / "quality.jsonl"


def write_config(
    out: Path, backend: str, quality: bool = True, bootstrap: str = "127.0.0.1:9092", heap: str | None = None
) -> Path:
    """heap: flink.local_heap (None: the default, as a user gets it)."""
    models = {}
    for m in MODELS:
        path = out / "profiles" / f"{m}.json"
        if not path.exists():
            save_profile(build_profile(synth.training_columns(m, 5000), m, "v1"), path)
        models[m] = {"segments": ["user_type", "region"], "profiles": {"v1": str(path)}, "positive_label": 1}
    cfg = {
        "kafka": {"bootstrap_servers": bootstrap, "startup_mode": "earliest-offset", "group_id": "bench-quality"},
        "window": {"size": "1m", "out_of_orderness": "5s", "idle_timeout": "1h"},
        "labels": {"enabled": quality, "lateness": "24h"},
        "models": models,
        "clickhouse": {"url": f"chdb://{(out / 'clickhouse').resolve()}", "flush_interval": "500ms"},
        "flink": {"parallelism": 1, "checkpoint_dir": str((out / "checkpoints").resolve()),
                  "checkpoint_interval": "5s", "state_backend": backend} | ({"local_heap": heap} if heap else {}),
    }  # fmt: skip
    path = out / f"config-{backend}-{'q' if quality else 'noq'}.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def predictions(n: int, start_ms: int, minutes: int, seed: int = 1, prefix: str = "r") -> list[dict]:
    """n predictions spread evenly over `minutes` of event time, in time order (2 s jitter)."""
    rng = np.random.default_rng(seed)
    times = start_ms + (np.arange(n) * (minutes * 60_000 / n)).astype(np.int64) + rng.integers(0, 2000, n)
    score = rng.beta(2, 5, n)
    model = rng.integers(0, 2, n)
    user = rng.choice(["new", "returning"], n)
    region = rng.choice(["eu", "us", "apac"], n)
    out = []
    for i in np.argsort(times, kind="stable"):
        out.append({"request_id": f"{prefix}{i}", "model_id": MODELS[model[i]], "model_version": "v1",
                    "event_time": int(times[i]), "segments": {"user_type": str(user[i]), "region": str(region[i])},
                    "score": float(score[i]), "predicted_label": int(score[i] >= 0.5), "latency_ms": 20.0})  # fmt: skip
    return out


def labels_for(preds: list[dict], seed: int = 2) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for p, keep, d, u in zip(preds, rng.random(len(preds)) < 0.9, rng.integers(0, 600_000, len(preds)),
                             rng.random(len(preds)), strict=True):  # fmt: skip
        if keep:
            y = int(u < p["score"])
            out.append({"request_id": p["request_id"], "model_id": p["model_id"], "event_time": p["event_time"] + int(d),
                        "label": y, "outcomes": {"clicked": bool(y), "converted": False, "revenue": 0.0}})  # fmt: skip
    out += [dict(e, label=1 - e["label"]) for e in out[::50]]  # 2 % duplicates
    out += [{"request_id": f"orphan{i}", "model_id": "recsys", "event_time": preds[i * 97 % len(preds)]["event_time"],
             "label": 0} for i in range(len(out) // 100)]  # fmt: skip
    return sorted(out, key=lambda e: e["event_time"] + int(rng.integers(0, 2000)))


def tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [
                int(c)
                for t in os.listdir(f"/proc/{p}/task")
                for c in open(f"/proc/{p}/task/{t}/children").read().split()
            ]
        except OSError:
            pass
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def measured(cmd: list[str]) -> dict:
    """Runs the job: Flink's net runtime, wall time, and the process tree's peak RSS and CPU
    seconds (the JVM is not a waited-for child of the driver, so rusage would miss it: each
    process's CPU time is sampled, its last sample kept; at most 0.2 s per process is missed)."""
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, cpu = [0], {}

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            for p in tree_pids(proc.pid):
                cpu[p] = max(cpu.get(p, 0.0), cpu_s(p))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    err = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit(f"job failed ({proc.returncode}):\n{err[-3000:]}")
    return {"net_s": net_runtime_s(err), "wall_s": round(time.monotonic() - t0, 2),
            "peak_rss_mb": round(peak[0] / 2**20), "cpu_s": round(sum(cpu.values()), 1),
            "load_avg_1m_at_start": round(load, 1)}  # fmt: skip


def run_job(config: Path, stop: dict) -> dict:
    cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(config), "--stop-offsets",
           json.dumps({s: {str(p): o for p, o in v.items()} for s, v in stop.items()})]  # fmt: skip
    return measured(cmd)


def side_by_side(args) -> None:
    data = Path(args.data).resolve()
    files = {s: data / f"{s}.jsonl" for s in ("features", "predictions", "labels")}
    n_requests, n_labels = (sum(1 for _ in open(files[s], "rb")) for s in ("predictions", "labels"))
    codes = {"this": ROOT} | ({"baseline": Path(args.baseline).resolve()} if args.baseline else {})

    def run(root: Path, streams: tuple[str, ...]) -> dict:
        subprocess.run(["rm", "-rf", str(data / "clickhouse"), str(data / "checkpoints")], check=True)
        cmd = [sys.executable, str(root / "jobs" / "monitor.py"), "--config", str(data / "config.yaml"),
               "--source-files", ",".join(f"{s}={files[s]}" for s in streams)]  # fmt: skip
        os.environ["PYTHONPATH"] = str(root)  # the Python workers import that checkout's mlvigil too
        try:
            r = measured(cmd)
        finally:
            os.environ["PYTHONPATH"] = str(ROOT)
        print(root, streams, r, flush=True)
        return r

    for _ in range(args.rounds):
        runs = {"data layer": run(ROOT, ("features", "predictions"))}
        for name, root in codes.items():
            runs[f"labels ({name})"] = run(root, ("features", "predictions", "labels"))
        base = runs["data layer"]
        result = {
            "bench": "label join side by side",
            "requests": n_requests,
            "labels": n_labels,
            "code": {k: str(v) for k, v in codes.items()},
            "runs": runs,
            "requests_per_s_net": {k: round(n_requests / v["net_s"]) for k, v in runs.items()},
            "ratio_net_labels_to_data": {k: round(base["net_s"] / v["net_s"], 3) for k, v in runs.items()},
            "ratio_cpu_labels_to_data": {k: round(base["cpu_s"] / v["cpu_s"], 3) for k, v in runs.items()},
            "source": "../shared/peerbench to_project.py --limit 500000 --labels (90 % of requests labelled, "
            "0-10 min late), JSON-lines files, parallelism 1, one run after the other",
            "machine": machine(),
            "conditions": "2 cores shared with other agents' jobs: see load_avg_1m_at_start; compare within a row",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        record(result)


def throughput(args) -> None:
    out = ROOT / "bench" / "data" / "quality"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = (int(time.time() * 1000) // 60_000 - 90) * 60_000
    preds = predictions(args.predictions, start, minutes=60)
    labels = labels_for(preds)
    msg = lambda evs: [(e["request_id"].encode(), orjson.dumps(e), None) for e in evs]  # noqa: E731
    runs = {}
    with LocalBroker(log_file=out / "broker.log") as broker:
        for t in ("features", "predictions", "labels", "dead-letters"):
            broker.create_topic(f"mlvigil.{t}")
        full = {
            "predictions": produce(broker.bootstrap, "mlvigil.predictions", msg(preds)),
            "labels": produce(broker.bootstrap, "mlvigil.labels", msg(labels)),
        }
        for name, quality, stop in (("quality off", False, {"predictions": full["predictions"]}),
                                    ("no labels", True, {"predictions": full["predictions"]}),
                                    ("labels", True, full)):  # fmt: skip
            shutil.rmtree(out / "clickhouse", ignore_errors=True)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            runs[name] = run_job(write_config(out, args.backend, quality, broker.bootstrap), stop)
            print(name, runs[name], flush=True)
    url = f"chdb://{(out / 'clickhouse').resolve()}"
    matched = clickhouse.query_rows(url, "SELECT sum(labelled) FROM mlvigil.quality_metrics FINAL WHERE segment = '*'")
    n, nl = len(preds), len(labels)
    join_s = runs["labels"]["net_s"] - runs["no labels"]["net_s"]
    result = {
        "bench": "label join throughput",
        "backend": args.backend,
        "predictions": n,
        "labels": nl,
        "labels_matched": int(matched[0][0]),
        "net_s": {k: round(v["net_s"], 2) for k, v in runs.items()},
        "predictions_per_s_net": {k: round(n / v["net_s"]) for k, v in runs.items()},
        "labels_per_s_marginal": round(nl / join_s) if join_s > 0 else None,
        "events_per_s_net_with_labels": round((n + nl) / runs["labels"]["net_s"]),
        "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in runs.items()},
        "cpu_s": {k: v["cpu_s"] for k, v in runs.items()},
        "load_avg_1m_at_start": {k: v["load_avg_1m_at_start"] for k, v in runs.items()},
        "source": "local Kafka-protocol broker (Tansu); 2 models x 2 segment dimensions; labels 0-10 min after "
        "their prediction, 2 % duplicates, 1 % orphans; L = 24 h",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    record(result)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def checkpoint_bytes(checkpoints: Path) -> int:
    """The newest completed checkpoint: its chk-N directory (a full heap snapshot) plus the
    shared files it may reference (RocksDB's incremental SSTs). Not the whole directory, which
    can hold a second checkpoint being written or not yet subsumed."""
    done = max((m.parent for m in checkpoints.glob("*/chk-*/_metadata")), key=lambda d: int(d.name.split("-")[1]))
    return du(done) + du(done.parent / "shared")


def jvm_of(pid: int) -> int | None:
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            if "java" in Path(f"/proc/{p}/comm").read_text():
                return p
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return None


def heap_after_gc(jvm: int) -> int:
    subprocess.run(["jcmd", str(jvm), "GC.run"], capture_output=True, timeout=120)
    info = subprocess.run(["jcmd", str(jvm), "GC.heap_info"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"used (\d+)K", info)
    return int(m.group(1)) * 1024 if m else -1


def heap_histogram(jvm: int, top: int = 12) -> list[list]:
    """The classes holding most of the heap (jcmd GC.class_histogram): [class, instances, bytes]."""
    text = subprocess.run(["jcmd", str(jvm), "GC.class_histogram"], capture_output=True, text=True, timeout=300).stdout
    rows = [m.groups() for m in re.finditer(r"^\s*\d+:\s+(\d+)\s+(\d+)\s+(\S+)", text, re.MULTILINE)]
    return [[name, int(n), int(b)] for n, b, name in rows[:top]]


def memory(args) -> None:
    steps = [int(x) for x in args.open.split(",")]
    out = ROOT / "bench" / "data" / f"quality-memory-{args.backend}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    url = f"chdb://{(out / 'clickhouse').resolve()}"
    now = int(time.time() * 1000) // 60_000 * 60_000
    points = []
    with LocalBroker(log_file=out / "broker.log") as broker:
        for t in ("features", "predictions", "labels", "dead-letters"):
            broker.create_topic(f"mlvigil.{t}")
        # The heap must hold the largest step's open predictions (measured after a full GC).
        config = write_config(out, args.backend, True, broker.bootstrap, heap="4g")
        job = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=open(out / "job.log", "w"), start_new_session=True)  # fmt: skip
        try:
            produced = 0
            for i, total in enumerate(steps):
                n = total - produced
                # Five minutes of event time per step, each after the last (none late), in the last
                # hour before now: none is older than L = 24 h.
                evs = predictions(n, now - 60 * 60_000 + i * 6 * 60_000, minutes=5, seed=10 + i, prefix=f"s{i}r")
                produce(broker.bootstrap, "mlvigil.predictions",
                        [(e["request_id"].encode(), orjson.dumps(e), None) for e in evs])  # fmt: skip
                produced = total
                deadline = time.monotonic() + 1800
                while time.monotonic() < deadline:
                    if job.poll() is not None:
                        sys.exit(f"job died; see {out / 'job.log'}")
                    try:
                        got = clickhouse.query_rows(
                            url, "SELECT sum(predictions) FROM mlvigil.quality_metrics FINAL WHERE segment = '*'"
                        )[0][0]
                    except Exception:
                        got = 0
                    if got and got >= total:
                        break
                    time.sleep(10)  # each look holds the embedded store, which the job's writer needs too
                else:
                    sys.exit("the job did not count the predictions in time")
                t = time.time()
                while not [m for m in (out / "checkpoints").glob("*/chk-*/_metadata") if m.stat().st_mtime > t + 1]:
                    time.sleep(1)
                time.sleep(2)
                jvm = jvm_of(job.pid)
                point = {
                    "open_predictions": total,
                    "checkpoint_bytes": checkpoint_bytes(out / "checkpoints"),
                    "heap_after_gc_bytes": heap_after_gc(jvm) if jvm else -1,
                    "rss_bytes": tree_rss_bytes(job.pid),
                    "heap_top_classes": heap_histogram(jvm) if jvm else [],
                }
                print(point, flush=True)
                points.append(point)
        finally:
            os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM (a session of their own)
            job.wait()
    a, b = points[0], points[-1]
    per_m = {k: round((b[k] - a[k]) / (b["open_predictions"] - a["open_predictions"]) * 1e6 / 2**20, 1)
             for k in ("checkpoint_bytes", "heap_after_gc_bytes", "rss_bytes")}  # fmt: skip
    result = {
        "bench": "state memory per million open predictions",
        "backend": args.backend,
        "points": points,
        "mib_per_million_open": per_m,
        "note": "slope between the first and last step; each prediction: request id ~8-10 chars, 2 segments, "
        "score, predicted label; Kafka source, job unbounded, L = 24 h",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    record(result)


def record(result: dict) -> None:
    print(json.dumps(result))
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(result) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--predictions", type=int, default=300_000)
    t.add_argument("--backend", default="hashmap", choices=("hashmap", "rocksdb"))
    m = sub.add_parser("memory")
    m.add_argument("--open", default="250000,1000000", help="comma-separated totals of open predictions")
    m.add_argument("--backend", default="rocksdb", choices=("hashmap", "rocksdb"))
    s = sub.add_parser("side-by-side")
    s.add_argument("--data", required=True, help="a to_project.py --labels output directory")
    s.add_argument("--baseline", default=None, help="another checkout whose labels run to compare right after")
    s.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    {"throughput": throughput, "memory": memory, "side-by-side": side_by_side}[args.cmd](args)


if __name__ == "__main__":
    main()
