"""The catalog: models, segment dimensions and profiles, compiled for the Java UDFs.

It rides in the job as one job parameter (base64 of gzipped JSON) so a cluster's
TaskManagers get it with the job graph; no shared file system is needed.
"""

import base64
import gzip
import hashlib
import json

from mlvigil.config import Config

CATALOG_PARAM = "mlvigil.catalog"
MIN_EVENT_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: earlier event times are absurd
DAY_MS = 86_400_000
MINUTE_RETENTION_DAYS = 90
"""TTL of the minute tables (feature_metrics, service_metrics, quality_metrics) in
sql/clickhouse: the one definition; tests/unit/test_retention.py checks the DDL against it."""
RETENTION_MARGIN_MS = DAY_MS
"""An accepted event is at least this much younger than the retention, so its window can close
and be written before the TTL, applied at insert, would delete it."""
MAX_EVENT_AGE_MS = MINUTE_RETENTION_DAYS * DAY_MS - RETENTION_MARGIN_MS
"""Older events (against processing time) are dead letters too_old, unless limits.backfill."""
REASON_CODES = (
    "malformed_json", "duplicate_key", "too_large", "too_many_features", "not_an_object", "missing_field",
    "wrong_type", "bad_timestamp", "absurd_timestamp", "too_old", "absurd_value", "unknown_model", "late",
)  # fmt: skip
"""The dead-letter reason codes of feature and prediction events: those the Java decoder gives
(EventDecoder, ParseEventFunction) and late; schemas/README.md documents each
(tests/unit/test_decoder_fuzz.py checks both)."""
DEAD_LETTER_PREFIX_BYTES = 4096
"""How much of an oversized payload a dead letter keeps (with its length and sha256)."""


def compile_catalog(cfg: Config) -> dict:
    profiles: list[dict] = []
    models: dict[str, dict] = {}
    for model_id, m in cfg.models.items():
        versions = {}
        for version, prof in m.profiles.items():
            versions[version] = len(profiles)
            profiles.append(
                {
                    "model": model_id,
                    "version": version,
                    "features": prof["features"],
                    "prediction": prof.get("prediction", []),
                }
            )
            # Reference quality (mlvigil profile --label-column) for the alert rules' baselines.
            if "reference_quality" in prof:
                profiles[-1]["reference_quality"] = prof["reference_quality"]
        models[model_id] = {
            "segments": m.segments,
            "versions": versions,
            "task": m.task,
            "positive_label": m.positive_label,
            "threshold": m.threshold,
        }
    return {
        "window_ms": cfg.window_ms,
        "min_event_ms": MIN_EVENT_MS,
        "max_future_ms": cfg.max_future_ms,
        "max_latency_ms": cfg.max_latency_ms,
        "max_segment_values": cfg.max_segment_values,
        "max_message_bytes": cfg.max_message_bytes,
        "max_features": cfg.max_features,
        "max_event_age_ms": 0 if cfg.backfill else MAX_EVENT_AGE_MS,
        "dead_letter_prefix_bytes": DEAD_LETTER_PREFIX_BYTES,
        "models": models,
        "profiles": profiles,
    }


def encode_catalog(catalog: dict) -> str:
    raw = json.dumps(catalog, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def catalog_key(encoded: str) -> str:
    """Names the catalog where job parameters cannot be read (MonitorCatalog.key in Java)."""
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()[:16]
