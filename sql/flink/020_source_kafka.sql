-- One raw Kafka source per stream. The value stays bytes so a malformed message cannot fail
-- the job. The rowtime is the event time of a valid event only: mlv_event_time gives the same
-- verdict as mlv_parse (known model, valid fields, time bounds) and 0 for anything invalid, which
-- never advances the watermark; mlv_parse validates the whole event once (the two share it).
CREATE TEMPORARY TABLE {stream}_raw (
    payload BYTES,
    kafka_topic STRING METADATA FROM 'topic' VIRTUAL,
    kafka_partition INT METADATA FROM 'partition' VIRTUAL,
    kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
    kafka_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
    event_ts AS TO_TIMESTAMP_LTZ(mlv_event_time(payload, '{stream}', kafka_ts, '{catalog_key}'), 3),
    WATERMARK FOR event_ts AS event_ts - {out_of_orderness}
) WITH ({kafka_options});
