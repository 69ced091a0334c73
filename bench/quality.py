"""Model-quality benchmarks: label join throughput, and state memory per open prediction.

    python bench/quality.py throughput [--predictions 300000] [--backend hashmap|rocksdb]
    python bench/quality.py memory [--open 250000,1000000] [--backend rocksdb|hashmap]

throughput: the real job (jobs/monitor.py) reading a local Kafka-protocol broker, bounded at the
produced offsets (predictions of two binary models with two segment dimensions; labels for 90 %
of them, 0 to 10 min later, 2 % sent twice, 1 % orphans). Three runs: quality layer off, on
without labels, on with labels. The join's cost is the difference of the last two net runtimes
(Flink's own measure, job start to finish): labels/s = labels / (net with labels - net without).

memory: predictions with no label yet ("open": the interval join keeps each for the label
lateness, 24 h) into a local Kafka-protocol broker, the job unbounded, and after each step
(--open) once the job has counted them all and a checkpoint completed after that: the size of
the job's checkpoint directory (with RocksDB: the incremental checkpoint's shared SST files, i.e.
the state's size on disk, compressed), the JVM heap after a full GC (jcmd), and the RSS of the
whole process tree. Memory per million open predictions is the slope between the steps, which
leaves out everything that does not grow with them.

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
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent

from throughput import machine, net_runtime_s, run_measured, tree_rss_bytes  # noqa: E402

from mlvigil import clickhouse, synth  # noqa: E402
from mlvigil.broker import LocalBroker, produce  # noqa: E402
from mlvigil.profile import build_profile, save_profile  # noqa: E402

MODELS = ("recsys", "fraud")
RESULTS = ROOT / "bench" / "results" / "quality.jsonl"


def write_config(out: Path, backend: str, quality: bool = True, bootstrap: str = "127.0.0.1:9092") -> Path:
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
                  "checkpoint_interval": "5s", "state_backend": backend},
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


def run_job(config: Path, stop: dict) -> dict:
    cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(config), "--stop-offsets",
           json.dumps({s: {str(p): o for p, o in v.items()} for s, v in stop.items()})]  # fmt: skip
    err, wall, peak = run_measured(cmd)
    return {"net_s": net_runtime_s(err), "wall_s": wall, "peak_rss_mb": round(peak / 2**20)}


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
        "source": "local Kafka-protocol broker (Tansu); 2 models x 2 segment dimensions; labels 0-10 min after "
        "their prediction, 2 % duplicates, 1 % orphans; L = 24 h",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    record(result)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


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
        config = write_config(out, args.backend, True, broker.bootstrap)
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
                    "checkpoint_bytes": du(next((out / "checkpoints").iterdir())),
                    "heap_after_gc_bytes": heap_after_gc(jvm) if jvm else -1,
                    "rss_bytes": tree_rss_bytes(job.pid),
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
    args = ap.parse_args()
    throughput(args) if args.cmd == "throughput" else memory(args)


if __name__ == "__main__":
    main()
