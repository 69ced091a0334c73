-- One raw Kafka source per stream. The value stays bytes so a malformed message cannot fail
-- the job; mlv_event_time reads just the event time for the watermark (0 when unusable, which
-- never advances it) and mlv_parse validates the whole event once.
CREATE TEMPORARY TABLE {stream}_raw (
    payload BYTES,
    kafka_topic STRING METADATA FROM 'topic' VIRTUAL,
    kafka_partition INT METADATA FROM 'partition' VIRTUAL,
    kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
    kafka_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
    event_ts AS TO_TIMESTAMP_LTZ(mlv_event_time(payload, kafka_ts, CAST({min_event_ms} AS BIGINT), CAST({max_future_ms} AS BIGINT)), 3),
    WATERMARK FOR event_ts AS event_ts - {out_of_orderness}
) WITH ({kafka_options});
