"""Alerting: layered rules, Alertmanager-style grouping in event time, correlated drift/quality
notifications with a root-cause hint, chat/webhook payloads, delivery and self-healing hooks.

Pure Python (no Flink import): the job keeps AlertEngine's state dict in keyed state.
See mlvigil/alerting/README.md.
"""

from mlvigil.alerting.engine import AlertEngine, Notification, new_state
from mlvigil.alerting.rules import (
    AlertingConfig,
    Receiver,
    Routing,
    Rule,
    default_routing,
    default_rules,
    load_config,
    load_routing,
    load_rules,
)

__all__ = [
    "AlertEngine",
    "AlertingConfig",
    "Notification",
    "Receiver",
    "Routing",
    "Rule",
    "default_routing",
    "default_rules",
    "load_config",
    "load_routing",
    "load_rules",
    "new_state",
]
