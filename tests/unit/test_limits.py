"""Input limits: the limits.* keys, the dead-letter size bound and the restart strategy."""

import hashlib
import json
from datetime import datetime

import pytest

from mlvigil import synth
from mlvigil.catalog import MAX_EVENT_AGE_MS, compile_catalog
from mlvigil.config import parse_config
from mlvigil.profile import build_profile, save_profile
from mlvigil.writer import dead_letter_json


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("profiles")
    save_profile(build_profile(synth.training_columns("fraud", 300), "fraud", "v1"), tmp / "fraud.json")
    return {"fraud": {"profiles": {"v1": str(tmp / "fraud.json")}}}


def test_limits_defaults_and_catalog(models):
    cfg = parse_config({"models": models})
    assert (cfg.max_message_bytes, cfg.max_features, cfg.max_dead_letter_bytes, cfg.backfill) == (
        1 << 20, 1000, 1_000_000, False
    )  # fmt: skip
    cat = compile_catalog(cfg)
    assert cat["max_message_bytes"] == 1 << 20 and cat["max_features"] == 1000
    assert cat["max_event_age_ms"] == MAX_EVENT_AGE_MS
    backfill = compile_catalog(parse_config({"models": models, "limits": {"backfill": "true"}}))
    assert backfill["max_event_age_ms"] == 0  # no too_old bound


@pytest.mark.parametrize(
    "limits",
    [{"max_message_bytes": 0}, {"max_features": -1}, {"max_dead_letter_bytes": 1000}, {"backfill": "sometimes"}],
)
def test_bad_limits_are_refused(models, limits):
    with pytest.raises(ValueError, match="limits"):
        parse_config({"models": models, "limits": limits})


def _row(payload: bytes, reason: str = "r") -> dict:
    return {"dl_stream": "features", "dl_kind": "invalid", "reason_code": "unknown_model", "reason": reason,
            "topic": "t", "kafka_partition": 0, "kafka_offset": 7, "kafka_time": datetime(2026, 1, 1),
            "event_ms": 1, "model_id": "m", "payload": payload}  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [b"\x00" * 400_000, "é".encode() * 300_000, bytes(range(256)) * 2000, b'{"a": "' + b'\\"' * 300_000 + b'"}'],
)
def test_dead_letters_are_bounded(payload):
    limit = 100_000
    out = dead_letter_json(_row(payload, reason="x" * 50_000), limit).encode()
    assert len(out) <= limit
    d = json.loads(out)
    assert d["payload_truncated"] is True and d["payload_length"] == len(payload)
    assert d["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert payload.decode("utf-8", errors="replace").startswith(d["payload"][:-1])


def test_small_dead_letters_are_whole():
    payload = b'{"request_id": "r", "model_id": "nope"}'
    d = json.loads(dead_letter_json(_row(payload)))
    assert d["payload"] == payload.decode() and "payload_truncated" not in d


def test_restart_strategy(models, tmp_path):
    from mlvigil.jobs.monitor import flink_configuration

    def conf(attempts: int) -> dict:
        raw = {"models": models, "flink": {"restart_attempts": attempts, "checkpoint_dir": str(tmp_path)}}
        return flink_configuration(parse_config(raw), "catalog").to_dict()

    none, three = conf(0), conf(3)
    assert none["restart-strategy.type"] == "none"
    assert three["restart-strategy.type"] == "exponential-delay"
    assert three["restart-strategy.exponential-delay.attempts-before-reset-backoff"] == "3"
    assert "restart-strategy.exponential-delay.reset-backoff-threshold" in three
