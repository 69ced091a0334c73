"""Freshness: how soon after a window closes are its metric rows in ClickHouse?

    python bench/latency.py [--seconds 150] [--rate 1000] [--window 10s]

Live traffic (event time = wall clock) for two models goes to a local Tansu broker at --rate
feature events/s plus as many predictions; the job runs unbounded on the embedded defaults.
A window closes when the watermark passes its end, i.e. at window_end + out_of_orderness.
For each complete window we report (a) computed_at - close (the job's own latency) and
(b) when a reader polling ClickHouse every 0.5 s first saw the row - close (what a user sees,
including the writer's flush interval and chDB's one-process lock shared with the reader).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent

from throughput import machine  # noqa: E402

from mlvigil import clickhouse, synth  # noqa: E402
from mlvigil.broker import LocalBroker  # noqa: E402
from mlvigil.config import duration_ms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=150)
    ap.add_argument("--rate", type=int, default=1000, help="feature events per second (and as many predictions)")
    ap.add_argument("--window", default="10s")
    ap.add_argument("--out-of-orderness", default="2s")
    ap.add_argument("--no-reader", action="store_true", help="no concurrent ClickHouse reader (the job alone)")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "data" / "latency"))
    args = ap.parse_args()
    work = Path(args.workdir)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    ooo_ms = duration_ms(args.out_of_orderness)
    url = f"chdb://{work / 'clickhouse'}"
    from confluent_kafka import Producer

    with LocalBroker() as broker:
        topics = broker.create_topics("lat")
        models = synth.save_profiles(work, 10_000).models
        cfg = {
            "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics},
            "window": {"size": args.window, "out_of_orderness": args.out_of_orderness, "idle_timeout": "5s"},
            "models": models,
            "clickhouse": {"url": url, "flush_interval": "200ms"},
            "flink": {"checkpoint_dir": str(work / "ckpt")},
        }
        (work / "config.yaml").write_text(json.dumps(cfg))
        job = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(work / "config.yaml")],
                               stdout=subprocess.DEVNULL, stderr=open(work / "job.log", "w"),
                               start_new_session=True)  # fmt: skip
        stop = threading.Event()
        seen: dict[int, float] = {}
        errors: list[str] = []

        def producer() -> None:
            p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
            rng = np.random.default_rng(1)
            i = 0
            while not stop.is_set():
                t0 = time.time()
                n = max(1, args.rate // 10)
                for model in synth.MODELS:
                    f = synth.FEATURES[model](rng, n // 2 or 1, False)
                    for k in range(n // 2 or 1):
                        now = int(time.time() * 1000)
                        rid = f"r{i}"
                        i += 1
                        values = {name: (v[k].item() if hasattr(v[k], "item") else v[k]) for name, v in f.items()}
                        seg = {"region": "eu", "user_type": "new"}
                        p.produce(topics["features"], orjson.dumps({"request_id": rid, "model_id": model, "model_version": "v1",
                                  "event_time": now, "segments": seg, "features": values}), partition=i % 4)  # fmt: skip
                        p.produce(topics["predictions"], orjson.dumps({"request_id": rid, "model_id": model, "model_version": "v1",
                                  "event_time": now, "score": 0.3, "latency_ms": 40.0}), partition=i % 4)  # fmt: skip
                p.poll(0)
                time.sleep(max(0.0, 0.1 - (time.time() - t0)))
            p.flush(10)

        def reader() -> None:
            while not stop.is_set():
                try:
                    rows = clickhouse.run(
                        url,
                        lambda c: (
                            c.query(
                                "SELECT DISTINCT toUnixTimestamp64Milli(window_end) FROM mlvigil.window_events"
                            ).result_rows
                        ),
                        give_up_after_s=5,
                    )
                    now = time.time() * 1000
                    for (end,) in rows:
                        seen.setdefault(end, now)
                except Exception as e:  # the store is busy: try again
                    errors.append(repr(e)[:200])
                time.sleep(0.5)

        threads = [threading.Thread(target=producer)] + ([] if args.no_reader else [threading.Thread(target=reader)])
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        os.killpg(job.pid, signal.SIGTERM)  # the driver and its JVM
        job.wait(30)
    rows = clickhouse.query_rows(
        url,
        "SELECT toUnixTimestamp64Milli(window_end), max(toUnixTimestamp64Milli(computed_at)), sum(events)"
        " FROM mlvigil.window_events FINAL WHERE stream = 'features' GROUP BY window_end ORDER BY window_end",
    )
    # The first and last windows are partial (traffic started/stopped inside them).
    full = rows[1:-1]
    job_lat = [(c - (end + ooo_ms)) / 1000 for end, c, _ in full]
    seen_lat = [(seen[end] - (end + ooo_ms)) / 1000 for end, _, _ in full if end in seen]
    if not seen_lat and not args.no_reader:
        sys.exit(f"the reader never saw a window; its errors: {errors[-3:]}")
    result = {
        "window": args.window,
        "out_of_orderness": args.out_of_orderness,
        "rate_events_per_s": args.rate * 2,
        "windows": len(full),
        "computed_after_close_s": {"median": round(statistics.median(job_lat), 3), "max": round(max(job_lat), 3)},
        "reader": "none" if args.no_reader else "polling ClickHouse every 0.5 s",
        "visible_after_close_s": None
        if args.no_reader
        else {"median": round(statistics.median(seen_lat), 3), "max": round(max(seen_lat), 3)},
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    with open(ROOT / "bench" / "results" / "latency.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
