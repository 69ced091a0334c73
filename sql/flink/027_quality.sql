-- Model and business quality from late labels, part 1: the label stream, its join to the
-- predictions and its dead letters (loaded when labels.enabled, before 030_outputs.sql).
--
--   predictions_parsed (valid, on time) ─────────────────────────────┬─▶ quality_inputs: one row per
--                                                                    │   prediction and one per
--   labels_parsed ─▶ valid ─▶ numbered per (model, request) ─▶ RIGHT interval join ─┤   matched label
--                      │      in arrival order (seq)         (first label only)     │   (040, 050: GROUP BY)
--                      └─▶ invalid ─────────────────────────────────────────────────┴─▶ label dead letters:
--                                                               unmatched: seq > 1 duplicate_label,
--                                                                          else orphan_label
--
-- A first label joins its prediction (same model_id and request_id) when its event time is
-- within [prediction time - {skew}, prediction time + {lateness}] (L). The interval join keeps
-- each prediction until the watermark passes its time + L and each label until no prediction
-- can match it any more; a label that matched nothing then comes out with a null prediction.
-- Quality metrics belong to the prediction's window, model, version and segment.
--
-- Duplicate policy: the first label of a (model_id, request_id) to arrive wins (Kafka offset
-- order when labels are keyed by request_id, as they should be); later ones are dead letters of
-- kind duplicate_label, also when the first one was an orphan. The numbering keeps a counter per
-- (model, request) for the state TTL (labels.state_ttl, default L + 1 h).
--
-- Both readers of the join (quality_inputs and label_dead_letters) read the same columns: each
-- side travels as one ROW column (p, l), so the planner keeps one join, and one copy of its
-- state, instead of pruning a join of its own for each reader. (COALESCE below: a plain
-- "p IS NOT NULL" would let the planner turn the matched reader into an inner join of its own.)

CREATE TEMPORARY VIEW quality_predictions AS
SELECT request_id, model_id, model_version, event_ts, event_ms, packed, score, predicted_label
FROM predictions_parsed WHERE ok AND NOT late;

CREATE TEMPORARY VIEW labels_numbered AS
SELECT model_id, request_id, event_ts,
       COUNT(*) OVER (PARTITION BY model_id, request_id ORDER BY arrival
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS seq,
       CAST(ROW(kafka_topic, kafka_partition, kafka_offset, kafka_ts, event_ms, payload, label, label_value, clicked,
                converted, revenue)
            AS ROW<kafka_topic STRING, kafka_partition INT, kafka_offset BIGINT, kafka_ts TIMESTAMP_LTZ(3),
                   event_ms BIGINT, payload BYTES, label STRING, label_value DOUBLE, clicked BOOLEAN,
                   converted BOOLEAN, revenue DOUBLE>) AS l
FROM (SELECT *, PROCTIME() AS arrival FROM labels_parsed WHERE ok);

CREATE TEMPORARY VIEW labels_joined AS
SELECT l.model_id, l.seq, l.l, p.p
FROM (SELECT model_id, request_id, event_ts,
             CAST(ROW(model_version, event_ms, packed, score, predicted_label)
                  AS ROW<model_version STRING, event_ms BIGINT, packed BYTES, score DOUBLE, predicted_label STRING>) AS p
      FROM quality_predictions) AS p
RIGHT JOIN labels_numbered AS l
  ON p.model_id = l.model_id AND p.request_id = l.request_id AND l.seq = 1
 AND l.event_ts BETWEEN p.event_ts - {skew} AND p.event_ts + {lateness};

-- What mlv_quality_stats folds per (prediction window, model, version): each prediction once
-- (labelled = false: the denominator of label coverage) and each matched label once.
CREATE TEMPORARY VIEW quality_inputs AS
SELECT event_ms - MOD(event_ms, CAST({window_ms} AS BIGINT)) AS window_ms, model_id, model_version,
       FALSE AS labelled, packed, score, predicted_label, CAST(NULL AS STRING) AS label,
       CAST(NULL AS DOUBLE) AS label_value, CAST(NULL AS BOOLEAN) AS clicked,
       CAST(NULL AS BOOLEAN) AS converted, CAST(NULL AS DOUBLE) AS revenue
FROM quality_predictions
UNION ALL
SELECT j.p.event_ms - MOD(j.p.event_ms, CAST({window_ms} AS BIGINT)), j.model_id, j.p.model_version, TRUE,
       j.p.packed, j.p.score, j.p.predicted_label, j.l.label, j.l.label_value, j.l.clicked, j.l.converted,
       j.l.revenue
FROM labels_joined AS j WHERE COALESCE(j.p.event_ms, -1) >= 0;

CREATE TEMPORARY VIEW label_dead_letters AS
SELECT 'invalid' AS kind, reason_code, reason, kafka_topic, kafka_partition, kafka_offset, kafka_ts, event_ms,
       model_id, payload
FROM labels_parsed WHERE NOT ok
UNION ALL
SELECT CASE WHEN j.seq > 1 THEN 'duplicate_label' ELSE 'orphan_label' END,
       CASE WHEN j.seq > 1 THEN 'duplicate_label' ELSE 'orphan_label' END,
       CASE WHEN j.seq > 1 THEN 'a label for this model_id and request_id arrived before: the first label wins'
            ELSE 'no valid prediction with this model_id and request_id within the label lateness before the label (unknown request, or the label came too late)' END,
       j.l.kafka_topic, j.l.kafka_partition, j.l.kafka_offset, j.l.kafka_ts, j.l.event_ms, j.model_id, j.l.payload
FROM labels_joined AS j WHERE COALESCE(j.p.event_ms, -1) < 0;

-- The label dead letters in job_outputs' columns (030_outputs.sql appends them).
CREATE TEMPORARY VIEW quality_outputs AS
SELECT 'dead_letter' AS kind, CAST(NULL AS TIMESTAMP(3)) AS window_start, CAST(NULL AS TIMESTAMP(3)) AS window_end,
       model_id, CAST(NULL AS STRING) AS model_version, CAST(NULL AS BIGINT) AS events,
       CAST(NULL AS BIGINT) AS errors, CAST(NULL AS ARRAY<DOUBLE>) AS latency_percentiles,
       CAST(NULL AS STRING) AS stats, 'labels' AS dl_stream, kind AS dl_kind, reason_code, reason,
       kafka_topic AS topic, kafka_partition, kafka_offset, CAST(kafka_ts AS TIMESTAMP(3)) AS kafka_time,
       event_ms, payload
FROM label_dead_letters;
