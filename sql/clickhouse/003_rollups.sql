-- Hourly and daily rollups of the per-minute metrics, and uniform "series" views over all three
-- granularities. {db} is replaced by the configured database name.
--
-- Retention (TTL on window_start; rows go when their part is merged):
--   feature_metrics, service_metrics, quality_metrics (per minute)    90 days
--   feature_metrics_hourly, service_metrics_hourly, quality_...      400 days
--   feature_metrics_daily, service_metrics_daily, quality_..._daily  1830 days (5 years)
--
-- Correct under replays and updates. A minute row may be written again: after a restart
-- (at-least-once, same values, later computed_at) or with new values. Adding every insert into
-- a running sum (AggregatingMergeTree with sumState) would count a replayed minute twice, and
-- argMax/-State per hour cannot forget a minute's old contribution. So each insert into a minute
-- table recomputes every (key, hour) it touches from the deduplicated minutes: the inserted
-- block together with the stored rows of those hours (newest computed_at per minute wins, as
-- FINAL does), and writes the whole hour again. The hourly tables are ReplacingMergeTree on
-- rolled_at (the time of the recompute), so the newest recompute of an hour is the one kept.
-- The daily tables are recomputed the same way from the hourly rows. Read all of them with
-- FINAL (the *_series_* views do).
-- Trade-offs: each flush re-reads at most an hour of minutes (a day of hours) for the keys it
-- touches (a few thousand rows, milliseconds); recomputes of one hour must not run concurrently,
-- which holds because the job has one writer (parallelism 1); an hour can only be recomputed
-- while its minutes are still kept (90 days), which is far longer than any replay.
-- Hourly and daily values: counts are sums; rates, mean and std are pooled over the minutes'
-- counts (exact); bin proportions are pooled (weighted by present values); psi and ks are the
-- mean of the minutes' values, psi_max and ks_max the worst minute (a PSI of pooled bins would
-- need the reference profile; the pooled bin_proportions allow it). Latency percentiles are the
-- request-weighted mean of the minutes' percentiles (not the hour's exact percentile), with the
-- worst minute's p95 and p99 alongside. Hours and days are UTC.
-- Existing minutes (written before this file was applied) are rolled up by replaying them to
-- their own table, which is harmless for the same reason:
--   INSERT INTO {db}.feature_metrics SELECT * FROM {db}.feature_metrics FINAL WHERE window_start >= ...
--   INSERT INTO {db}.service_metrics SELECT * FROM {db}.service_metrics FINAL WHERE window_start >= ...

-- The stored rows, each key once. Inside a materialized view every mention of its source table
-- means the inserted block, so the views read the stored rows through these.
CREATE VIEW IF NOT EXISTS {db}.feature_metrics_final AS SELECT * FROM {db}.feature_metrics FINAL;

CREATE VIEW IF NOT EXISTS {db}.service_metrics_final AS SELECT * FROM {db}.service_metrics FINAL;

CREATE TABLE IF NOT EXISTS {db}.feature_metrics_hourly
(
    window_start     DateTime64(3, 'UTC'),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    segment          LowCardinality(String),
    feature          LowCardinality(String),
    feature_type     LowCardinality(String),
    minutes          UInt32,
    events           UInt64,
    present          UInt64,
    missing          UInt64,
    outliers         UInt64,
    outlier_base     UInt64,
    psi_sum          Float64,
    psi_n            UInt32,
    psi_max          Nullable(Float64),
    ks_sum           Float64,
    ks_n             UInt32,
    ks_max           Nullable(Float64),
    moment_base      UInt64,
    mean_wsum        Float64,
    sq_wsum          Float64,
    unseen_base      UInt64,
    unseen_wsum      Float64,
    bin_base         UInt64,
    bin_wsum         Array(Float64),
    rolled_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, model_version, segment, feature, window_start)
TTL toDateTime(window_start) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS {db}.feature_metrics_daily AS {db}.feature_metrics_hourly
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYear(window_start)
ORDER BY (model_id, model_version, segment, feature, window_start)
TTL toDateTime(window_start) + INTERVAL 1830 DAY;

