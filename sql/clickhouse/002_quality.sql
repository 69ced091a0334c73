-- Model and business quality from late labels (see mlvigil/quality.py for every definition).
-- One row per prediction window, model, version and segment ('*' = all traffic). The job
-- rewrites a window's rows each time labels for it arrive (at most once per second), up to the
-- label lateness L after the window. The version column `updates` is the number of predictions
-- and labels folded into the window so far: it only grows, so FINAL (or argMax(x, updates))
-- returns the latest, most complete value, even when a replay after a restart writes an older
-- one again.

CREATE TABLE IF NOT EXISTS {db}.quality_metrics
(
    window_start         DateTime64(3, 'UTC'),
    window_end           DateTime64(3, 'UTC'),
    model_id             LowCardinality(String),
    model_version        LowCardinality(String),
    segment              LowCardinality(String),
    task                 LowCardinality(String),
    predictions          UInt64,
    labelled             UInt64,
    label_coverage       Nullable(Float64),
    scored               UInt64,
    accuracy             Nullable(Float64),
    precision            Nullable(Float64),
    recall               Nullable(Float64),
    f1                   Nullable(Float64),
    ece                  Nullable(Float64),
    calibrated           UInt64,
    mean_prediction      Nullable(Float64),
    mean_observed        Nullable(Float64),
    mae                  Nullable(Float64),
    rmse                 Nullable(Float64),
    clicks               UInt64,
    conversions          UInt64,
    revenue              Float64,
    ctr                  Nullable(Float64),
    conversion_rate      Nullable(Float64),
    revenue_per_request  Nullable(Float64),
    updates              UInt64,
    computed_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updates)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, model_version, segment, window_start)
TTL toDateTime(window_start) + INTERVAL 90 DAY;

-- The latest quality per window with prediction stability: the std of the score in the same
-- window and segment, from the data layer (feature_metrics, feature 'prediction:score').
CREATE VIEW IF NOT EXISTS {db}.quality_latest AS
SELECT q.*, f.std AS score_std
FROM {db}.quality_metrics AS q FINAL
LEFT JOIN
(
    SELECT window_start, model_id, model_version, segment, std
    FROM {db}.feature_metrics FINAL
    WHERE feature = 'prediction:score'
) AS f
ON q.window_start = f.window_start AND q.model_id = f.model_id AND q.model_version = f.model_version
   AND q.segment = f.segment;

-- Label dead letters per minute of arrival: invalid, orphan_label, duplicate_label.
CREATE VIEW IF NOT EXISTS {db}.label_dead_letters_per_minute AS
SELECT minute, kind, reason_code, events
FROM {db}.dead_letters_per_minute
WHERE stream = 'labels';
