-- Everything the job writes, as one union so the sources are read once. kind says what a row
-- is: a features window, a predictions window, or a dead letter (invalid or late event); with
-- labels enabled also 'quality' (model quality of a predictions window, re-emitted as labels
-- arrive: an updating stream) and label dead letters (jobs/monitor.py appends 027_quality.sql's
-- quality_outputs, or nothing).
CREATE TEMPORARY VIEW features_windows AS
SELECT window_start, window_end, model_id, model_version, COUNT(*) AS events,
       mlv_window_stats(packed) AS stats
FROM TABLE(TUMBLE(TABLE features_parsed, DESCRIPTOR(event_ts), {window}))
WHERE ok AND NOT late
GROUP BY window_start, window_end, model_id, model_version;

-- Latency percentiles are exact with linear interpolation (numpy's default), over the
-- requests that report latency_ms; errors are status "error" or any error_code.
CREATE TEMPORARY VIEW predictions_windows AS
SELECT window_start, window_end, model_id, model_version, COUNT(*) AS events,
       SUM(CASE WHEN is_error THEN 1 ELSE 0 END) AS errors,
       PERCENTILE(latency_ms, ARRAY[0.5, 0.95, 0.99]) AS latency_percentiles,
       mlv_window_stats(packed) AS stats
FROM TABLE(TUMBLE(TABLE predictions_parsed, DESCRIPTOR(event_ts), {window}))
WHERE ok AND NOT late
GROUP BY window_start, window_end, model_id, model_version;

CREATE TEMPORARY VIEW dead_letters AS
SELECT 'features' AS source_stream, * FROM (
    SELECT CASE WHEN ok THEN 'late' ELSE 'invalid' END AS kind,
           CASE WHEN ok THEN 'late' ELSE reason_code END AS reason_code,
           CASE WHEN ok THEN 'event time is behind the watermark: its window was already emitted'
                ELSE reason END AS reason,
           kafka_topic, kafka_partition, kafka_offset, CAST(kafka_ts AS TIMESTAMP(3)) AS kafka_time,
           event_ms, model_id, payload
    FROM features_parsed WHERE NOT ok OR late)
UNION ALL
SELECT 'predictions' AS source_stream, * FROM (
    SELECT CASE WHEN ok THEN 'late' ELSE 'invalid' END AS kind,
           CASE WHEN ok THEN 'late' ELSE reason_code END AS reason_code,
           CASE WHEN ok THEN 'event time is behind the watermark: its window was already emitted'
                ELSE reason END AS reason,
           kafka_topic, kafka_partition, kafka_offset, CAST(kafka_ts AS TIMESTAMP(3)) AS kafka_time,
           event_ms, model_id, payload
    FROM predictions_parsed WHERE NOT ok OR late);

CREATE TEMPORARY VIEW job_outputs AS
SELECT 'features' AS kind, window_start, window_end, model_id, model_version, events,
       CAST(NULL AS BIGINT) AS errors, CAST(NULL AS ARRAY<DOUBLE>) AS latency_percentiles, stats,
       CAST(NULL AS STRING) AS dl_stream, CAST(NULL AS STRING) AS dl_kind,
       CAST(NULL AS STRING) AS reason_code, CAST(NULL AS STRING) AS reason,
       CAST(NULL AS STRING) AS topic, CAST(NULL AS INT) AS kafka_partition,
       CAST(NULL AS BIGINT) AS kafka_offset, CAST(NULL AS TIMESTAMP(3)) AS kafka_time,
       CAST(NULL AS BIGINT) AS event_ms, CAST(NULL AS BYTES) AS payload
FROM features_windows
UNION ALL
SELECT 'predictions', window_start, window_end, model_id, model_version, events,
       CAST(errors AS BIGINT), latency_percentiles, stats,
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS INT), CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMP(3)),
       CAST(NULL AS BIGINT), CAST(NULL AS BYTES)
FROM predictions_windows
UNION ALL
SELECT 'dead_letter', CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS TIMESTAMP(3)), model_id,
       CAST(NULL AS STRING), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS ARRAY<DOUBLE>),
       CAST(NULL AS STRING), source_stream, kind, reason_code, reason, kafka_topic, kafka_partition,
       kafka_offset, kafka_time, event_ms, payload
FROM dead_letters
{quality_branch};
