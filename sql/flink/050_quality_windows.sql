-- Model quality, part 3: the second planning stage, over the DataStreams of
-- 040_quality_stage.sql (job_stage with its labels joined, and job_stage_features), planned with
-- mini-batches on.
CREATE TEMPORARY VIEW job_stage_stream AS
SELECT * FROM job_stage_joined
UNION ALL
SELECT * FROM job_stage_features_stream;

-- A regular (not windowed) aggregation per prediction window, model and version: it re-emits the window's statistics when labels for it
-- arrive, at most once per mini-batch (table.exec.mini-batch.allow-latency, 1 s), for as long
-- as its state lives (labels.state_ttl after its last update). `updates` (rows folded in) only
-- grows: ClickHouse keeps the row with the largest (ReplacingMergeTree version).
CREATE TEMPORARY VIEW quality_windows AS
SELECT q_window_ms AS window_ms, model_id, model_version, COUNT(*) AS updates,
       mlv_quality_stats(q_labelled, q_packed, q_score, q_predicted_label, q_label, q_label_value, q_clicked,
                         q_converted, q_revenue) AS stats
FROM job_stage_stream
WHERE kind = 'quality_input'
GROUP BY q_window_ms, model_id, model_version;

-- job_outputs plus the quality windows (kind 'quality', an updating stream: jobs/monitor.py
-- converts it with to_changelog_stream and FinishRows keeps only the new rows of updates).
CREATE TEMPORARY VIEW job_outputs_final AS
SELECT kind, window_start, window_end, model_id, model_version, events, errors, latency_percentiles, stats,
       dl_stream, dl_kind, reason_code, reason, topic, kafka_partition, kafka_offset, kafka_time, event_ms, payload
FROM job_stage_stream
WHERE kind <> 'quality_input'
UNION ALL
SELECT 'quality', CAST(TO_TIMESTAMP_LTZ(window_ms, 3) AS TIMESTAMP(3)),
       CAST(TO_TIMESTAMP_LTZ(window_ms + CAST({window_ms} AS BIGINT), 3) AS TIMESTAMP(3)), model_id, model_version,
       updates, CAST(NULL AS BIGINT), CAST(NULL AS ARRAY<DOUBLE>), stats, CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING),
       CAST(NULL AS INT), CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS BIGINT),
       CAST(NULL AS BYTES)
FROM quality_windows;
