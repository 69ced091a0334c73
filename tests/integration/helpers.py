"""Setup the integration tests share: events as Kafka messages, traffic onto the topics, the job's
config (one base, each test adds its sections) and the alerting section most tests use."""

import copy
import json
import socket
from pathlib import Path

import orjson

from mlvigil import clickhouse, synth
from mlvigil.broker import produce

MIN = 60_000


def messages(events: list[dict]) -> list[tuple]:
    """(key, value, no timestamp) per event, keyed by request_id as the services send them."""
    return [(e["request_id"].encode(), orjson.dumps(e), None) for e in events]


def produce_traffic(bootstrap: str, topics: dict[str, str], traffic: synth.Traffic) -> dict[str, dict[int, int]]:
    """Features and predictions onto their topics; returns the stop offsets of a bounded run."""
    return {
        "features": produce(bootstrap, topics["features"], messages(traffic.features)),
        "predictions": produce(bootstrap, topics["predictions"], messages(traffic.predictions)),
    }


def alerting(webhook_url: str, **overrides) -> dict:
    """The default rules, critical and warning notifications to one generic "chat" receiver at
    webhook_url, info to the log; group_wait 30 s, group_interval 5 min, a 2 min correlation hold."""
    section = {
        "use_default_rules": True,
        "receivers": [{"name": "chat", "type": "generic", "url": webhook_url}],
        "route": {"by_severity": {"critical": ["chat"], "warning": ["chat"], "info": ["log"]},
                  "group_wait": "30s", "group_interval": "5m"},
        "correlation_window": "2m",
    }  # fmt: skip
    return _merged(section, overrides)


def write_config(path: Path, broker, topics: dict[str, str], models: dict, url: str, **sections) -> Path:
    """A job config at path: the broker from the earliest offsets, the models, the store at url,
    checkpoints next to path, no restarts (a fault fails the run); sections are merged into it
    (a dict into the base's dict of the same name, anything else replaces it)."""
    base = {
        "kafka": {"bootstrap_servers": broker.bootstrap, "startup_mode": "earliest-offset", "topics": topics},
        "models": models,
        "clickhouse": {"url": url},
        "flink": {"checkpoint_dir": str(path.with_name(path.stem + "-ckpt")), "restart_attempts": 0},
    }
    path.write_text(json.dumps(_merged(base, sections)))
    return path


def refused_port() -> socket.socket:
    """A socket bound to a loopback port and never listening: connections to its port are refused
    for as long as it is open, and no other process can take the port meanwhile (a port picked
    free and left closed was once taken by another job's gRPC server on this shared machine)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def tables_exist(url: str) -> bool:
    """The job has created the store's tables."""
    return bool(clickhouse.query_rows(url, "SELECT count() FROM system.tables WHERE name = 'window_events'")[0][0])


def _merged(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
