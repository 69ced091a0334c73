"""Reproducible benchmark data: JSON-lines feature and prediction events, profiles and a config.

    python bench/generate.py --out bench/data/base --events 2000000 --models 4 --features 8

Events spread evenly over `--minutes` one-minute windows of event time, a little out of order;
features are numeric, drawn per model from fixed normal distributions, with a few missing.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import orjson

from mlvigil.profile import build_profile, save_profile

# Yesterday 00:00 UTC: dates relative to now, since ClickHouse applies the tables' 90-day TTL at
# insert and the job dead-letters events older than the retention (too_old); a fixed start date
# would make the benchmark silently write nothing once it is old enough.
START_MS = (int(time.time() * 1000) // 86_400_000 - 1) * 86_400_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--segments", type=int, default=0, help="segment dimensions per model (3 values each)")
    ap.add_argument("--predictions", action="store_true", help="also write a prediction event per event")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "profiles").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    names = [f"f{i}" for i in range(args.features)]
    models = [f"m{i}" for i in range(args.models)]
    mu = rng.normal(0, 5, (args.models, args.features))
    sigma = rng.uniform(0.5, 3, (args.models, args.features))
    dims = [f"d{i}" for i in range(args.segments)]

    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "startup_mode": "earliest-offset"},
        "window": {"size": "1m", "out_of_orderness": "5s"},
        "models": {},
        "clickhouse": {"url": f"chdb://{(out / 'clickhouse').resolve()}"},
        "flink": {"parallelism": 1, "checkpoint_dir": str((out / "checkpoints").resolve())},
    }
    for m, model in enumerate(models):
        train = rng.normal(mu[m], sigma[m], (20_000, args.features))
        cols = {n: train[:, j].tolist() for j, n in enumerate(names)}
        cols["score"] = (1 / (1 + np.exp(-train[:, 0] / 5))).tolist()
        p = build_profile(cols, model, "v1", predicted_label_column=None)
        save_profile(p, out / "profiles" / f"{model}.json")
        config["models"][model] = {
            "segments": dims,
            "profiles": {"v1": str((out / "profiles" / f"{model}.json").resolve())},
        }
    (out / "config.yaml").write_text(json.dumps(config, indent=1))

    n = args.events
    span = args.minutes * 60_000
    chunk = 200_000
    with open(out / "features.jsonl", "wb") as ff, open(out / "predictions.jsonl", "wb") as pf:
        for lo in range(0, n, chunk):
            k = min(chunk, n - lo)
            idx = np.arange(lo, lo + k)
            model_idx = idx % args.models
            times = START_MS + (idx * span // n) + rng.integers(0, 2000, k)
            values = rng.normal(mu[model_idx], sigma[model_idx])
            missing = rng.random((k, args.features)) < 0.01
            seg_vals = rng.integers(0, 3, (k, max(1, args.segments)))
            lat = rng.lognormal(3.7, 0.4, k)
            lines, plines = [], []
            for i in range(k):
                feats = {nm: (None if missing[i, j] else float(values[i, j])) for j, nm in enumerate(names)}
                ev = {"request_id": f"r{lo + i}", "model_id": models[model_idx[i]], "model_version": "v1",
                      "event_time": int(times[i]), "features": feats}  # fmt: skip
                if dims:
                    ev["segments"] = {d: f"v{seg_vals[i, j]}" for j, d in enumerate(dims)}
                lines.append(orjson.dumps(ev))
                if args.predictions:
                    pred = {"request_id": f"r{lo + i}", "model_id": models[model_idx[i]], "model_version": "v1",
                            "event_time": int(times[i]), "score": float(1 / (1 + np.exp(-values[i, 0] / 5))),
                            "latency_ms": float(lat[i]), "status": "ok"}  # fmt: skip
                    plines.append(orjson.dumps(pred))
            ff.write(b"\n".join(lines) + b"\n")
            if plines:
                pf.write(b"\n".join(plines) + b"\n")
    print(f"wrote {n} events to {out}")


if __name__ == "__main__":
    main()
