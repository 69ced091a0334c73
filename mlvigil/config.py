"""Job configuration: one YAML (or JSON) file, plain data, validated here.

Secrets never live in the file's committed form: any string value may be `${ENV_NAME}`, which
is replaced by that environment variable when the file is read (an unset variable is an error).
"""

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from mlvigil.profile import load_profile

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, None: 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(value: Any) -> int:
    """'60s', '1m', '500ms', '2h' or a number of seconds -> milliseconds (fractions of a ms dropped)."""
    # Decimal arithmetic: with floats, '1.001s' would give 1000 ms and '4.1m' 245999 ms.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(Decimal(repr(value)) * 1000)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 30s, 1m, 2h)")
    return int(Decimal(m.group(1)) * _UNIT_MS[m.group(2)])


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ValueError(f"config refers to ${{{name}}} but it is not set in the environment")
            return os.environ[name]

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


TASKS = ("classification", "regression")


def category_text(value: Any) -> str:
    """A label as the job compares it: booleans true/false, integral numbers without '.0'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


@dataclass
class ModelConfig:
    model_id: str
    segments: list[str]
    profiles: dict[str, dict]
    """version (or "*" for any other version) -> loaded profile."""
    task: str = "classification"
    """How labels are scored: classification (binary with positive_label, else multi-class) or regression."""
    positive_label: str | None = None
    """Category text of the positive class; None = multi-class (macro averages)."""
    threshold: float = 0.5
    """Binary: a prediction without predicted_label is positive when score >= threshold."""


@dataclass
class Config:
    bootstrap_servers: str
    topics: dict[str, str]
    group_id: str
    startup_mode: str
    kafka_properties: dict[str, str]
    window_ms: int
    out_of_orderness_ms: int
    idle_timeout_ms: int
    models: dict[str, ModelConfig]
    clickhouse_url: str
    clickhouse_database: str
    parallelism: int
    checkpoint_interval_ms: int
    checkpoint_dir: str
    flush_interval_ms: int
    max_future_ms: int
    max_latency_ms: float
    max_segment_values: int
    restart_attempts: int
    source_path: Path | None = None
    raw: dict = field(default_factory=dict)
    quality_enabled: bool = True
    """Read the labels stream and compute model quality (sql/flink/027_quality.sql)."""
    label_lateness_ms: int = 86_400_000
    """L: a label joins its prediction when it comes at most this long (event time) after it."""
    label_skew_ms: int = 5_000
    """...or at most this long before it (clocks of different services disagree)."""
    label_state_ttl_ms: int = 90_000_000
    """Idle state retention of the label de-duplication and the quality aggregates (default L + 1 h)."""
    state_backend: str = "hashmap"
    flink_conf: dict[str, str] = field(default_factory=dict)
    """flink.conf: any Flink configuration option, applied last (e.g. rest.port, taskmanager memory)."""
    clickhouse_give_up_after_ms: int | None = None
    """clickhouse.give_up_after: how long the writer waits for an unavailable store before it fails
    the job; unset (the default): it waits as long as the outage lasts (backpressure, loud logs)."""


DEFAULT_TOPICS = {
    "features": "mlvigil.features",
    "predictions": "mlvigil.predictions",
    "labels": "mlvigil.labels",
    "dead_letters": "mlvigil.dead-letters",
}


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if overrides:
        raw = _merge(raw, overrides)
    return parse_config(raw, base_dir=path.parent, source_path=path)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_config(raw: dict, base_dir: Path = Path("."), source_path: Path | None = None) -> Config:
    raw = _expand_env(raw)
    kafka = raw.get("kafka", {})
    window = raw.get("window", {})
    ch = raw.get("clickhouse", {})
    flink = raw.get("flink", {})
    limits = raw.get("limits", {})
    models: dict[str, ModelConfig] = {}
    for model_id, m in (raw.get("models") or {}).items():
        profiles = {}
        for version, p in (m.get("profiles") or {}).items():
            p = Path(p)
            profiles[str(version)] = load_profile(p if p.is_absolute() else base_dir / p)
        if not profiles:
            raise ValueError(f"model {model_id!r} has no profiles")
        task = str(m.get("task", "classification"))
        if task not in TASKS:
            raise ValueError(f"model {model_id!r}: task must be one of {TASKS}, not {task!r}")
        positive = m.get("positive_label")
        models[str(model_id)] = ModelConfig(
            str(model_id),
            [str(s) for s in m.get("segments", [])],
            profiles,
            task=task,
            positive_label=None if positive is None or task == "regression" else category_text(positive),
            threshold=float(m.get("threshold", 0.5)),
        )
    if not models:
        raise ValueError("the config monitors no models")
    url = ch.get("url", "chdb://./var/clickhouse")
    if url.startswith("chdb://") and not url.startswith("chdb:///"):
        url = "chdb:///" + str((base_dir / url[len("chdb://") :]).resolve()).lstrip("/")
    ckpt = flink.get("checkpoint_dir", "./var/checkpoints")
    labels = raw.get("labels", {})
    lateness_ms = duration_ms(labels.get("lateness", "24h"))
    backend = str(flink.get("state_backend", "hashmap"))
    if backend not in ("hashmap", "rocksdb"):
        raise ValueError(f"flink.state_backend must be hashmap or rocksdb, not {backend!r}")
    return Config(
        bootstrap_servers=str(kafka.get("bootstrap_servers", "127.0.0.1:9092")),
        topics={**DEFAULT_TOPICS, **kafka.get("topics", {})},
        group_id=str(kafka.get("group_id", "mlvigil")),
        startup_mode=str(kafka.get("startup_mode", "group-offsets")),
        kafka_properties={str(k): str(v) for k, v in (kafka.get("properties") or {}).items()},
        window_ms=duration_ms(window.get("size", "60s")),
        out_of_orderness_ms=duration_ms(window.get("out_of_orderness", "5s")),
        idle_timeout_ms=duration_ms(window.get("idle_timeout", "30s")),
        models=models,
        clickhouse_url=url,
        clickhouse_database=str(ch.get("database", "mlvigil")),
        parallelism=int(flink.get("parallelism", 1)),
        checkpoint_interval_ms=duration_ms(flink.get("checkpoint_interval", "10s")),
        checkpoint_dir=str(Path(ckpt) if Path(ckpt).is_absolute() else (base_dir / ckpt).resolve()),
        flush_interval_ms=duration_ms(ch.get("flush_interval", "500ms")),
        max_future_ms=duration_ms(limits.get("max_future", "1d")),
        max_latency_ms=float(duration_ms(limits.get("max_latency", "1h"))),
        max_segment_values=int(limits.get("max_segment_values", 100)),
        restart_attempts=int(flink.get("restart_attempts", 3)),
        source_path=source_path,
        raw=raw,
        quality_enabled=bool(labels.get("enabled", True)),
        label_lateness_ms=lateness_ms,
        label_skew_ms=duration_ms(labels.get("skew", "5s")),
        label_state_ttl_ms=duration_ms(labels.get("state_ttl", lateness_ms / 1000 + 3600)),
        state_backend=backend,
        flink_conf={str(k): str(v) for k, v in (flink.get("conf") or {}).items()},
        clickhouse_give_up_after_ms=None if ch.get("give_up_after") is None else duration_ms(ch["give_up_after"]),
    )