CREATE VIEW IF NOT EXISTS {db}.feature_metrics_hourly_final AS SELECT * FROM {db}.feature_metrics_hourly FINAL;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feature_metrics_hourly_mv TO {db}.feature_metrics_hourly AS
SELECT
    toDateTime64(toStartOfHour(minute), 3, 'UTC') AS window_start,
    model_id, model_version, segment, feature,
    any(m_type) AS feature_type,
    toUInt32(count()) AS minutes,
    sum(m_events) AS events,
    sum(m_present) AS present,
    sum(m_missing) AS missing,
    sum(m_outliers) AS outliers,
    sumIf(m_present, m_outlier_rate IS NOT NULL) AS outlier_base,
    sum(ifNull(m_psi, 0)) AS psi_sum,
    toUInt32(count(m_psi)) AS psi_n,
    max(m_psi) AS psi_max,
    sum(ifNull(m_ks, 0)) AS ks_sum,
    toUInt32(count(m_ks)) AS ks_n,
    max(m_ks) AS ks_max,
    sumIf(m_present, m_mean IS NOT NULL) AS moment_base,
    sum(ifNull(m_mean, 0) * m_present) AS mean_wsum,
    sum((pow(ifNull(m_std, 0), 2) + pow(ifNull(m_mean, 0), 2)) * m_present) AS sq_wsum,
    sumIf(m_present, m_unseen_rate IS NOT NULL) AS unseen_base,
    sum(ifNull(m_unseen_rate, 0) * m_present) AS unseen_wsum,
    sumIf(m_present, length(m_bins) > 0) AS bin_base,
    sumForEach(arrayMap(p -> p * m_present, m_bins)) AS bin_wsum,
    now64(3, 'UTC') AS rolled_at
FROM
(
    SELECT *
    FROM
    (
        SELECT window_start AS minute, model_id, model_version, segment, feature, feature_type AS m_type,
               events AS m_events, present AS m_present, missing AS m_missing, outliers AS m_outliers,
               outlier_rate AS m_outlier_rate, psi AS m_psi, ks AS m_ks, mean AS m_mean, std AS m_std,
               unseen_rate AS m_unseen_rate, bin_proportions AS m_bins, computed_at
        FROM {db}.feature_metrics
        UNION ALL
        SELECT window_start AS minute, model_id, model_version, segment, feature, feature_type AS m_type,
               events AS m_events, present AS m_present, missing AS m_missing, outliers AS m_outliers,
               outlier_rate AS m_outlier_rate, psi AS m_psi, ks AS m_ks, mean AS m_mean, std AS m_std,
               unseen_rate AS m_unseen_rate, bin_proportions AS m_bins, computed_at
        FROM {db}.feature_metrics_final
        WHERE window_start >= (SELECT toStartOfHour(min(window_start)) FROM {db}.feature_metrics)
          AND window_start < (SELECT toStartOfHour(max(window_start)) + INTERVAL 1 HOUR FROM {db}.feature_metrics)
          AND (model_id, model_version, segment, feature, toStartOfHour(window_start)) IN
              (SELECT model_id, model_version, segment, feature, toStartOfHour(window_start) FROM {db}.feature_metrics)
    )
    ORDER BY computed_at DESC
    LIMIT 1 BY model_id, model_version, segment, feature, minute
)
GROUP BY window_start, model_id, model_version, segment, feature;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feature_metrics_daily_mv TO {db}.feature_metrics_daily AS
SELECT
    toDateTime64(toStartOfDay(hour), 3, 'UTC') AS window_start,
    model_id, model_version, segment, feature,
    any(h_feature_type) AS feature_type,
    sum(h_minutes) AS minutes,
    sum(h_events) AS events,
    sum(h_present) AS present,
    sum(h_missing) AS missing,
    sum(h_outliers) AS outliers,
    sum(h_outlier_base) AS outlier_base,
    sum(h_psi_sum) AS psi_sum,
    sum(h_psi_n) AS psi_n,
    max(h_psi_max) AS psi_max,
    sum(h_ks_sum) AS ks_sum,
    sum(h_ks_n) AS ks_n,
    max(h_ks_max) AS ks_max,
    sum(h_moment_base) AS moment_base,
    sum(h_mean_wsum) AS mean_wsum,
    sum(h_sq_wsum) AS sq_wsum,
    sum(h_unseen_base) AS unseen_base,
    sum(h_unseen_wsum) AS unseen_wsum,
    sum(h_bin_base) AS bin_base,
    sumForEach(h_bin_wsum) AS bin_wsum,
    now64(3, 'UTC') AS rolled_at
