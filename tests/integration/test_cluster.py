"""The job submitted to a Flink standalone cluster (`flink run -py`, via scripts/cluster.sh) from
mlvigil installed as a wheel in a fresh venv (tests/integration/installed.py) writes the same
rows as the embedded run from the checkout (`python jobs/monitor.py`).

Both runs read the same topics, bounded by the same stop offsets, into separate chDB
directories; every metric row must match (floats within 1e-12), computed_at/received_at aside.
The cluster comes from the PyFlink wheel's own scripts, on a free REST port and in a private
work dir, so it collides with nothing else on the machine.
"""

import json
import math
import re
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from mlvigil import clickhouse, synth
from mlvigil.broker import produce
from mlvigil.jars import connector_jars
from mlvigil.profile import build_profile, save_profile

from ..conftest import ROOT, JobProcess
from .installed import installed_venv

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
MIN = 60_000
CLUSTER = ROOT / "scripts" / "cluster.sh"
TABLES = ("feature_metrics", "service_metrics", "window_events", "dead_letters")
WRITE_TIME = {"computed_at", "received_at"}
EVENT_TIME = 1790000000000  # replaced by a time inside the first window

INVALID_FEATURES = [
    (b'{"request_id": "x1", "model_id": "recsys"', "malformed_json"),
    (b'{"request_id": "x2", "model_id": "nope", "model_version": "v1", "event_time": 1790000000000, "features": {}}', "unknown_model"),
    (b'{"request_id": "x3", "model_id": "recsys", "model_version": "v1", "event_time": 1790000000000, "features": {"age": "thirty"}}', "wrong_type"),
]  # fmt: skip
INVALID_PREDICTIONS = [
    (b'{"request_id": "p1", "model_id": "fraud", "model_version": "v1", "event_time": 1790000000000, "latency_ms": -5}', "absurd_value"),
]  # fmt: skip


def _messages(events: list[dict], invalid: list[tuple], start: int) -> list[tuple]:
    valid = [(e["request_id"].encode(), orjson.dumps(e), None) for e in events]
    bad = [(None, raw.replace(str(EVENT_TIME).encode(), str(start + 30_000).encode()), None) for raw, _ in invalid]
    return valid + bad


def _rows(url: str, table: str) -> tuple[list[str], list[tuple]]:
    """All rows of a table (FINAL), without the write-time column, in a total order."""
    cols = [
        r[0]
        for r in clickhouse.query_rows(
            url,
            "SELECT name FROM system.columns WHERE database = 'mlvigil' AND table = {t:String} ORDER BY position",
            {"t": table},
        )
        if r[0] not in WRITE_TIME
    ]
    listed = ", ".join(f"`{c}`" for c in cols)
    return cols, clickhouse.query_rows(url, f"SELECT {listed} FROM mlvigil.{table} FINAL ORDER BY {listed}")


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _cluster(args: list[str], env: dict, timeout: float, log=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER), *args],
        env=env,
        timeout=timeout,
        stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    return installed_venv(tmp_path_factory)


