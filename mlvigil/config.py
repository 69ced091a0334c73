"""Job configuration: one YAML (or JSON) file, plain data, validated here.

Secrets never live in the file's committed form: any string value may be `${ENV_NAME}`, which
is replaced by that environment variable when the file is read (an unset variable is an error).
Two parts keep the reference instead, so that no secret rides in the job graph: the `alerting`
section (expanded where the alert operator opens, mlvigil.alerting.rules.load_config; the job
checks its variables at start-up) and `kafka.properties` (checked here, then handed to the Kafka
client's own environment-variable config provider, which resolves `${env:NAME}` in the client).
"""

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from mlvigil.categories import category_text
from mlvigil.profile import load_profile

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
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


def jvm_size(value: Any, name: str) -> str:
    """A JVM memory size as -Xmx takes it: a whole number with k, m or g (e.g. 1g, 1536m)."""
    text = str(value).strip().lower()
    if not re.fullmatch(r"[1-9][0-9]*[kmg]", text):
        raise ValueError(f"{name} must be a size like 1g or 1536m, not {value!r}")
    return text


def env_references(value: Any) -> set[str]:
    """The environment variables a config value refers to as ${NAME} (in strings, dicts, lists)."""
    if isinstance(value, str):
        return set(ENV_REFERENCE.findall(value))
    if isinstance(value, dict):
        return set().union(*map(env_references, value.values()))
    if isinstance(value, list):
        return set().union(*map(env_references, value))
    return set()


def require_env(value: Any, where: str = "config") -> None:
    """Fails loud if value refers to an unset variable; reads no value (for parts expanded later)."""
    missing = sorted(n for n in env_references(value) if n not in os.environ)
    if missing:
        names = ", ".join(f"${{{n}}}" for n in missing)
        raise ValueError(f"{where} refers to {names} but it is not set in the environment")


