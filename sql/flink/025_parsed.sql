-- Validation and packing, once per event (see ParseEventFunction), and the lateness verdict.
-- payload is what dead letters keep: the message, or for a too_large one its bounded prefix.
CREATE TEMPORARY VIEW {stream}_parsed AS
SELECT r.kafka_topic, r.kafka_partition, r.kafka_offset, r.kafka_ts, r.event_ts,
       COALESCE(p.dl_payload, r.payload) AS payload,
       p.ok, p.reason_code, p.reason, p.request_id, p.model_id, p.model_version, p.event_ms, p.is_error,
       p.latency_ms, p.packed, p.score, p.predicted_label, p.label, p.label_value, p.clicked, p.converted,
       p.revenue,
       mlv_is_late(p.event_ms, CURRENT_WATERMARK(r.event_ts)) AS late
FROM {stream}_raw AS r, LATERAL TABLE(mlv_parse(r.payload, '{stream}', r.kafka_ts)) AS p;
