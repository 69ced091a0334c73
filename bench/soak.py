"""Soak: the whole job (labels and alerting on) under steady live traffic for a long time.

    python bench/soak.py [--minutes 30] [--rate 2000] [--window 1m]

Live traffic (event time = wall clock) for two models goes to a local Tansu broker: --rate
requests/s, each a feature event and a prediction, and for 90 % of them a label 0-60 s later (wall
clock). Every 5th minute recsys drifts for a minute, so the alerting path has work (a local
webhook receiver counts what arrives). The job runs unbounded on the embedded defaults with a
checkpoint every 10 s. Sampled every 10 s: RSS of the job's process tree, and the newest completed
checkpoint from Flink's REST API (size, duration). At the end the job is stopped and ClickHouse
is read once: events counted per minute (does the job keep up?), and how long after its close
each window's row was computed (freshness: computed_at - (window_end + out_of_orderness)).

Reported: produced vs counted requests/s per minute (min, median), freshness p50/p95/max, RSS at
start and end and its slope over the second half (MiB per minute, least squares), checkpoint
size first/last and duration p50/max, notifications received. Appended to bench/results/soak.jsonl.
"""

import argparse
import heapq
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent

from throughput import machine, tree_rss_bytes  # noqa: E402

from mlvigil import clickhouse, synth  # noqa: E402
from mlvigil.broker import LocalBroker  # noqa: E402
from mlvigil.config import duration_ms  # noqa: E402
from mlvigil.webhook_receiver import WebhookReceiver  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return json.load(r)
    except Exception:  # REST not up yet, or the job restarting: a missing sample
        return None


def latest_checkpoint(port: int) -> dict | None:
    jobs = rest(port, "/jobs") or {}
    running = [j["id"] for j in jobs.get("jobs", []) if j.get("status") == "RUNNING"]
    if not running:
        return None
    stats = rest(port, f"/jobs/{running[0]}/checkpoints") or {}
    done = (stats.get("latest") or {}).get("completed")
    if not done:
        return None
    return {
        "id": done["id"],
        "bytes": done.get("checkpointed_size", done.get("state_size")),
        "state_bytes": done.get("state_size"),
        "duration_ms": done.get("end_to_end_duration"),
        "failed": (stats.get("counts") or {}).get("failed", 0),
    }


SPAWN = multiprocessing.get_context("spawn")