def expand_env(value: Any, where: str = "config") -> Any:
    """${NAME} -> the environment variable's value, in strings, dicts and lists (unset: an error)."""
    require_env(value, where)
    if isinstance(value, str):
        return ENV_REFERENCE.sub(lambda m: os.environ[m.group(1)], value)
    if isinstance(value, dict):
        return {k: expand_env(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    return value


KAFKA_ENV_PROVIDER = "env"
KAFKA_ENV_PROVIDER_CLASS = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"


def kafka_env_references(props: dict[str, str]) -> dict[str, str]:
    """Kafka client properties with ${NAME} turned into ${env:NAME}, resolved by the client itself
    (Kafka's EnvVarConfigProvider, KIP-887) when the Flink source or the admin client starts: the
    job graph, the table options in Flink's error messages and the checkpoints carry only the name.
    The variable must be set where the Kafka clients run (the TaskManagers and the JobManager)."""
    out = {k: ENV_REFERENCE.sub(lambda m: f"${{{KAFKA_ENV_PROVIDER}:{m.group(1)}}}", v) for k, v in props.items()}
    if out == props:
        return out
    providers = [p.strip() for p in out.get("config.providers", "").split(",") if p.strip()]
    if KAFKA_ENV_PROVIDER not in providers:
        out["config.providers"] = ",".join([*providers, KAFKA_ENV_PROVIDER])
    out.setdefault(f"config.providers.{KAFKA_ENV_PROVIDER}.class", KAFKA_ENV_PROVIDER_CLASS)
    return out


TASKS = ("classification", "regression")


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
    local_heap: str = "2g"
    """flink.local_heap: the maximum heap (-Xmx) of the JVM that `mlvigil run` starts for Flink's
    local mini-cluster; a cluster's TaskManagers are sized by their own taskmanager.memory.*. A
    cap keeps the process's memory predictable (without it the JVM may grow to a quarter of the
    machine's memory); running out of it ends the run with an error (ExitOnOutOfMemoryError), and
    `--restore latest` with a larger heap resumes it. The hashmap backend keeps the label join's
    state in it (README "State and memory"); for more, use state_backend: rocksdb."""
    flink_conf: dict[str, str] = field(default_factory=dict)
    """flink.conf: any Flink configuration option, applied last (e.g. rest.port, taskmanager memory)."""
    # -- health of the monitor (README "Health of the monitor") ------------------------------------
    prometheus_port: str | None = None
    """metrics.prometheus_port: Flink's Prometheus reporter on this port or range ("9249-9260");
    None (the default): no reporter."""
    # --- input limits (limits.*): what the decoder refuses, and how large a dead letter may be ---
    max_message_bytes: int = 1 << 20
    """limits.max_message_bytes: larger messages are not parsed (dead letter too_large)."""
    max_features: int = 1000
    """limits.max_features: more entries in an event's features object: dead letter too_many_features."""
    max_dead_letter_bytes: int = 1_000_000
    """limits.max_dead_letter_bytes: a dead letter on the Kafka topic is at most this long (a stock
    broker's message.max.bytes is about 1 MB); a longer one keeps a prefix of its payload."""
    backfill: bool = False
    """limits.backfill: accept events older than the minute tables' retention (no too_old)."""
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


# Top-level sections whose ${NAME} references stay as they are: jobs/monitor.py checks them at
# start-up, the alert operator expands them where it opens.
DEFERRED_ENV = ("alerting",)


def parse_config(raw: dict, base_dir: Path = Path("."), source_path: Path | None = None) -> Config:
    kafka_properties = {str(k): str(v) for k, v in ((raw.get("kafka") or {}).get("properties") or {}).items()}
    # Expanding the kafka section checks its properties' variables; their references are kept.
    raw = {k: v if k in DEFERRED_ENV else expand_env(v) for k, v in raw.items()}
    if kafka_properties:
        raw["kafka"] = {**raw["kafka"], "properties": kafka_properties}
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
    if urlsplit(url).password is not None:  # never used (mlvigil.clickhouse reads the environment)
        raise ValueError("clickhouse.url must not hold a password: set MLVIGIL_CLICKHOUSE_PASSWORD instead")
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
        kafka_properties=kafka_env_references(kafka_properties),
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
        local_heap=jvm_size(flink.get("local_heap", "2g"), "flink.local_heap"),
        flink_conf={str(k): str(v) for k, v in (flink.get("conf") or {}).items()},
        prometheus_port=prometheus_port((raw.get("metrics") or {}).get("prometheus_port")),
        **_input_limits(limits),
        clickhouse_give_up_after_ms=None if ch.get("give_up_after") is None else duration_ms(ch["give_up_after"]),
    )


_PORT_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def prometheus_port(value: Any) -> str | None:
    """metrics.prometheus_port: a port (9249) or a range ("9249-9260", the reporter takes the
    first free one, so several jobs on one host do not clash); absent, null or false: off."""
    if value is None or value is False:
        return None
    m = _PORT_RANGE.match(str(value))
    if isinstance(value, bool) or not m:
        raise ValueError(f"metrics.prometheus_port must be a port or a range like 9249-9260, not {value!r}")
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"metrics.prometheus_port {value!r}: ports must be 1-65535, low to high")
    return f"{low}-{high}" if high != low else str(low)


# --- input limits (limits.*) --------------------------------------------------------------------
def _input_limits(limits: dict) -> dict:
    """The limits.* keys that bound what one message can cost the job (see configs/example.yaml)."""
    out = {
        "max_message_bytes": int(limits.get("max_message_bytes", 1 << 20)),
        "max_features": int(limits.get("max_features", 1000)),
        "max_dead_letter_bytes": int(limits.get("max_dead_letter_bytes", 1_000_000)),
        "backfill": limits.get("backfill", False),
    }
    if isinstance(out["backfill"], str):  # e.g. from ${ENV}
        out["backfill"] = {"true": True, "false": False}.get(out["backfill"].strip().lower(), out["backfill"])
    if not isinstance(out["backfill"], bool):
        raise ValueError(f"limits.backfill must be true or false, not {out['backfill']!r}")
    for key in ("max_message_bytes", "max_features"):
        if out[key] < 1:
            raise ValueError(f"limits.{key} must be at least 1, not {out[key]}")
    if out["max_dead_letter_bytes"] < 65_536:  # room for the other fields, escaped (see dead_letter_json)
        raise ValueError(f"limits.max_dead_letter_bytes must be at least 65536, not {out['max_dead_letter_bytes']}")
    return out
