"""A replay (the job run again over the same offsets, as after a restart) must not double count:
every table is a ReplacingMergeTree on a deterministic key, read with FINAL."""

import json
import time

import orjson
import pytest

from mlvigil import clickhouse, synth
from mlvigil.broker import produce
from mlvigil.profile import build_profile, save_profile

from ..conftest import JobProcess

pytestmark = pytest.mark.integration

QUERIES = {
    "feature_metrics": "SELECT window_start, model_id, segment, feature, events, psi, ks, mean FROM mlvigil.feature_metrics FINAL ORDER BY ALL",
    "service_metrics": "SELECT window_start, model_id, requests, errors, latency_p95 FROM mlvigil.service_metrics FINAL ORDER BY ALL",
    "window_events": "SELECT stream, model_id, window_start, events FROM mlvigil.window_events FINAL ORDER BY ALL",
    "dead_letters": "SELECT topic, partition, offset, reason_code FROM mlvigil.dead_letters FINAL ORDER BY ALL",
}


def test_replay_does_not_double_count(broker, topics, tmp_path):
    start = (int(time.time() * 1000) // 60_000 - 5) * 60_000
    models = {}
    for m in synth.MODELS:
        save_profile(build_profile(synth.training_columns(m, 5_000), m, "v1"), tmp_path / f"{m}.json")
        models[m] = {"segments": synth.SEGMENTS[m], "profiles": {"v1": str(tmp_path / f"{m}.json")}}
    cfg = {
        "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics},
        "models": models,
        "clickhouse": {"url": f"chdb://{tmp_path / 'ch'}"},
        "flink": {"checkpoint_dir": str(tmp_path / "ckpt"), "restart_attempts": 0},
    }
    (tmp_path / "config.yaml").write_text(json.dumps(cfg))
    t = synth.traffic(start, 2, 150, seed=3)
    msg = [(e["request_id"].encode(), orjson.dumps(e), None) for e in t.features] + [(None, b"{broken", None)]
    stop = {
        "features": produce(broker.bootstrap, topics["features"], msg),
        "predictions": produce(
            broker.bootstrap,
            topics["predictions"],
            [(p["request_id"].encode(), orjson.dumps(p), None) for p in t.predictions],
        ),
    }
    url = f"chdb://{tmp_path / 'ch'}"
    results, raw_counts = [], []
    for _ in range(2):
        job = JobProcess(tmp_path / "config.yaml", stop, tmp_path / "job.log")
        try:
            job.wait(240)
        finally:
            job.kill()
        results.append({name: clickhouse.query_rows(url, q) for name, q in QUERIES.items()})
        raw_counts.append(clickhouse.query_rows(url, "SELECT count() FROM mlvigil.window_events")[0][0])
    assert results[0]["window_events"], "the first run wrote nothing"
    assert sum(r[3] for r in results[0]["window_events"] if r[0] == "features") == len(t.features)
    assert len(results[0]["dead_letters"]) == 1
    # Equal up to float summation order (partitions interleave differently on each run).
    for name in QUERIES:
        assert len(results[1][name]) == len(results[0][name]), name
        for a, b in zip(results[0][name], results[1][name], strict=True):
            for x, y in zip(a, b, strict=True):
                ok = x == pytest.approx(y, rel=1e-12, abs=1e-12) if isinstance(x, float) else x == y
                assert ok, (name, a, b)
    # The second run really wrote its rows again (unless a merge already collapsed them):
    # FINAL is what keeps the answer right.
    assert raw_counts[1] >= raw_counts[0]