FROM
(
    SELECT *
    FROM
    (
        SELECT window_start AS hour, model_id, model_version, segment, feature,
               feature_type AS h_feature_type, minutes AS h_minutes, events AS h_events, present AS h_present,
               missing AS h_missing, outliers AS h_outliers, outlier_base AS h_outlier_base,
               psi_sum AS h_psi_sum, psi_n AS h_psi_n, psi_max AS h_psi_max, ks_sum AS h_ks_sum,
               ks_n AS h_ks_n, ks_max AS h_ks_max, moment_base AS h_moment_base,
               mean_wsum AS h_mean_wsum, sq_wsum AS h_sq_wsum, unseen_base AS h_unseen_base,
               unseen_wsum AS h_unseen_wsum, bin_base AS h_bin_base, bin_wsum AS h_bin_wsum, rolled_at
        FROM {db}.feature_metrics_hourly
        UNION ALL
        SELECT window_start AS hour, model_id, model_version, segment, feature,
               feature_type AS h_feature_type, minutes AS h_minutes, events AS h_events, present AS h_present,
               missing AS h_missing, outliers AS h_outliers, outlier_base AS h_outlier_base,
               psi_sum AS h_psi_sum, psi_n AS h_psi_n, psi_max AS h_psi_max, ks_sum AS h_ks_sum,
               ks_n AS h_ks_n, ks_max AS h_ks_max, moment_base AS h_moment_base,
               mean_wsum AS h_mean_wsum, sq_wsum AS h_sq_wsum, unseen_base AS h_unseen_base,
               unseen_wsum AS h_unseen_wsum, bin_base AS h_bin_base, bin_wsum AS h_bin_wsum, rolled_at
        FROM {db}.feature_metrics_hourly_final
        WHERE window_start >= (SELECT toStartOfDay(min(window_start)) FROM {db}.feature_metrics_hourly)
          AND window_start < (SELECT toStartOfDay(max(window_start)) + INTERVAL 1 DAY FROM {db}.feature_metrics_hourly)
          AND (model_id, model_version, segment, feature, toStartOfDay(window_start)) IN
              (SELECT model_id, model_version, segment, feature, toStartOfDay(window_start)
               FROM {db}.feature_metrics_hourly)
    )
    ORDER BY rolled_at DESC
    LIMIT 1 BY model_id, model_version, segment, feature, hour
)
GROUP BY window_start, model_id, model_version, segment, feature;

CREATE TABLE IF NOT EXISTS {db}.service_metrics_hourly
(
    window_start     DateTime64(3, 'UTC'),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    minutes          UInt32,
    seconds          Float64,
    requests         UInt64,
    errors           UInt64,
    latency_base     UInt64,
    p50_wsum         Float64,
    p95_wsum         Float64,
    p99_wsum         Float64,
    p95_max          Nullable(Float64),
    p99_max          Nullable(Float64),
    score_psi_sum    Float64,
    score_psi_n      UInt32,
    score_psi_max    Nullable(Float64),
    score_base       UInt64,
    score_mean_wsum  Float64,
    rolled_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, model_version, window_start)
TTL toDateTime(window_start) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS {db}.service_metrics_daily AS {db}.service_metrics_hourly
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYear(window_start)
ORDER BY (model_id, model_version, window_start)
TTL toDateTime(window_start) + INTERVAL 1830 DAY;

CREATE VIEW IF NOT EXISTS {db}.service_metrics_hourly_final AS SELECT * FROM {db}.service_metrics_hourly FINAL;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.service_metrics_hourly_mv TO {db}.service_metrics_hourly AS
SELECT
    toDateTime64(toStartOfHour(minute), 3, 'UTC') AS window_start,
    model_id, model_version,
    toUInt32(count()) AS minutes,
    sum(dateDiff('millisecond', minute, m_end) / 1000) AS seconds,
    sum(m_requests) AS requests,
    sum(m_errors) AS errors,
    sumIf(m_requests, m_p50 IS NOT NULL) AS latency_base,
    sum(ifNull(m_p50, 0) * m_requests) AS p50_wsum,
    sum(ifNull(m_p95, 0) * m_requests) AS p95_wsum,
    sum(ifNull(m_p99, 0) * m_requests) AS p99_wsum,
    max(m_p95) AS p95_max,
    max(m_p99) AS p99_max,
    sum(ifNull(m_score_psi, 0)) AS score_psi_sum,
    toUInt32(count(m_score_psi)) AS score_psi_n,
    max(m_score_psi) AS score_psi_max,
    sumIf(m_requests, m_score_mean IS NOT NULL) AS score_base,
    sum(ifNull(m_score_mean, 0) * m_requests) AS score_mean_wsum,
    now64(3, 'UTC') AS rolled_at
