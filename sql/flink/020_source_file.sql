-- A JSON-lines file as a stream (for benchmarks and backfills): one event per line, bounded.
-- There are no Kafka coordinates: dead letters carry the file path and no offset. The rowtime
-- comes from valid events only, as in 020_source_kafka.sql.
CREATE TEMPORARY TABLE {stream}_raw (
    payload BYTES,
    kafka_topic STRING METADATA FROM 'file.path' VIRTUAL,
    kafka_partition AS CAST(0 AS INT),
    kafka_offset AS CAST(NULL AS BIGINT),
    kafka_ts AS CAST(NULL AS TIMESTAMP_LTZ(3)),
    event_ts AS TO_TIMESTAMP_LTZ(mlv_event_time(payload, '{stream}', CAST(NULL AS TIMESTAMP_LTZ(3)), '{catalog_key}'), 3),
    WATERMARK FOR event_ts AS event_ts - {out_of_orderness}
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'raw');
