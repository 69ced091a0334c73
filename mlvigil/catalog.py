"""The catalog: models, segment dimensions and profiles, compiled for the Java UDFs.

It rides in the job as one job parameter (base64 of gzipped JSON) so a cluster's
TaskManagers get it with the job graph; no shared file system is needed.
"""

import base64
import gzip
import json

from mlvigil.config import Config

CATALOG_PARAM = "mlvigil.catalog"
MIN_EVENT_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: earlier event times are absurd


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
        "models": models,
        "profiles": profiles,
    }


def encode_catalog(catalog: dict) -> str:
    raw = json.dumps(catalog, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")
