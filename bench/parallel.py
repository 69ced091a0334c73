"""Parallelism: the job at parallelism 1, 2 and 4, with one model and with four.

    python bench/parallel.py --data .peerbench/project [--requests 500000] [--parallelism 1,2,4]

Takes the first --requests requests of a data set in the layout of bench/throughput.py (the
peer benchmark's, ../shared/peerbench/to_project.py: 4 models), deals each stream round robin
into as many JSON-lines files as the parallelism (a file is one split, read whole by one source
subtask, so the files bound the source parallelism as Kafka partitions do; every file spans the
whole event time, so a subtask reading two files one after the other would find the second one's
events late), once as it is ("four models") and once
with every event moved to model m0 ("one model": the hot-model case, all traffic on one key of
the window aggregations). Then runs the job on each (bench/throughput.py's run_job: net runtime,
start-up apart, CPU seconds, peak RSS) and appends one line per run to bench/results/parallel.jsonl.

On a machine with fewer cores than the parallelism the gain is bounded by the cores: see the
CPU seconds per request, which do not depend on how many cores there are.
"""

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from throughput import append_result, machine, run_job  # noqa: E402

MODEL_ID = re.compile(rb'"model_id":"[^"]*"')


def split_streams(src: Path, out: Path, requests: int, files: int, one_model: str | None) -> None:
    """out/<stream>/part-<i>.jsonl: the first `requests` lines of src/<stream>.jsonl dealt round robin."""
    for stream in ("features", "predictions"):
        d = out / stream
        d.mkdir(parents=True)
        parts = [open(d / f"part-{i}.jsonl", "wb") for i in range(files)]
        try:
            with open(src / f"{stream}.jsonl", "rb") as f:
                for i, line in enumerate(f):
                    if i >= requests:
                        break
                    if one_model is not None:
                        line = MODEL_ID.sub(b'"model_id":"' + one_model.encode() + b'"', line, count=1)
                    parts[i % files].write(line)
        finally:
            for p in parts:
                p.close()
    shutil.copy(src / "config.yaml", out / "config.yaml")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="dir with features.jsonl, predictions.jsonl, config.yaml")
    ap.add_argument("--requests", type=int, default=500_000)
    ap.add_argument("--parallelism", default="1,2,4")
    ap.add_argument("--models", default="one,four")
    ap.add_argument("--workdir", default=None, help="default: <data>/../parallel")
    args = ap.parse_args()
    data = Path(args.data).resolve()
    work = Path(args.workdir) if args.workdir else data.parent / "parallel"
    with open(data / "config.yaml") as f:
        configured = sorted(yaml.safe_load(f)["models"])
    for models in args.models.split(","):
        for p in (int(x) for x in args.parallelism.split(",")):
            d = work / f"{models}-{args.requests}-files{p}"
            if not (d / "config.yaml").exists():
                shutil.rmtree(d, ignore_errors=True)
                split_streams(data, d, args.requests, p, configured[0] if models == "one" else None)
            r = run_job(d, p)
            result = {
                "label": f"{models} model(s), parallelism {p}",
                "models_with_traffic": 1 if models == "one" else len(configured),
                "files_per_stream": p,
                **r,
                "cpu_us_per_request": round(r["cpu_s_job"] / r["requests"] * 1e6, 1),
                "source": "JSON-lines files",
                "machine": machine(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
            append_result("parallel.jsonl", result)


if __name__ == "__main__":
    main()
