-- mlvigil ClickHouse schema. {db} is replaced by the configured database name.
-- Rows are written at least once; every table is a ReplacingMergeTree on a deterministic key,
-- so a replay after a restart replaces rows instead of adding them. Read with FINAL (or argMax
-- on computed_at) to see each key once: see README "Querying".

CREATE DATABASE IF NOT EXISTS {db};

-- Data layer: one row per window, model, version, segment ('*' = all traffic, else 'dim=value')
-- and monitored column (a feature, or 'prediction:score' / 'prediction:predicted_label').
CREATE TABLE IF NOT EXISTS {db}.feature_metrics
(
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    segment          LowCardinality(String),
    feature          LowCardinality(String),
    feature_type     LowCardinality(String),
    events           UInt64,
    present          UInt64,
    missing          UInt64,
    missing_rate     Float64,
    outliers         UInt64,
    outlier_rate     Nullable(Float64),
    psi              Nullable(Float64),
    ks               Nullable(Float64),
    mean             Nullable(Float64),
    std              Nullable(Float64),
    unseen_rate      Nullable(Float64),
    bin_proportions  Array(Float64),
    computed_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, model_version, segment, feature, window_start)
TTL toDateTime(window_start) + INTERVAL 90 DAY;

-- Service layer plus prediction drift, per window, model and version.
CREATE TABLE IF NOT EXISTS {db}.service_metrics
(
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    requests         UInt64,
    errors           UInt64,
    error_rate       Float64,
    throughput_rps   Float64,
    latency_p50      Nullable(Float64),
    latency_p95      Nullable(Float64),
    latency_p99      Nullable(Float64),
    score_psi        Nullable(Float64),
    score_mean       Nullable(Float64),
    computed_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, model_version, window_start)
TTL toDateTime(window_start) + INTERVAL 90 DAY;

-- Valid, on-time events counted into windows, per stream: the accounting of what the job read.
-- Kept 90 days after it was written (computed_at), not after window_start: a backfill's windows
-- (limits.backfill) are still counted, although the minute tables' TTL drops their metrics at
-- insert (the hourly and daily rollups keep them).
CREATE TABLE IF NOT EXISTS {db}.window_events
(
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    stream           LowCardinality(String),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    events           UInt64,
    computed_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (stream, model_id, model_version, window_start)
TTL toDateTime(computed_at) + INTERVAL 90 DAY;

-- Every event that did not make it into a window: invalid (kind 'invalid', reason_code says
-- why) or behind the watermark (kind 'late'). The raw payload is kept for replay (of a too_large
-- message, its first bytes). Kept 30 days after it was written (received_at): a message with an
-- old Kafka timestamp (a backfill, a replay) keeps its dead letter too. Partitioned by kafka_ts,
-- which a replay does not change, so the replay replaces its row.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    stream           LowCardinality(String),
    kind             LowCardinality(String),
    reason_code      LowCardinality(String),
    reason           String,
    topic            String,
    partition        Int32,
    offset           Int64,
    kafka_ts         DateTime64(3, 'UTC'),
    event_time       Nullable(DateTime64(3, 'UTC')),
    model_id         Nullable(String),
    payload          String,
    received_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(kafka_ts)
ORDER BY (topic, partition, offset)
TTL toDateTime(received_at) + INTERVAL 30 DAY;

CREATE VIEW IF NOT EXISTS {db}.dead_letters_per_minute AS
SELECT toStartOfMinute(kafka_ts) AS minute, stream, kind, reason_code, count() AS events
FROM {db}.dead_letters FINAL
GROUP BY minute, stream, kind, reason_code;

-- The reference profiles the job ran with.
CREATE TABLE IF NOT EXISTS {db}.reference_profiles
(
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    fingerprint      String,
    profile          String,
    loaded_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (model_id, model_version, fingerprint);
