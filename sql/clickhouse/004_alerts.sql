-- Alerting: every notification the job decided to send, and every delivery attempt and
-- self-healing action. Notification ids are deterministic (a replay produces the same ids), so
-- ReplacingMergeTree keys make replays harmless here too.

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    notification_id  String,
    window_end       DateTime64(3, 'UTC'),
    status           LowCardinality(String),
    severity         LowCardinality(String),
    receiver         LowCardinality(String),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    segment          LowCardinality(String),
    group_key        String,
    title            String,
    text             String,
    alerts           String,
    actions          Array(String),
    created_at       DateTime64(3, 'UTC'),
    notification     String  -- the whole notification as JSON, as first decided: what a restart sends
)
ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMM(window_end)
ORDER BY (model_id, window_end, notification_id, receiver)
TTL toDateTime(window_end) + INTERVAL 180 DAY;

-- Stores created before the column existed.
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS notification String;

-- status: pending (recorded, before the first attempt), retrying, delivered, failed (a give-up;
-- error starts with the reason: retries_exhausted, rejected, queue_full, unknown_receiver,
-- run_ended), duplicate; receiver "action:NAME" rows are self-healing actions.
CREATE TABLE IF NOT EXISTS {db}.alert_deliveries
(
    notification_id  String,
    receiver         LowCardinality(String),
    attempt          UInt32,
    status           LowCardinality(String),
    http_status      Nullable(Int32),
    error            Nullable(String),
    attempted_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(attempted_at)
ORDER BY (notification_id, receiver, attempt, status)
TTL toDateTime(attempted_at) + INTERVAL 180 DAY;