class Producer(SPAWN.Process):
    """Live requests at `rate`/s; labels for 90 % of them, 0-60 s later in wall time. A process of
    its own, so the producer's Python work does not share a GIL with the sampling here. After
    stop is set, `result` gets ({minute (epoch ms): requests}, labels sent)."""

    def __init__(self, bootstrap: str, topics: dict, rate: int):
        super().__init__(daemon=True)
        self.bootstrap, self.topics, self.rate = bootstrap, topics, rate
        self.stop = SPAWN.Event()
        self.result = SPAWN.Queue()
        self.produced: dict[int, int] = {}
        self.labels_sent = 0

    def run(self) -> None:
        from confluent_kafka import Producer as KafkaProducer

        p = KafkaProducer(
            {"bootstrap.servers": self.bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000}
        )
        rng = np.random.default_rng(5)
        due: list[tuple[int, int, bytes]] = []  # (send at ms, seq, label json)
        seq = i = 0
        tick_s = 0.1
        while not self.stop.is_set():
            t0 = time.time()
            now = int(t0 * 1000)
            drifted = (now // 60_000) % 5 == 4
            n = max(2, int(self.rate * tick_s))
            for model in synth.MODELS:
                k = n // 2
                f = synth.FEATURES[model](rng, k, drifted and model == "recsys")
                score = synth.score_of(model, f)
                delay = rng.integers(0, 60_000, k)
                labelled = rng.random(k) < 0.9
                y = rng.random(k)
                for j in range(k):
                    rid = f"s{i}"
                    i += 1
                    seg = {"region": ("eu", "us", "apac")[i % 3]}
                    if model == "recsys":
                        seg["user_type"] = ("new", "returning")[i % 2]
                    values = {name: v[j].item() for name, v in f.items()}
                    head = {"request_id": rid, "model_id": model, "model_version": "v1", "event_time": now}
                    p.produce(self.topics["features"], orjson.dumps({**head, "segments": seg, "features": values}),
                              key=rid.encode(), partition=i % 4)  # fmt: skip
                    s = float(score[j])
                    p.produce(self.topics["predictions"],
                              orjson.dumps({**head, "score": s, "predicted_label": int(s >= 0.5), "latency_ms": 40.0,
                                            "status": "ok"}), key=rid.encode(), partition=i % 4)  # fmt: skip
                    if labelled[j]:
                        true_p = min(1.0, s * (2.5 if drifted and model == "recsys" else 1.0))
                        label = {"request_id": rid, "model_id": model, "event_time": now + int(delay[j]),
                                 "label": int(y[j] < true_p)}  # fmt: skip
                        heapq.heappush(due, (now + int(delay[j]), seq, orjson.dumps(label)))
                        seq += 1
                self.produced[now // 60_000 * 60_000] = self.produced.get(now // 60_000 * 60_000, 0) + k
            while due and due[0][0] <= now:
                _, _, body = heapq.heappop(due)
                p.produce(self.topics["labels"], body, partition=self.labels_sent % 4)
                self.labels_sent += 1
            p.poll(0)
            time.sleep(max(0.0, tick_s - (time.time() - t0)))
        p.flush(30)
        self.result.put((self.produced, self.labels_sent))


def slope_per_minute(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 3:
        return None
    t = np.array([s[0] for s in samples]) / 60
    v = np.array([s[1] for s in samples])
    return float(np.polyfit(t, v, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=int, default=2000, help="requests per second (feature + prediction each)")
    ap.add_argument("--window", default="1m")
    ap.add_argument("--out-of-orderness", default="5s")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "data" / "soak"))
    args = ap.parse_args()
    work = Path(args.workdir)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    ooo_ms = duration_ms(args.out_of_orderness)
    url = f"chdb://{work / 'clickhouse'}"
    port = free_port()
    with LocalBroker() as broker, WebhookReceiver() as hook:
        topics = broker.create_topics("soak")
        models = synth.save_profiles(work, 10_000, positive_label=1).models
        cfg = {
            "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics},
            "window": {"size": args.window, "out_of_orderness": args.out_of_orderness, "idle_timeout": "5s"},
            "labels": {"enabled": True, "lateness": "10m"},
            "models": models,
            "clickhouse": {"url": url, "flush_interval": "1s"},
            "flink": {
                # Half an hour at 2,500 requests/s keeps about 4 M "label seen" flags (labels.state_ttl =
                # lateness + 1 h) and 0.6 M open predictions in the heap: room beyond the default 2 GB.
                "local_heap": "6g",
                "checkpoint_dir": str(work / "ckpt"),
                "checkpoint_interval": "10s",
                "conf": {"rest.port": str(port)},
            },  # fmt: skip
            "alerting": {
                "use_default_rules": True,
                "receivers": [{"name": "chat", "type": "generic", "url": hook.url}],
                "route": {"by_severity": {"critical": ["chat"], "warning": ["chat"], "info": ["chat"]}},
            },  # fmt: skip
        }
        (work / "config.yaml").write_text(json.dumps(cfg))
        job = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(work / "config.yaml")],
                               stdout=subprocess.DEVNULL, stderr=open(work / "job.log", "w"),
                               start_new_session=True, env={**os.environ, "FLINK_LOG_DIR": str(work / "flink-log")})  # fmt: skip
        prod = Producer(broker.bootstrap, topics, args.rate)
        prod.start()
        t_start = time.monotonic()
        rss: list[tuple[float, float]] = []
        ckpts: dict[int, dict] = {}
        while time.monotonic() - t_start < args.minutes * 60:
            time.sleep(10)
            if job.poll() is not None:
                break
            t = time.monotonic() - t_start
            rss.append((t, tree_rss_bytes(job.pid) / 2**20))
            c = latest_checkpoint(port)
            if c:
                ckpts.setdefault(c["id"], {**c, "t": t})
        prod.stop.set()
        produced, labels_sent = prod.result.get(timeout=120)
        prod.join(60)
        alive = job.poll() is None
        if alive:
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(60)
        received = len(hook.messages)
    if not alive:
        sys.exit(f"the job ended during the soak (rc {job.returncode}); see {work / 'job.log'}")
    rows = clickhouse.query_rows(
        url,
        "SELECT toUnixTimestamp64Milli(window_end), max(toUnixTimestamp64Milli(computed_at)), sum(events)"
        " FROM mlvigil.window_events FINAL WHERE stream = 'predictions' GROUP BY window_end ORDER BY window_end",
    )
    window_ms = duration_ms(args.window)
    full = rows[1:-1]  # the first and last windows are partial
    counted_rps = [ev / (window_ms / 1000) for _, _, ev in full]
    produced_rps = [produced.get(end - window_ms, 0) / (window_ms / 1000) for end, _, _ in full]
    fresh = sorted((c - (end + ooo_ms)) / 1000 for end, c, _ in full)
    half = [s for s in rss if s[0] >= rss[-1][0] / 2] if rss else []
    cps = sorted(ckpts.values(), key=lambda c: c["id"])
    result = {
        "minutes": args.minutes,
        "rate_requested": args.rate,
        "produced_rps_median": round(statistics.median(produced_rps), 1) if produced_rps else None,
        "counted_rps_min": round(min(counted_rps), 1) if counted_rps else None,
        "counted_rps_median": round(statistics.median(counted_rps), 1) if counted_rps else None,
        "windows": len(full),
        "counted_equals_produced_windows": sum(1 for a, b in zip(counted_rps, produced_rps, strict=True) if a == b),
        "labels_sent": labels_sent,
        "freshness_s_p50": round(float(np.percentile(fresh, 50)), 2) if fresh else None,
        "freshness_s_p95": round(float(np.percentile(fresh, 95)), 2) if fresh else None,
        "freshness_s_max": round(max(fresh), 2) if fresh else None,
        "rss_mb_start": round(rss[0][1]) if rss else None,
        "rss_mb_end": round(rss[-1][1]) if rss else None,
        "rss_mb_per_min_second_half": round(slope_per_minute(half), 2) if slope_per_minute(half) is not None else None,
        "checkpoints": len(cps),
        "checkpoint_mb_first": round(cps[0]["bytes"] / 2**20, 1) if cps else None,
        "checkpoint_mb_last": round(cps[-1]["bytes"] / 2**20, 1) if cps else None,
        "checkpoint_ms_p50": statistics.median(c["duration_ms"] for c in cps) if cps else None,
        "checkpoint_ms_max": max(c["duration_ms"] for c in cps) if cps else None,
        "checkpoints_failed": cps[-1]["failed"] if cps else None,
        "notifications_received": received,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
