-- Model quality, part 2 (with labels enabled): everything the SQL emits, in two tables, so each
-- source is still read once: job_stage, the outputs of the predictions and labels streams, the
-- valid on-time predictions (kind 'quality_input', labelled = false) and the valid labels (kind
-- 'label'); job_outputs_features, the outputs of the features stream (job_outputs' columns).
-- jobs/monitor.py turns each into a DataStream and hands both to QualityWindows (Java,
-- udfs/java/.../QualityWindows.java): LabelJoin, keyed by model_id and q_request_id, adds the
-- labelled 'quality_input' rows and the duplicate and orphan dead letters; the 'quality_input'
-- rows are aggregated per (q_window_ms, model_id, model_version) into 'quality' rows; everything
-- else passes as job_outputs' columns. Apart because the join's timers follow the watermark of
-- its stream: the predictions' and labels' only, as an interval join's would, never held back by
-- a late or silent features stream.
CREATE TEMPORARY VIEW job_outputs_features AS
SELECT * FROM job_outputs WHERE kind = 'features' OR dl_stream = 'features';

CREATE TEMPORARY VIEW job_stage AS
SELECT *, CAST(NULL AS BIGINT) AS q_window_ms, CAST(NULL AS BOOLEAN) AS q_labelled, CAST(NULL AS BYTES) AS q_packed,
       CAST(NULL AS DOUBLE) AS q_score, CAST(NULL AS STRING) AS q_predicted_label, CAST(NULL AS STRING) AS q_label,
       CAST(NULL AS DOUBLE) AS q_label_value, CAST(NULL AS BOOLEAN) AS q_clicked,
       CAST(NULL AS BOOLEAN) AS q_converted, CAST(NULL AS DOUBLE) AS q_revenue, CAST(NULL AS STRING) AS q_request_id
FROM job_outputs
WHERE kind <> 'features' AND COALESCE(dl_stream, '') <> 'features'
UNION ALL
SELECT 'quality_input', CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS TIMESTAMP(3)), model_id, model_version,
       CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS ARRAY<DOUBLE>), CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS INT), CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMP(3)),
       event_ms, CAST(NULL AS BYTES),
       window_ms, FALSE, packed, score, predicted_label, CAST(NULL AS STRING), CAST(NULL AS DOUBLE),
       CAST(NULL AS BOOLEAN), CAST(NULL AS BOOLEAN), CAST(NULL AS DOUBLE), request_id
FROM quality_predictions
UNION ALL
SELECT 'label', CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS TIMESTAMP(3)), model_id, CAST(NULL AS STRING),
       CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS ARRAY<DOUBLE>), CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING),
       kafka_topic, kafka_partition, kafka_offset, CAST(kafka_ts AS TIMESTAMP(3)), event_ms, payload,
       CAST(NULL AS BIGINT), CAST(NULL AS BOOLEAN), CAST(NULL AS BYTES), CAST(NULL AS DOUBLE), CAST(NULL AS STRING),
       label, label_value, clicked, converted, revenue, request_id
FROM quality_labels;
