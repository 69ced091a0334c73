package io.mlvigil.udf;

import java.time.Instant;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.types.Row;

/**
 * mlv_event_time(payload, stream, kafka_ts, catalog_key): the source's rowtime (and watermark)
 * column, in epoch ms: the event time of a valid event, exactly as mlv_parse validates it
 * (known model and version, valid fields, within the time bounds), else 0. So only valid events
 * move the watermark: the epoch can never advance it, and keeps a non-null rowtime for the
 * invalid rows, which go to the dead letters, never to a window.
 *
 * The verdict is the one mlv_parse gives the same record (ParseEventFunction.Parser, per
 * thread). The watermark generator gets no job parameters, so the catalog is named by key;
 * the source projection's instance, opened before the source, publishes it.
 */
public class EventTimeFunction extends ScalarFunction {
    private transient MonitorCatalog catalog;

    @Override
    public void open(FunctionContext context) {
        String encoded;
        try {
            encoded = context.getJobParameter(MonitorCatalog.PARAM, null);
        } catch (RuntimeException e) {
            // Flink 2.3 in a watermark generator: "Calls to FunctionContext.getJobParameter are
            // not available at the current location". The catalog is looked up by key instead.
            encoded = null;
        }
        if (encoded != null) {
            catalog = MonitorCatalog.fromEncoded(encoded);
        }
    }

    public long eval(byte[] payload, String stream, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant kafkaTs,
            String catalogKey) {
        if (catalog == null) {
            catalog = MonitorCatalog.byKey(catalogKey);
        }
        Row row = ParseEventFunction.Parser.forThread().parse(payload, stream, kafkaTs, catalog);
        return Boolean.TRUE.equals(row.getField(ParseEventFunction.OK))
                ? (Long) row.getField(ParseEventFunction.EVENT_MS) : 0L;
    }
}