FROM
(
    SELECT *
    FROM
    (
        SELECT window_start AS minute, window_end AS m_end, model_id, model_version, requests AS m_requests,
               errors AS m_errors, latency_p50 AS m_p50, latency_p95 AS m_p95, latency_p99 AS m_p99,
               score_psi AS m_score_psi, score_mean AS m_score_mean, computed_at
        FROM {db}.service_metrics
        UNION ALL
        SELECT window_start AS minute, window_end AS m_end, model_id, model_version, requests AS m_requests,
               errors AS m_errors, latency_p50 AS m_p50, latency_p95 AS m_p95, latency_p99 AS m_p99,
               score_psi AS m_score_psi, score_mean AS m_score_mean, computed_at
        FROM {db}.service_metrics_final
        WHERE window_start >= (SELECT toStartOfHour(min(window_start)) FROM {db}.service_metrics)
          AND window_start < (SELECT toStartOfHour(max(window_start)) + INTERVAL 1 HOUR FROM {db}.service_metrics)
          AND (model_id, model_version, toStartOfHour(window_start)) IN
              (SELECT model_id, model_version, toStartOfHour(window_start) FROM {db}.service_metrics)
    )
    ORDER BY computed_at DESC
    LIMIT 1 BY model_id, model_version, minute
)
GROUP BY window_start, model_id, model_version;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.service_metrics_daily_mv TO {db}.service_metrics_daily AS
SELECT
    toDateTime64(toStartOfDay(hour), 3, 'UTC') AS window_start,
    model_id, model_version,
    sum(h_minutes) AS minutes,
    sum(h_seconds) AS seconds,
    sum(h_requests) AS requests,
    sum(h_errors) AS errors,
    sum(h_latency_base) AS latency_base,
    sum(h_p50_wsum) AS p50_wsum,
    sum(h_p95_wsum) AS p95_wsum,
    sum(h_p99_wsum) AS p99_wsum,
    max(h_p95_max) AS p95_max,
    max(h_p99_max) AS p99_max,
    sum(h_score_psi_sum) AS score_psi_sum,
    sum(h_score_psi_n) AS score_psi_n,
    max(h_score_psi_max) AS score_psi_max,
    sum(h_score_base) AS score_base,
    sum(h_score_mean_wsum) AS score_mean_wsum,
    now64(3, 'UTC') AS rolled_at
FROM
(
    SELECT *
    FROM
    (
        SELECT window_start AS hour, model_id, model_version,
               minutes AS h_minutes, seconds AS h_seconds, requests AS h_requests, errors AS h_errors,
               latency_base AS h_latency_base, p50_wsum AS h_p50_wsum,
               p95_wsum AS h_p95_wsum, p99_wsum AS h_p99_wsum, p95_max AS h_p95_max, p99_max AS h_p99_max,
               score_psi_sum AS h_score_psi_sum,
               score_psi_n AS h_score_psi_n, score_psi_max AS h_score_psi_max, score_base AS h_score_base,
               score_mean_wsum AS h_score_mean_wsum, rolled_at
        FROM {db}.service_metrics_hourly
        UNION ALL
        SELECT window_start AS hour, model_id, model_version,
               minutes AS h_minutes, seconds AS h_seconds, requests AS h_requests, errors AS h_errors,
               latency_base AS h_latency_base, p50_wsum AS h_p50_wsum,
               p95_wsum AS h_p95_wsum, p99_wsum AS h_p99_wsum, p95_max AS h_p95_max, p99_max AS h_p99_max,
               score_psi_sum AS h_score_psi_sum,
               score_psi_n AS h_score_psi_n, score_psi_max AS h_score_psi_max, score_base AS h_score_base,
               score_mean_wsum AS h_score_mean_wsum, rolled_at
        FROM {db}.service_metrics_hourly_final
        WHERE window_start >= (SELECT toStartOfDay(min(window_start)) FROM {db}.service_metrics_hourly)
          AND window_start < (SELECT toStartOfDay(max(window_start)) + INTERVAL 1 DAY FROM {db}.service_metrics_hourly)
          AND (model_id, model_version, toStartOfDay(window_start)) IN
              (SELECT model_id, model_version, toStartOfDay(window_start) FROM {db}.service_metrics_hourly)
    )
    ORDER BY rolled_at DESC
    LIMIT 1 BY model_id, model_version, hour
)
GROUP BY window_start, model_id, model_version;

-- One shape per layer at every granularity, for the CLI (`mlvigil history`), the report and
-- the Grafana dashboards: feature_series_{minute,hour,day}, service_series_{minute,hour,day},
-- quality_series_{minute,hour,day} (below).
CREATE VIEW IF NOT EXISTS {db}.feature_series_minute AS
SELECT window_start, model_id, model_version, segment, feature, feature_type, toUInt32(1) AS minutes, events, present,
       missing, missing_rate, outliers, outlier_rate, psi, psi AS psi_max, ks, ks AS ks_max, mean, std, unseen_rate,
       bin_proportions
FROM {db}.feature_metrics FINAL;

