package io.mlvigil.udf;

import java.time.Instant;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * mlv_event_time(payload, kafka_ts, min_ms, max_future_ms): the event time for the source's
 * watermark column, in epoch ms. Unreadable or absurd times (before min_ms, or more than
 * max_future_ms after the broker's timestamp) give 0, which can never advance the watermark;
 * such events are dead-lettered downstream by mlv_parse, which applies the same bounds. The
 * bounds are arguments because a watermark expression cannot read job parameters.
 */
public class EventTimeFunction extends ScalarFunction {
    public long eval(byte[] payload, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant kafkaTs, long minMs, long maxFutureMs) {
        long maxMs = kafkaTs == null ? Long.MAX_VALUE : kafkaTs.toEpochMilli() + maxFutureMs;
        Long ms = EventDecoder.eventTimeOnly(payload, minMs, maxMs);
        return ms == null ? 0L : ms;
    }
}
