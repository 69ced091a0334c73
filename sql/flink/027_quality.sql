-- Model and business quality from late labels, part 1: the label stream and its invalid dead
-- letters (loaded when labels.enabled, before 030_outputs.sql).
--
--   predictions_parsed (valid, on time) ─▶ quality_predictions ─┐  040: job_stage rows   LabelJoin (Java, keyed by
--                                                               ├─▶ 'quality_input' and ─▶ model_id, request_id):
--   labels_parsed ─▶ valid ─▶ quality_labels ───────────────────┘   'label'                 predictions, labelled rows,
--                      └─▶ invalid ─▶ label_dead_letters (030: job_outputs)                 duplicate/orphan dead letters
--
-- The join itself is udfs/java/src/io/mlvigil/udf/LabelJoin.java (with LabelMatcher), on the
-- DataStream of 040's job_stage (jobs/monitor.py, QualityWindows.java): a first label joins its
-- prediction (same model_id and request_id) when its event time is within [prediction time -
-- {skew}, prediction time + {lateness}]; the first label of a (model_id, request_id) to arrive
-- wins (Kafka offset order when labels are keyed by request_id, as they should be); later ones
-- are dead letters of kind duplicate_label, also when the first one was an orphan, for as long
-- as the key's "label seen" flag lives (labels.state_ttl after its last label, default L + 1 h);
-- a first label that joined nothing is an orphan_label. Quality metrics belong to the
-- prediction's window, model, version and segment. One operator with one compact state and one
-- timer per key replaces an interval join, its per-label timers and a numbering OVER aggregate.

-- What QualityWindows folds (QualityStatsFunction) per (prediction window, model, version): each
-- prediction once (labelled = false: the denominator of label coverage); LabelJoin adds each
-- matched label.
CREATE TEMPORARY VIEW quality_predictions AS
SELECT request_id, model_id, model_version, event_ms,
       event_ms - MOD(event_ms, CAST({window_ms} AS BIGINT)) AS window_ms, packed, score, predicted_label
FROM predictions_parsed WHERE ok AND NOT late;

CREATE TEMPORARY VIEW quality_labels AS
SELECT model_id, request_id, kafka_topic, kafka_partition, kafka_offset, kafka_ts, event_ms, payload, label,
       label_value, clicked, converted, revenue
FROM labels_parsed WHERE ok;

CREATE TEMPORARY VIEW label_dead_letters AS
SELECT 'invalid' AS kind, reason_code, reason, kafka_topic, kafka_partition, kafka_offset, kafka_ts, event_ms,
       model_id, payload
FROM labels_parsed WHERE NOT ok;

-- The invalid label dead letters in job_outputs' columns (030_outputs.sql appends them; LabelJoin
-- emits the duplicate and orphan ones).
CREATE TEMPORARY VIEW quality_outputs AS
SELECT 'dead_letter' AS kind, CAST(NULL AS TIMESTAMP(3)) AS window_start, CAST(NULL AS TIMESTAMP(3)) AS window_end,
       model_id, CAST(NULL AS STRING) AS model_version, CAST(NULL AS BIGINT) AS events,
       CAST(NULL AS BIGINT) AS errors, CAST(NULL AS ARRAY<DOUBLE>) AS latency_percentiles,
       CAST(NULL AS STRING) AS stats, 'labels' AS dl_stream, kind AS dl_kind, reason_code, reason,
       kafka_topic AS topic, kafka_partition, kafka_offset, CAST(kafka_ts AS TIMESTAMP(3)) AS kafka_time,
       event_ms, payload
FROM label_dead_letters;