CREATE VIEW IF NOT EXISTS {db}.feature_series_hour AS
SELECT window_start, model_id, model_version, segment, feature, feature_type, minutes, events, present, missing,
       if(events > 0, missing / events, 0) AS missing_rate,
       outliers,
       if(outlier_base > 0, outliers / outlier_base, NULL) AS outlier_rate,
       if(psi_n > 0, psi_sum / psi_n, NULL) AS psi, psi_max,
       if(ks_n > 0, ks_sum / ks_n, NULL) AS ks, ks_max,
       if(moment_base > 0, mean_wsum / moment_base, NULL) AS mean,
       if(moment_base > 0, sqrt(greatest(sq_wsum / moment_base - pow(mean_wsum / moment_base, 2), 0)), NULL) AS std,
       if(unseen_base > 0, unseen_wsum / unseen_base, NULL) AS unseen_rate,
       if(bin_base > 0, arrayMap(x -> x / bin_base, bin_wsum), CAST([] AS Array(Float64))) AS bin_proportions
FROM {db}.feature_metrics_hourly FINAL;

CREATE VIEW IF NOT EXISTS {db}.feature_series_day AS
SELECT window_start, model_id, model_version, segment, feature, feature_type, minutes, events, present, missing,
       if(events > 0, missing / events, 0) AS missing_rate,
       outliers,
       if(outlier_base > 0, outliers / outlier_base, NULL) AS outlier_rate,
       if(psi_n > 0, psi_sum / psi_n, NULL) AS psi, psi_max,
       if(ks_n > 0, ks_sum / ks_n, NULL) AS ks, ks_max,
       if(moment_base > 0, mean_wsum / moment_base, NULL) AS mean,
       if(moment_base > 0, sqrt(greatest(sq_wsum / moment_base - pow(mean_wsum / moment_base, 2), 0)), NULL) AS std,
       if(unseen_base > 0, unseen_wsum / unseen_base, NULL) AS unseen_rate,
       if(bin_base > 0, arrayMap(x -> x / bin_base, bin_wsum), CAST([] AS Array(Float64))) AS bin_proportions
FROM {db}.feature_metrics_daily FINAL;

CREATE VIEW IF NOT EXISTS {db}.service_series_minute AS
SELECT window_start, model_id, model_version, toUInt32(1) AS minutes, requests, errors, error_rate, throughput_rps,
       latency_p50, latency_p95, latency_p99, latency_p95 AS latency_p95_max, latency_p99 AS latency_p99_max,
       score_psi, score_psi AS score_psi_max, score_mean
FROM {db}.service_metrics FINAL;

CREATE VIEW IF NOT EXISTS {db}.service_series_hour AS
SELECT window_start, model_id, model_version, minutes, requests, errors,
       if(requests > 0, errors / requests, 0) AS error_rate,
       if(seconds > 0, requests / seconds, 0) AS throughput_rps,
       if(latency_base > 0, p50_wsum / latency_base, NULL) AS latency_p50,
       if(latency_base > 0, p95_wsum / latency_base, NULL) AS latency_p95,
       if(latency_base > 0, p99_wsum / latency_base, NULL) AS latency_p99,
       p95_max AS latency_p95_max, p99_max AS latency_p99_max,
       if(score_psi_n > 0, score_psi_sum / score_psi_n, NULL) AS score_psi, score_psi_max,
       if(score_base > 0, score_mean_wsum / score_base, NULL) AS score_mean
FROM {db}.service_metrics_hourly FINAL;

CREATE VIEW IF NOT EXISTS {db}.service_series_day AS
SELECT window_start, model_id, model_version, minutes, requests, errors,
       if(requests > 0, errors / requests, 0) AS error_rate,
       if(seconds > 0, requests / seconds, 0) AS throughput_rps,
       if(latency_base > 0, p50_wsum / latency_base, NULL) AS latency_p50,
       if(latency_base > 0, p95_wsum / latency_base, NULL) AS latency_p95,
       if(latency_base > 0, p99_wsum / latency_base, NULL) AS latency_p99,
       p95_max AS latency_p95_max, p99_max AS latency_p99_max,
       if(score_psi_n > 0, score_psi_sum / score_psi_n, NULL) AS score_psi, score_psi_max,
       if(score_base > 0, score_mean_wsum / score_base, NULL) AS score_mean
FROM {db}.service_metrics_daily FINAL;

-- Model and business quality (002_quality.sql). Its rows are versioned by `updates` (the
-- predictions and labels folded in so far), so the newest row of a minute is the one with the
-- most updates, as FINAL picks it. Pooled exactly from the minutes' counts: label_coverage,
-- accuracy, mean_prediction, mean_observed, MAE, RMSE, ctr, conversion_rate,
-- revenue_per_request. Precision, recall and F1 are the scored-weighted mean of the minutes'
-- values and ECE the calibrated-weighted mean: the confusion and calibration counts behind them
-- are not stored, so these are close to, not equal to, the values of the pooled hour.
CREATE VIEW IF NOT EXISTS {db}.quality_metrics_final AS SELECT * FROM {db}.quality_metrics FINAL;

