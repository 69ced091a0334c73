package io.mlvigil.udf;

import java.time.Instant;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * mlv_is_late(event_ms, CURRENT_WATERMARK(rowtime)): true when the event's tumbling window has
 * already fired, by the same rule as Flink's window operator (window end - 1 <= watermark).
 * Late events go to the dead-letter sinks instead of being dropped by the window.
 */
public class IsLateFunction extends ScalarFunction {
    private transient long windowMs;

    @Override
    public void open(FunctionContext context) {
        windowMs = MonitorCatalog.fromContext(context).windowMs;
    }

    public boolean eval(Long eventMs, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant watermark) {
        if (eventMs == null || watermark == null) {
            return false;
        }
        long windowEnd = Math.floorDiv(eventMs, windowMs) * windowMs + windowMs;
        return windowEnd - 1 <= watermark.toEpochMilli();
    }
}
