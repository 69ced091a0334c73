package io.mlvigil.udf;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Arrays;
import java.util.Objects;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.TableFunction;
import org.apache.flink.types.Row;

/**
 * mlv_parse(payload, stream, kafka_ts): validates one raw Kafka record and emits exactly one row.
 * Valid rows carry the monitored columns packed for mlv_window_stats (see WindowStatsFunction);
 * invalid rows carry a reason code and text for the dead-letter sinks. One JSON pass per event.
 *
 * For model quality (mlv_quality_stats): valid predictions also carry score (score, else the
 * largest probability) and predicted_label as category text; valid labels (stream "labels")
 * carry label (category text), label_value (the label when it is a number), clicked, converted
 * and revenue, and no packed columns. The other columns of a row are null.
 *
 * dl_payload is what a dead letter keeps instead of the payload, or null (keep the payload):
 * for a too_large message, its first limits-bounded bytes (the reason gives its length and
 * sha256), so no dead letter carries an unbounded payload.
 */
@FunctionHint(
        output = @DataTypeHint(
                "ROW<ok BOOLEAN, reason_code STRING, reason STRING, request_id STRING, model_id STRING,"
                        + " model_version STRING, event_ms BIGINT, is_error BOOLEAN, latency_ms DOUBLE,"
                        + " packed BYTES, score DOUBLE, predicted_label STRING, label STRING,"
                        + " label_value DOUBLE, clicked BOOLEAN, converted BOOLEAN, revenue DOUBLE,"
                        + " dl_payload BYTES>"))
public class ParseEventFunction extends TableFunction<Row> {
    static final byte MISSING = 0;
    static final byte NUMBER = 1;
    static final byte CATEGORY = 2;
    /** Field positions in the output row. */
    public static final int OK = 0;
    public static final int REASON_CODE = 1;
    public static final int EVENT_MS = 6;
    public static final int DL_PAYLOAD = 17;

    private transient MonitorCatalog catalog;

    @Override
    public void open(FunctionContext context) {
        catalog = MonitorCatalog.fromContext(context);
    }

    public void eval(byte[] payload, String stream, @DataTypeHint("TIMESTAMP_LTZ(3)") Instant kafkaTs) {
        collect(Parser.forThread().parse(payload, stream, kafkaTs, catalog));
    }

    /**
     * The verdict for one record, remembered per thread. Several calls see each record, one right
     * after the other in the source's thread: the watermark generator and the source projection
     * (mlv_event_time), and one mlv_parse per reader of the parsed view (the planner cannot
     * reuse one correlate for the windows and the dead letters). They must agree: the verdict
     * depends on the processing time (too_old, the future bound), so the first call decides and
     * the others, with an equal record, get the same row. It also parses each record only once.
     */
    public static final class Parser {
        private static final ThreadLocal<Parser> PER_THREAD = ThreadLocal.withInitial(Parser::new);

        private final EventDecoder decoder = new EventDecoder();
        private ByteBuffer buf = ByteBuffer.allocate(1 << 16);
        private byte[] lastPayload;
        private String lastStream;
        private Instant lastKafkaTs;
        private MonitorCatalog lastCatalog;
        private Row lastRow;

        public static Parser forThread() {
            return PER_THREAD.get();
        }

        /** The row mlv_parse emits for this record, decided now or by the call just before. */
        public Row parse(byte[] payload, String stream, Instant kafkaTs, MonitorCatalog catalog) {
            if (lastRow != null && lastCatalog == catalog && Arrays.equals(lastPayload, payload)
                    && Objects.equals(lastStream, stream) && Objects.equals(lastKafkaTs, kafkaTs)) {
                return lastRow;
            }
            Row row = parseAt(payload, stream, kafkaTs, System.currentTimeMillis(), catalog);
            lastPayload = payload;
            lastStream = stream;
            lastKafkaTs = kafkaTs;
            lastCatalog = catalog;
            lastRow = row;
            return row;
        }

        /** The verdict at processing time nowMs, not remembered (tests call it directly). */
        public Row parseAt(byte[] payload, String stream, Instant kafkaTs, long nowMs, MonitorCatalog catalog) {
            return parseAt(payload, stream, kafkaTs, nowMs, catalog, false);
        }