CREATE TABLE IF NOT EXISTS {db}.quality_metrics_hourly
(
    window_start     DateTime64(3, 'UTC'),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    segment          LowCardinality(String),
    task             LowCardinality(String),
    minutes          UInt32,
    predictions      UInt64,
    labelled         UInt64,
    scored           UInt64,
    calibrated       UInt64,
    acc_base         UInt64,
    acc_wsum         Float64,
    precision_base   UInt64,
    precision_wsum   Float64,
    recall_base      UInt64,
    recall_wsum      Float64,
    f1_base          UInt64,
    f1_wsum          Float64,
    ece_base         UInt64,
    ece_wsum         Float64,
    means_base       UInt64,
    prediction_wsum  Float64,
    observed_wsum    Float64,
    err_base         UInt64,
    mae_wsum         Float64,
    sq_err_wsum      Float64,
    clicks           UInt64,
    clicks_base      UInt64,
    conversions      UInt64,
    conversions_base UInt64,
    revenue          Float64,
    revenue_base     UInt64,
    rolled_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, model_version, segment, window_start)
TTL toDateTime(window_start) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS {db}.quality_metrics_daily AS {db}.quality_metrics_hourly
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYear(window_start)
ORDER BY (model_id, model_version, segment, window_start)
TTL toDateTime(window_start) + INTERVAL 1830 DAY;

CREATE VIEW IF NOT EXISTS {db}.quality_metrics_hourly_final AS SELECT * FROM {db}.quality_metrics_hourly FINAL;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.quality_metrics_hourly_mv TO {db}.quality_metrics_hourly AS
SELECT
    toDateTime64(toStartOfHour(minute), 3, 'UTC') AS window_start,
    model_id, model_version, segment,
    any(m_task) AS task,
    toUInt32(count()) AS minutes,
    sum(m_predictions) AS predictions,
    sum(m_labelled) AS labelled,
    sum(m_scored) AS scored,
    sum(m_calibrated) AS calibrated,
    sumIf(m_scored, m_accuracy IS NOT NULL) AS acc_base,
    sum(ifNull(m_accuracy, 0) * m_scored) AS acc_wsum,
    sumIf(m_scored, m_precision IS NOT NULL) AS precision_base,
    sum(ifNull(m_precision, 0) * m_scored) AS precision_wsum,
    sumIf(m_scored, m_recall IS NOT NULL) AS recall_base,
    sum(ifNull(m_recall, 0) * m_scored) AS recall_wsum,
    sumIf(m_scored, m_f1 IS NOT NULL) AS f1_base,
    sum(ifNull(m_f1, 0) * m_scored) AS f1_wsum,
    sumIf(m_calibrated, m_ece IS NOT NULL) AS ece_base,
    sum(ifNull(m_ece, 0) * m_calibrated) AS ece_wsum,
    sumIf(m_means_n, m_mean_prediction IS NOT NULL) AS means_base,
    sum(ifNull(m_mean_prediction, 0) * m_means_n) AS prediction_wsum,
    sum(ifNull(m_mean_observed, 0) * m_means_n) AS observed_wsum,
    sumIf(m_scored, m_mae IS NOT NULL) AS err_base,
    sum(ifNull(m_mae, 0) * m_scored) AS mae_wsum,
    sum(pow(ifNull(m_rmse, 0), 2) * m_scored) AS sq_err_wsum,
    sum(m_clicks) AS clicks,
    sumIf(m_labelled, m_ctr IS NOT NULL) AS clicks_base,
    sum(m_conversions) AS conversions,
    sumIf(m_labelled, m_conversion_rate IS NOT NULL) AS conversions_base,
    sum(m_revenue) AS revenue,
    sumIf(m_labelled, m_revenue_per_request IS NOT NULL) AS revenue_base,
    now64(3, 'UTC') AS rolled_at
