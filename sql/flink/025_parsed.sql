-- Validation and packing, once per event (see ParseEventFunction), and the lateness verdict.
CREATE TEMPORARY VIEW {stream}_parsed AS
SELECT r.kafka_topic, r.kafka_partition, r.kafka_offset, r.kafka_ts, r.event_ts, r.payload, p.*,
       mlv_is_late(p.event_ms, CURRENT_WATERMARK(r.event_ts)) AS late
FROM {stream}_raw AS r, LATERAL TABLE(mlv_parse(r.payload, '{stream}', r.kafka_ts)) AS p;
