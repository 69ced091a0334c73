-- Model quality, part 2 (with labels enabled): everything the first planning stage emits, as
-- one table so the sources are still read once: job_outputs plus the quality inputs (kind
-- 'quality_input'). jobs/monitor.py turns it into a DataStream and plans 050_quality_windows.sql
-- over it with mini-batches on. They are off here: a mini-batch assigner in front of a
-- CURRENT_WATERMARK (mlv_is_late in 025_parsed.sql) would change the watermark it reads.
CREATE TEMPORARY VIEW job_stage AS
SELECT *, CAST(NULL AS BIGINT) AS q_window_ms, CAST(NULL AS BOOLEAN) AS q_labelled, CAST(NULL AS BYTES) AS q_packed,
       CAST(NULL AS DOUBLE) AS q_score, CAST(NULL AS STRING) AS q_predicted_label, CAST(NULL AS STRING) AS q_label,
       CAST(NULL AS DOUBLE) AS q_label_value, CAST(NULL AS BOOLEAN) AS q_clicked,
       CAST(NULL AS BOOLEAN) AS q_converted, CAST(NULL AS DOUBLE) AS q_revenue
FROM job_outputs
UNION ALL
SELECT 'quality_input', CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS TIMESTAMP(3)), model_id, model_version,
       CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS ARRAY<DOUBLE>), CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS INT), CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMP(3)),
       CAST(NULL AS BIGINT), CAST(NULL AS BYTES),
       window_ms, labelled, packed, score, predicted_label, label, label_value, clicked, converted, revenue
FROM quality_inputs;