FROM
(
    SELECT *
    FROM
    (
        SELECT window_start AS minute, model_id, model_version, segment, task AS m_task,
               predictions AS m_predictions, labelled AS m_labelled, scored AS m_scored,
               calibrated AS m_calibrated, if(task = 'regression', scored, calibrated) AS m_means_n,
               accuracy AS m_accuracy, precision AS m_precision, recall AS m_recall, f1 AS m_f1, ece AS m_ece,
               mean_prediction AS m_mean_prediction, mean_observed AS m_mean_observed, mae AS m_mae,
               rmse AS m_rmse, clicks AS m_clicks, ctr AS m_ctr, conversions AS m_conversions,
               conversion_rate AS m_conversion_rate, revenue AS m_revenue,
               revenue_per_request AS m_revenue_per_request, updates, computed_at
        FROM {db}.quality_metrics
        UNION ALL
        SELECT window_start AS minute, model_id, model_version, segment, task AS m_task,
               predictions AS m_predictions, labelled AS m_labelled, scored AS m_scored,
               calibrated AS m_calibrated, if(task = 'regression', scored, calibrated) AS m_means_n,
               accuracy AS m_accuracy, precision AS m_precision, recall AS m_recall, f1 AS m_f1, ece AS m_ece,
               mean_prediction AS m_mean_prediction, mean_observed AS m_mean_observed, mae AS m_mae,
               rmse AS m_rmse, clicks AS m_clicks, ctr AS m_ctr, conversions AS m_conversions,
               conversion_rate AS m_conversion_rate, revenue AS m_revenue,
               revenue_per_request AS m_revenue_per_request, updates, computed_at
        FROM {db}.quality_metrics_final
        WHERE window_start >= (SELECT toStartOfHour(min(window_start)) FROM {db}.quality_metrics)
          AND window_start < (SELECT toStartOfHour(max(window_start)) + INTERVAL 1 HOUR FROM {db}.quality_metrics)
          AND (model_id, model_version, segment, toStartOfHour(window_start)) IN
              (SELECT model_id, model_version, segment, toStartOfHour(window_start) FROM {db}.quality_metrics)
    )
    ORDER BY updates DESC, computed_at DESC
    LIMIT 1 BY model_id, model_version, segment, minute
)
GROUP BY window_start, model_id, model_version, segment;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.quality_metrics_daily_mv TO {db}.quality_metrics_daily AS
SELECT
    toDateTime64(toStartOfDay(hour), 3, 'UTC') AS window_start,
    model_id, model_version, segment,
    any(h_task) AS task,
    sum(h_minutes) AS minutes,
    sum(h_predictions) AS predictions,
    sum(h_labelled) AS labelled,
    sum(h_scored) AS scored,
    sum(h_calibrated) AS calibrated,
    sum(h_acc_base) AS acc_base,
    sum(h_acc_wsum) AS acc_wsum,
    sum(h_precision_base) AS precision_base,
    sum(h_precision_wsum) AS precision_wsum,
    sum(h_recall_base) AS recall_base,
    sum(h_recall_wsum) AS recall_wsum,
    sum(h_f1_base) AS f1_base,
    sum(h_f1_wsum) AS f1_wsum,
    sum(h_ece_base) AS ece_base,
    sum(h_ece_wsum) AS ece_wsum,
    sum(h_means_base) AS means_base,
    sum(h_prediction_wsum) AS prediction_wsum,
    sum(h_observed_wsum) AS observed_wsum,
    sum(h_err_base) AS err_base,
    sum(h_mae_wsum) AS mae_wsum,
    sum(h_sq_err_wsum) AS sq_err_wsum,
    sum(h_clicks) AS clicks,
    sum(h_clicks_base) AS clicks_base,
    sum(h_conversions) AS conversions,
    sum(h_conversions_base) AS conversions_base,
    sum(h_revenue) AS revenue,
    sum(h_revenue_base) AS revenue_base,
    now64(3, 'UTC') AS rolled_at
FROM
(
    SELECT *
    FROM
    (
        SELECT window_start AS hour, model_id, model_version, segment,
               task AS h_task, minutes AS h_minutes, predictions AS h_predictions, labelled AS h_labelled,
               scored AS h_scored, calibrated AS h_calibrated, acc_base AS h_acc_base, acc_wsum AS h_acc_wsum,
               precision_base AS h_precision_base, precision_wsum AS h_precision_wsum,
               recall_base AS h_recall_base, recall_wsum AS h_recall_wsum, f1_base AS h_f1_base,
               f1_wsum AS h_f1_wsum, ece_base AS h_ece_base, ece_wsum AS h_ece_wsum,
               means_base AS h_means_base, prediction_wsum AS h_prediction_wsum,
               observed_wsum AS h_observed_wsum, err_base AS h_err_base, mae_wsum AS h_mae_wsum,
               sq_err_wsum AS h_sq_err_wsum, clicks AS h_clicks, clicks_base AS h_clicks_base,
               conversions AS h_conversions, conversions_base AS h_conversions_base, revenue AS h_revenue,
               revenue_base AS h_revenue_base, rolled_at
        FROM {db}.quality_metrics_hourly
        UNION ALL
        SELECT window_start AS hour, model_id, model_version, segment,
               task AS h_task, minutes AS h_minutes, predictions AS h_predictions, labelled AS h_labelled,
               scored AS h_scored, calibrated AS h_calibrated, acc_base AS h_acc_base, acc_wsum AS h_acc_wsum,
               precision_base AS h_precision_base, precision_wsum AS h_precision_wsum,
               recall_base AS h_recall_base, recall_wsum AS h_recall_wsum, f1_base AS h_f1_base,
               f1_wsum AS h_f1_wsum, ece_base AS h_ece_base, ece_wsum AS h_ece_wsum,
               means_base AS h_means_base, prediction_wsum AS h_prediction_wsum,
               observed_wsum AS h_observed_wsum, err_base AS h_err_base, mae_wsum AS h_mae_wsum,
               sq_err_wsum AS h_sq_err_wsum, clicks AS h_clicks, clicks_base AS h_clicks_base,
               conversions AS h_conversions, conversions_base AS h_conversions_base, revenue AS h_revenue,
               revenue_base AS h_revenue_base, rolled_at
        FROM {db}.quality_metrics_hourly_final
        WHERE window_start >= (SELECT toStartOfDay(min(window_start)) FROM {db}.quality_metrics_hourly)
          AND window_start < (SELECT toStartOfDay(max(window_start)) + INTERVAL 1 DAY FROM {db}.quality_metrics_hourly)
          AND (model_id, model_version, segment, toStartOfDay(window_start)) IN
              (SELECT model_id, model_version, segment, toStartOfDay(window_start) FROM {db}.quality_metrics_hourly)
    )
    ORDER BY rolled_at DESC
    LIMIT 1 BY model_id, model_version, segment, hour
)
GROUP BY window_start, model_id, model_version, segment;