def test_cluster_run_matches_embedded_run(broker, topics, tmp_path, installed):
    t0 = time.monotonic()
    start = (int(time.time() * 1000) // MIN - 10) * MIN
    cfg_models = {}
    for m in synth.MODELS:
        edges = {"age": synth.AGE_EDGES} if m == "recsys" else None
        profile = build_profile(synth.training_columns(m, 5_000), m, "v1", custom_edges=edges)
        save_profile(profile, tmp_path / f"{m}.json")
        cfg_models[m] = {"segments": synth.SEGMENTS[m], "profiles": {"v1": str(tmp_path / f"{m}.json")}}
    url_a, url_b = f"chdb://{tmp_path / 'ch-embedded'}", f"chdb://{tmp_path / 'ch-cluster'}"
    cfg = {
        "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset",
                  "topics": topics, "group_id": topics["features"]},
        "window": {"size": "1m", "out_of_orderness": "5s", "idle_timeout": "1h"},
        "models": cfg_models,
        "clickhouse": {"url": url_a, "flush_interval": "200ms"},
        "flink": {"parallelism": 1, "checkpoint_dir": str(tmp_path / "ckpt"), "restart_attempts": 0},
    }  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(cfg))

    # Two minutes x 100 events per model and minute (drift from minute 1), and a few invalid events.
    traffic = synth.traffic(start, 2, 100, drift_minute=1, seed=3)
    feats = _messages(traffic.features, INVALID_FEATURES, start)
    preds = _messages(traffic.predictions, INVALID_PREDICTIONS, start)
    stop = {
        "features": produce(broker.bootstrap, topics["features"], feats),
        "predictions": produce(broker.bootstrap, topics["predictions"], preds),
    }
    stop_json = json.dumps({s: {str(p): o for p, o in v.items()} for s, v in stop.items()})

    # A: embedded (local mode, Python in the driver process).
    job = JobProcess(config, json.loads(stop_json), tmp_path / "embedded.log")
    try:
        job.wait(600)
    finally:
        job.kill()
    t_embedded = time.monotonic()

    # B: the same job on a standalone cluster, submitted with flink run -py from the installed
    # wheel (its Python runs the client and the workers); the connector jars named by
    # MLVIGIL_FLINK_JARS, as on a machine without a checkout.
    env = installed.env(
        MLVIGIL_CLUSTER_DIR=str(tmp_path / "cluster"),
        MLVIGIL_FLINK_REST_PORT="0",
        MLVIGIL_PYTHON=str(installed.python),
        MLVIGIL_FLINK_JARS=str(connector_jars()[0].parent),
    )
    submit_log = tmp_path / "submit.log"
    try:
        started = _cluster(["start"], env, 300)
        assert started.returncode == 0, started.stdout
        t_started = time.monotonic()
        with open(submit_log, "w") as log:
            submitted = _cluster(
                ["submit", "--", "--config", str(config), "--stop-offsets", stop_json, "--clickhouse-url", url_b],
                env,
                900,
                log,
            )
        t_submitted = time.monotonic()
        out = submit_log.read_text()
        tail = "\n".join(out.splitlines()[-60:])
        assert submitted.returncode == 0, f"flink run exited {submitted.returncode}:\n{tail}"
        # The client ran the installed package's job, with that package as shipped by -pyfs (which
        # flink run puts first on the client's path too), not the checkout's.
        (job_file,) = re.findall(r"^cluster: submitting (\S+)$", out, re.MULTILINE)
        (shipped,) = re.findall(r"^cluster: shipping (\S+) to the Python workers", out, re.MULTILINE)
        (client_package,) = re.findall(r"starting job: .*, mlvigil from (\S+)$", out, re.MULTILINE)
        assert Path(job_file).is_relative_to(installed.root) and Path(shipped).is_relative_to(installed.root)
        assert not Path(client_package).is_relative_to(ROOT), client_package
        assert Path(client_package).parts[-2:] == ("mlvigil", "mlvigil"), client_package  # mlvigil.zip, unpacked
        status = _cluster(["status"], env, 60)
        # The job really ran on the cluster, and finished there.
        assert "mlvigil-monitor FINISHED" in status.stdout, status.stdout
        # Its Python workers got the mlvigil package shipped with the job (-pyfs), not only the
        # copy installed in this venv.
        tm_log = "\n".join(p.read_text() for p in (tmp_path / "cluster" / "log").glob("*taskexecutor*.log"))
        worker_paths = re.findall(r"PYTHONPATH of python worker: (\S+)", tm_log)
        assert worker_paths and all(re.search(r"/python-files/[^/:]+/mlvigil(:|$)", p) for p in worker_paths), (
            worker_paths
        )
    finally:
        stopped = _cluster(["stop"], env, 120)
    assert stopped.returncode == 0, stopped.stdout
    print(
        f"\ntimings: embedded {t_embedded - t0:.1f} s (incl. data), cluster start {t_started - t_embedded:.1f} s, "
        f"flink run {t_submitted - t_started:.1f} s, stop {time.monotonic() - t_submitted:.1f} s"
    )

    # Same rows in A and B, table by table.
    for table in TABLES:
        cols_a, rows_a = _rows(url_a, table)
        cols_b, rows_b = _rows(url_b, table)
        assert cols_a == cols_b
        assert rows_a, f"{table}: no rows in the embedded run"
        assert len(rows_a) == len(rows_b), f"{table}: {len(rows_a)} rows embedded, {len(rows_b)} on the cluster"
        diffs = [
            (i, c, x, y)
            for i, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=True))
            for c, x, y in zip(cols_a, ra, rb, strict=True)
            if not _same(x, y)
        ]
        assert not diffs, f"{table}: {len(diffs)} differing values, e.g. {diffs[:5]}"

    # And the rows are the expected ones, not two equally wrong sets.
    counted = dict(
        clickhouse.query_rows(url_b, "SELECT stream, sum(events) FROM mlvigil.window_events FINAL GROUP BY stream")
    )
    assert counted == {"features": len(traffic.features), "predictions": len(traffic.predictions)}
    reasons = sorted(clickhouse.query_rows(url_b, "SELECT stream, reason_code FROM mlvigil.dead_letters FINAL"))
    assert reasons == sorted(
        [("features", code) for _, code in INVALID_FEATURES]
        + [("predictions", code) for _, code in INVALID_PREDICTIONS]
    )
