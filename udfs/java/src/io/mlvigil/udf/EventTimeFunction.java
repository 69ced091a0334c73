package io.mlvigil.udf;

import java.time.Instant;
import java.util.Arrays;

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
    // The watermark generator and the source's projection each evaluate the column for the same
    // record in the same thread; remembering the last answer saves the second read.
    // They are two instances of this class, so the memory is per thread, not per instance.
    private static final ThreadLocal<long[]> LAST_BOUNDS_AND_RESULT = ThreadLocal.withInitial(() -> new long[3]);
    private static final ThreadLocal<byte[][]> LAST_PAYLOAD = ThreadLocal.withInitial(() -> new byte[1][]);

    public long eval(byte[] payload, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant kafkaTs, long minMs, long maxFutureMs) {
        long maxMs = kafkaTs == null ? Long.MAX_VALUE : kafkaTs.toEpochMilli() + maxFutureMs;
        long[] last = LAST_BOUNDS_AND_RESULT.get();
        byte[][] lastPayload = LAST_PAYLOAD.get();
        if (lastPayload[0] != null && last[0] == minMs && last[1] == maxMs && Arrays.equals(payload, lastPayload[0])) {
            return last[2];
        }
        Long ms = EventDecoder.eventTimeOnly(payload, minMs, maxMs);
        lastPayload[0] = payload;
        last[0] = minMs;
        last[1] = maxMs;
        last[2] = ms == null ? 0L : ms;
        return last[2];
    }
}
