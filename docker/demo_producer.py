"""Demo traffic for docker-compose.yml: features, predictions and labels for the demo models, in
real time, minute after minute, from mlvigil.synth (the generator of `mlvigil demo`). After
--drift-after minutes, recsys's inputs drift (ages and browsing time, as in the seed article)
and its users click more than the model predicts, so PSI rises and accuracy falls.

    python docker/demo_producer.py --bootstrap kafka:9092 --per-minute 600 --drift-after 15
"""

import argparse
import os
import time

import orjson
from confluent_kafka import Producer

from mlvigil import synth


def minute_events(start_ms: int, per_minute: int, drifted: bool, seed: int) -> list[tuple[str, dict]]:
    """(stream, event) of one minute from start_ms, request ids unique across minutes."""
    t = synth.traffic(start_ms, 1, per_minute, drift_minute=0 if drifted else None, seed=seed)
    for e in t.features + t.predictions:
        e["request_id"] = f"{e['request_id']}-{start_ms}"
    recsys = [p for p in t.predictions if p["model_id"] == "recsys"]
    labels = synth.labels(recsys, start_ms, drift_minute=0 if drifted else None, seed=seed + 1)
    out = [("features", e) for e in t.features] + [("predictions", e) for e in t.predictions]
    out += [("labels", e) for e in labels]
    return sorted(out, key=lambda se: se[1]["event_time"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default=os.environ.get("MLVIGIL_KAFKA", "kafka:9092"))
    ap.add_argument("--per-minute", type=int, default=int(os.environ.get("MLVIGIL_DEMO_PER_MINUTE", "600")))
    ap.add_argument("--drift-after", type=int, default=int(os.environ.get("MLVIGIL_DEMO_DRIFT_AFTER", "15")),
                    help="minutes of normal traffic before recsys drifts (-1: never)")  # fmt: skip
    ap.add_argument("--minutes", type=int, default=0, help="stop after this many minutes (0: run forever)")
    args = ap.parse_args()
    topics = {"features": "mlvigil.features", "predictions": "mlvigil.predictions", "labels": "mlvigil.labels"}
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 50, "acks": "all"})
    minute, sent = 0, 0
    start_ms = (int(time.time() * 1000) // 60_000) * 60_000
    pending: list[tuple[str, dict]] = []
    print(f"producing {args.per_minute} events/model/minute to {args.bootstrap}; recsys drifts after "
          f"{args.drift_after} minutes", flush=True)  # fmt: skip
    while not args.minutes or minute < args.minutes:
        drifted = 0 <= args.drift_after <= minute
        pending += minute_events(start_ms + minute * 60_000, args.per_minute, drifted, seed=minute)
        pending.sort(key=lambda se: se[1]["event_time"])
        end_ms = start_ms + (minute + 1) * 60_000
        while pending and pending[0][1]["event_time"] < end_ms:
            now = int(time.time() * 1000)
            due = [se for se in pending if se[1]["event_time"] <= now]
            pending = pending[len(due) :]
            for stream, e in due:
                producer.produce(topics[stream], key=e["request_id"].encode(), value=orjson.dumps(e))
            sent += len(due)
            producer.poll(0)
            if not due:
                time.sleep(min(0.2, max(0.0, (pending[0][1]["event_time"] - now) / 1000)))
        producer.flush(30)
        minute += 1
        print(f"minute {minute}: {sent} events sent{' (recsys drifting)' if drifted else ''}", flush=True)


if __name__ == "__main__":
    main()