CREATE VIEW IF NOT EXISTS {db}.quality_series_minute AS
SELECT window_start, model_id, model_version, segment, task, toUInt32(1) AS minutes, predictions, labelled,
       label_coverage, scored, accuracy, precision, recall, f1, ece, mean_prediction, mean_observed, mae, rmse, clicks,
       conversions, revenue, ctr, conversion_rate, revenue_per_request
FROM {db}.quality_metrics FINAL;

CREATE VIEW IF NOT EXISTS {db}.quality_series_hour AS
SELECT window_start, model_id, model_version, segment, task, minutes, predictions, labelled,
       if(predictions > 0, labelled / predictions, NULL) AS label_coverage,
       scored,
       if(acc_base > 0, acc_wsum / acc_base, NULL) AS accuracy,
       if(precision_base > 0, precision_wsum / precision_base, NULL) AS precision,
       if(recall_base > 0, recall_wsum / recall_base, NULL) AS recall,
       if(f1_base > 0, f1_wsum / f1_base, NULL) AS f1,
       if(ece_base > 0, ece_wsum / ece_base, NULL) AS ece,
       if(means_base > 0, prediction_wsum / means_base, NULL) AS mean_prediction,
       if(means_base > 0, observed_wsum / means_base, NULL) AS mean_observed,
       if(err_base > 0, mae_wsum / err_base, NULL) AS mae,
       if(err_base > 0, sqrt(sq_err_wsum / err_base), NULL) AS rmse,
       clicks, conversions, revenue,
       if(clicks_base > 0, clicks / clicks_base, NULL) AS ctr,
       if(conversions_base > 0, conversions / conversions_base, NULL) AS conversion_rate,
       if(revenue_base > 0, revenue / revenue_base, NULL) AS revenue_per_request
FROM {db}.quality_metrics_hourly FINAL;

CREATE VIEW IF NOT EXISTS {db}.quality_series_day AS
SELECT window_start, model_id, model_version, segment, task, minutes, predictions, labelled,
       if(predictions > 0, labelled / predictions, NULL) AS label_coverage,
       scored,
       if(acc_base > 0, acc_wsum / acc_base, NULL) AS accuracy,
       if(precision_base > 0, precision_wsum / precision_base, NULL) AS precision,
       if(recall_base > 0, recall_wsum / recall_base, NULL) AS recall,
       if(f1_base > 0, f1_wsum / f1_base, NULL) AS f1,
       if(ece_base > 0, ece_wsum / ece_base, NULL) AS ece,
       if(means_base > 0, prediction_wsum / means_base, NULL) AS mean_prediction,
       if(means_base > 0, observed_wsum / means_base, NULL) AS mean_observed,
       if(err_base > 0, mae_wsum / err_base, NULL) AS mae,
       if(err_base > 0, sqrt(sq_err_wsum / err_base), NULL) AS rmse,
       clicks, conversions, revenue,
       if(clicks_base > 0, clicks / clicks_base, NULL) AS ctr,
       if(conversions_base > 0, conversions / conversions_base, NULL) AS conversion_rate,
       if(revenue_base > 0, revenue / revenue_base, NULL) AS revenue_per_request
FROM {db}.quality_metrics_daily FINAL