        /** jacksonOnly: decoded as before the strict scanner (EventDecoder.decode), the differential test's reference. */
        public Row parseAt(byte[] payload, String stream, Instant kafkaTs, long nowMs, MonitorCatalog catalog,
                boolean jacksonOnly) {
            EventDecoder.Stream s = "predictions".equals(stream) ? EventDecoder.Stream.PREDICTIONS
                    : "labels".equals(stream) ? EventDecoder.Stream.LABELS : EventDecoder.Stream.FEATURES;
            EventDecoder.Event e = decoder.decode(payload, s, kafkaTs, nowMs, catalog, jacksonOnly);
            byte[] packed = null;
            if (e.ok() && s != EventDecoder.Stream.LABELS) {
                MonitorCatalog.Model m = catalog.models.get(e.modelId);
                packed = pack(e, m, m.profileFor(e.modelVersion), s);
            }
            if (!e.ok()) {
                String reason = e.reason;
                byte[] kept = null;
                if ("too_large".equals(e.reasonCode)) {
                    kept = Arrays.copyOf(payload, Math.min(payload.length, catalog.deadLetterPrefixBytes));
                    reason += "; sha256 " + MonitorCatalog.sha256Hex(payload) + "; the dead letter keeps its first "
                            + kept.length + " bytes";
                }
                return Row.of(false, e.reasonCode, reason, e.requestId, e.modelId, e.modelVersion,
                        e.eventMs == Long.MIN_VALUE ? null : e.eventMs, null, null, null,
                        null, null, null, null, null, null, null, kept);
            }
            if (s == EventDecoder.Stream.LABELS) {
                Double value = e.label instanceof Double ? (Double) e.label : null;
                return Row.of(true, null, null, e.requestId, e.modelId, e.modelVersion, e.eventMs, null, null,
                        null, null, null, categoryText(e.label), value, e.clicked, e.converted, e.revenue, null);
            }
            boolean isError = "error".equals(e.status) || e.errorCode != null;
            Double score = null;
            String predicted = null;
            if (s == EventDecoder.Stream.PREDICTIONS) {
                score = e.score != null ? e.score : e.maxProbability;
                predicted = e.predictedLabel == null ? null : categoryText(e.predictedLabel);
            }
            return Row.of(true, null, null, e.requestId, e.modelId, e.modelVersion, e.eventMs,
                    isError, e.latencyMs, packed, score, predicted, null, null, null, null, null, null);
        }

        /** Packs the profile's columns in profile order; fails the event on a type mismatch. */
        private byte[] pack(EventDecoder.Event e, MonitorCatalog.Model m, MonitorCatalog.Profile p,
                EventDecoder.Stream s) {
            MonitorCatalog.Column[] cols = s == EventDecoder.Stream.FEATURES ? p.features : p.prediction;
            int need = 16 + cols.length * 9;
            for (String dim : m.segments) {
                String v = e.segments.get(dim);
                need += 4 + (v == null ? 0 : v.length() * 3);
            }
            if (buf.capacity() < need) {
                buf = ByteBuffer.allocate(Integer.highestOneBit(need) << 1);
            }
            buf.clear();
            buf.putInt(p.index);
            buf.put((byte) (s == EventDecoder.Stream.FEATURES ? 0 : 1));
            buf.put((byte) m.segments.length);
            for (String dim : m.segments) {
                String v = e.segments.get(dim);
                if (v == null) {
                    buf.putInt(-1);
                } else {
                    byte[] b = v.getBytes(StandardCharsets.UTF_8);
                    buf.putInt(b.length);
                    buf.put(b);
                }
            }
            for (MonitorCatalog.Column c : cols) {
                Object v = valueOf(e, s, c.name);
                if (v == null) {
                    buf.put(MISSING);
                } else if (c.type == MonitorCatalog.NUMERIC) {
                    if (!(v instanceof Double)) {
                        e.fail("wrong_type", "'" + c.name + "' must be a number, got " + kind(v));
                        return null;
                    }
                    double d = (Double) v;
                    if (!(Math.abs(d) <= EventDecoder.MAX_ABS_VALUE)) {
                        e.fail("absurd_value", "'" + c.name + "' is not a finite number of magnitude at most 1e100");
                        return null;
                    }
                    buf.put(NUMBER);
                    buf.putDouble(d);
                } else {
                    String text = categoryText(v);
                    if (text == null) {
                        e.fail("wrong_type", "'" + c.name + "' must be a string, number or boolean, got " + kind(v));
                        return null;
                    }
                    Integer idx = c.categoryIndex.get(text);
                    buf.put(CATEGORY);
                    buf.putInt(idx == null ? -1 : idx);
                }
            }
            byte[] out = new byte[buf.position()];
            buf.flip();
            buf.get(out);
            return out;
        }
    }

