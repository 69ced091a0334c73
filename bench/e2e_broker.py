"""End-to-end throughput from the broker: generated events -> Tansu -> the job -> chDB.

    python bench/e2e_broker.py --data bench/data/base [--label ...]

Produces the data set's JSON lines to fresh topics of a local Tansu broker (the produce rate is
reported too), then runs the job bounded at the produced offsets and reports events/s over the
job's net runtime and its peak RSS (process tree). Appends to bench/results/throughput.jsonl.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from throughput import machine, net_runtime_s, run_measured  # noqa: E402

from mlvigil.broker import LocalBroker, produce  # noqa: E402


def lines(path: Path):
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            line = line.rstrip(b"\n")
            if line:
                yield (str(i).encode(), line, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--label")
    args = ap.parse_args()
    data = Path(args.data)
    cfg = json.loads((data / "config.yaml").read_text())
    with LocalBroker() as broker:
        topics = {s: f"bench.{s}" for s in ("features", "predictions", "labels", "dead_letters")}
        for t in topics.values():
            broker.create_topic(t, 4)
        t0 = time.monotonic()
        stop, events = {}, 0
        for stream in ("features", "predictions"):
            stop[stream] = produce(broker.bootstrap, topics[stream], lines(data / f"{stream}.jsonl"))
            events += sum(stop[stream].values())
        produce_s = time.monotonic() - t0
        cfg["kafka"] = {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics}
        config = data / "config.broker.yaml"
        config.write_text(json.dumps(cfg))
        subprocess.run(["rm", "-rf", str(data / "clickhouse"), str(data / "checkpoints")], check=True)
        cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(config),
               "--stop-offsets", json.dumps({s: {str(p): o for p, o in v.items()} for s, v in stop.items()})]  # fmt: skip
        err, wall, peak = run_measured(cmd)
    net = net_runtime_s(err)
    result = {
        "label": args.label or f"{data.name}, from the broker",
        "source": "kafka (Tansu, 4 partitions)",
        "events": events,
        "produce_events_per_s": round(events / produce_s),
        "net_runtime_s": round(net, 2),
        "wall_s": round(wall, 2),
        "events_per_s_net": round(events / net),
        "events_per_s_wall": round(events / wall),
        "peak_rss_mb": round(peak / 2**20),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))
    with open(ROOT / "bench" / "results" / "throughput.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