    private static Object valueOf(EventDecoder.Event e, EventDecoder.Stream s, String name) {
        if (s == EventDecoder.Stream.FEATURES) {
            return e.values.get(name);
        }
        if ("score".equals(name)) {
            return e.score != null ? e.score : e.maxProbability;
        }
        if ("predicted_label".equals(name)) {
            return e.predictedLabel;
        }
        return null;
    }

    /**
     * Category text: strings as they are, booleans lower case, integral numbers below 1e15 without
     * ".0", any other number as numberText. mlvigil.categories.category_text is the Python side of
     * this definition; tests/category_text_cases.json holds the cases both are tested with.
     */
    public static String categoryText(Object v) {
        if (v instanceof String) {
            return (String) v;
        }
        if (v instanceof Boolean) {
            return v.toString();
        }
        if (v instanceof Double) {
            double d = (Double) v;
            if (d == Math.rint(d) && Math.abs(d) < 1e15) {
                return Long.toString((long) d);
            }
            return numberText(d);
        }
        return null;
    }

    /**
     * A double laid out as Double.toString does (plain for 1e-3 <= |d| < 1e7, else d.dddE-n), with
     * the fewest significant digits that read back as d, the closest to d among them (Python's
     * repr). Not Double.toString itself: JDK 17 sometimes prints a digit more (1e23 as
     * 9.999999999999999E22; JDK 19 changed the algorithm), so the text would depend on the JVM
     * and differ from the reference profile's categories, which Python computes.
     */
    static String numberText(double d) {
        if (Double.isNaN(d) || Double.isInfinite(d) || d == 0) {
            return Double.toString(d);
        }
        BigDecimal exact = new BigDecimal(d);
        BigDecimal best = null;
        // Any p-digit decimal that reads back as d lies between d and one of its two p-digit neighbours.
        for (int p = 1; best == null; p++) {
            BigDecimal down = exact.round(new MathContext(p, RoundingMode.FLOOR));
            BigDecimal up = exact.round(new MathContext(p, RoundingMode.CEILING));
            boolean downOk = down.doubleValue() == d;
            boolean upOk = up.doubleValue() == d;
            if (downOk && upOk) {
                best = exact.subtract(down).compareTo(up.subtract(exact)) <= 0 ? down : up;
            } else if (downOk) {
                best = down;
            } else if (upOk) {
                best = up;
            }
        }
        best = best.stripTrailingZeros();
        String digits = best.unscaledValue().abs().toString();
        int point = digits.length() - best.scale(); // d = 0.digits * 10^point
        String sign = d < 0 ? "-" : "";
        double a = Math.abs(d);
        if (a >= 1e-3 && a < 1e7) {
            if (point <= 0) {
                return sign + "0." + "0".repeat(-point) + digits;
            }
            if (point >= digits.length()) {
                return sign + digits + "0".repeat(point - digits.length()) + ".0";
            }
            return sign + digits.substring(0, point) + "." + digits.substring(point);
        }
        String rest = digits.length() > 1 ? digits.substring(1) : "0";
        return sign + digits.charAt(0) + "." + rest + "E" + (point - 1);
    }

    private static String kind(Object v) {
        if (v == EventDecoder.NESTED) {
            return "an object or array";
        }
        if (v instanceof String) {
            return "a string";
        }
        if (v instanceof Boolean) {
            return "a boolean";
        }
        return "a number";
    }
}
