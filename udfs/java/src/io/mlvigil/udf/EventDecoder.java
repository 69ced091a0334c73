package io.mlvigil.udf;

import java.io.IOException;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeParseException;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParseException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamReadFeature;

/**
 * Validates one JSON event (feature, prediction or label) and pulls out its fields in a single
 * streaming pass. Every way an event can be wrong ends in a reason code and a human reason, so
 * the job can dead-letter it instead of failing or dropping it. The codes are documented in
 * schemas/README.md.
 *
 * Two readers feed the same field rules (Tokens): StrictJsonScanner, a byte scanner that reads
 * the common case (a strict, duplicate-free object) without Jackson's per-parser set-up, and
 * Jackson's streaming parser, which reads from the start whatever the scanner gives up on and so
 * decides every syntax error, duplicate key and limit exactly as before the scanner existed.
 * tests/unit/test_decoder_differential.py holds the two (and Python's json) to the same verdicts.
 */
public final class EventDecoder {
    /**
     * Larger magnitudes are absurd values: window statistics square them (Welford's M2, squared
     * errors), and a finite 1e300 would overflow to infinity there, which the finishing step
     * cannot turn into metrics. Found by the fuzz run (tests/integration/test_bad_input.py).
     */
    public static final double MAX_ABS_VALUE = 1e100;

    /** Marks a feature value that is JSON but neither number, string, boolean nor null. */
    static final Object NESTED = new Object();

    /**
     * Duplicate keys anywhere in an event are an error: Jackson would keep the last value, so an
     * event with two event_time keys would be read one way here and another way by any other
     * consumer (and once slipped a far-future time past the watermark).
     */
    private static final JsonFactory JSON = JsonFactory.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            // FastDoubleParser: correctly rounded like Double.parseDouble (the same doubles),
            // several times faster; number parsing was about 8 % of a feature event's cost.
            .enable(StreamReadFeature.USE_FAST_DOUBLE_PARSER)
            .build();

    /** The decoded event, or the reason it is invalid. Reused per call: not thread-safe. */
    public static final class Event {
        public String reasonCode;
        public String reason;
        public String requestId;
        public String modelId;
        public String modelVersion;
        public long eventMs;
        public Map<String, String> segments = new HashMap<>();
        /** Feature name -> Double, String, Boolean, null (JSON null) or NESTED. */
        public Map<String, Object> values = new HashMap<>();
        public boolean sawValues;
        public Double score;
        /** String, Double or Boolean: compared as category text (see ParseEventFunction). */
        public Object predictedLabel;
        public Double latencyMs;
        public String status;
        public String errorCode;
        public Double maxProbability;
        /** Labels: String, Double or Boolean (category text or numeric target); null when absent. */
        public Object label;
        public Boolean clicked;
        public Boolean converted;
        public Double revenue;

        void reset() {
            reasonCode = null;
            reason = null;
            requestId = null;
            modelId = null;
            modelVersion = null;
            eventMs = Long.MIN_VALUE;
            segments.clear();
            values.clear();
            sawValues = false;
            score = null;
            predictedLabel = null;
            latencyMs = null;
            status = null;
            errorCode = null;
            maxProbability = null;
            label = null;
            clicked = null;
            converted = null;
            revenue = null;
        }

        boolean fail(String code, String why) {
            if (reasonCode == null) {
                reasonCode = code;
                reason = why;
            }
            return false;
        }

        public boolean ok() {
            return reasonCode == null;
        }
    }

    public enum Stream {
        FEATURES("features"),
        PREDICTIONS("predictions"),
        /** Ground truth: request_id, model_id, event_time, label and optional outcomes. */
        LABELS(null);

        final String valuesField;

        Stream(String valuesField) {
            this.valuesField = valuesField;
        }
    }

    private final Event event = new Event();
    private final StrictJsonScanner scanner = new StrictJsonScanner();

    /** What the field readers need of a JSON parser: Jackson's, or the strict scanner (the same tokens). */
    interface Tokens {
        /** The next token, as JsonParser.nextToken; null at the end of the input. */
        JsonToken next() throws IOException;

        /** The current field name. */
        String name() throws IOException;

        /** A string's value, a number's text, or the token's text (as JsonParser.getText). */
        String text() throws IOException;

        double doubleValue() throws IOException;

        /** An integer outside long (Jackson's NumberType.BIG_INTEGER). */
        boolean isBigInteger() throws IOException;

        long longValue() throws IOException;

        void skipChildren() throws IOException;
    }

    private static final class JacksonTokens implements Tokens {
        private final JsonParser p;

        JacksonTokens(JsonParser p) {
            this.p = p;
        }

        @Override
        public JsonToken next() throws IOException {
            return p.nextToken();
        }

        @Override
        public String name() throws IOException {
            return p.currentName();
        }

        @Override
        public String text() throws IOException {
            return p.getText();
        }

        @Override
        public double doubleValue() throws IOException {
            return p.getDoubleValue();
        }

        @Override
        public boolean isBigInteger() throws IOException {
            return p.getNumberType() == JsonParser.NumberType.BIG_INTEGER;
        }

        @Override
        public long longValue() throws IOException {
            return p.getLongValue();
        }

        @Override
        public void skipChildren() throws IOException {
            p.skipChildren();
        }
    }

    /** ISO-8601 with an offset or Z; without one, UTC is assumed. Null when unparseable. */
    static Long parseIso(String s) {
        try {
            return OffsetDateTime.parse(s).toInstant().toEpochMilli();
        } catch (DateTimeParseException e) {
            try {
                return LocalDateTime.parse(s).toInstant(ZoneOffset.UTC).toEpochMilli();
            } catch (DateTimeParseException e2) {
                return null;
            } catch (ArithmeticException e2) {
                return Long.MAX_VALUE; // a valid date so far out that its epoch ms overflow: absurd
            }
        } catch (ArithmeticException e) {
            return Long.MAX_VALUE;
        }
    }

    /**
     * Decodes and validates. nowMs is the processing time of the verdict: it bounds the future
     * (with kafkaTs, the broker's receive time, when there is one) and the past (the minute
     * tables' retention, see MonitorCatalog.maxEventAgeMs).
     */
    public Event decode(byte[] payload, Stream stream, Instant kafkaTs, long nowMs, MonitorCatalog catalog) {
        return decode(payload, stream, kafkaTs, nowMs, catalog, false);
    }

    /**
     * jacksonOnly: without the strict scanner, as before it existed (the differential test's
     * reference: both must give the same verdict and values for any input).
     */
    public Event decode(byte[] payload, Stream stream, Instant kafkaTs, long nowMs, MonitorCatalog catalog,
            boolean jacksonOnly) {
        Event e = event;
        e.reset();
        if (payload == null) {
            e.fail("malformed_json", "empty message (null value)");
            return e;
        }
        if (payload.length > catalog.maxMessageBytes) {
            // Not parsed at all: its dead letter keeps a prefix, the length and a hash instead.
            e.fail("too_large", "message of " + payload.length + " bytes is larger than limits.max_message_bytes ("
                    + catalog.maxMessageBytes + ")");
            return e;
        }
        if (jacksonOnly) {
            readWithJackson(payload, e, stream, catalog.maxFeatures);
        } else {
            try {
                scanner.reset(payload);
                readDocument(scanner, e, stream, catalog.maxFeatures);
            } catch (IOException | RuntimeException giveUp) { // StrictJsonScanner.Bail, or anything unforeseen
                // Outside the strict scanner's subset (an error, a duplicate, a limit, a rare form):
                // Jackson reads it from the start and decides, as it did before the scanner existed.
                e.reset();
                readWithJackson(payload, e, stream, catalog.maxFeatures);
            }
        }
        if (!e.ok()) {
            return e;
        }
        checkRequired(e, stream, kafkaTs, nowMs, catalog);
        return e;
    }

    /** The document's syntax and fields: the object, then nothing but whitespace. */
    private static void readDocument(Tokens p, Event e, Stream stream, int maxFeatures) throws IOException {
        if (p.next() != JsonToken.START_OBJECT) {
            e.fail("not_an_object", "the event is not a JSON object");
            return;
        }
        readObject(p, e, stream, maxFeatures);
        if (p.next() != null) {
            e.fail("malformed_json", "trailing content after the JSON object");
        }
    }

    /** Jackson's parser over the document: any input, and the wording of its syntax errors. */
    private static void readWithJackson(byte[] payload, Event e, Stream stream, int maxFeatures) {
        try (JsonParser jp = JSON.createParser(payload)) {
            readDocument(new JacksonTokens(jp), e, stream, maxFeatures);
        } catch (JsonParseException ex) {
            e.reasonCode = null;
            String msg = firstLine(ex.getOriginalMessage());
            // Jackson's duplicate detection: "Duplicate field 'x'" (the wording varies by version).
            if (msg.startsWith("Duplicate")) {
                e.fail("duplicate_key", "a key appears twice in one object: " + clip(msg, 300));
            } else {
                e.fail("malformed_json", "malformed JSON: " + clip(msg, 300));
            }
        } catch (IOException | RuntimeException ex) {
            e.reasonCode = null;
            e.fail("malformed_json", "malformed JSON: " + clip(firstLine(ex.getMessage()), 300));
        }
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "unreadable";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    private static void readObject(Tokens p, Event e, Stream stream, int maxFeatures) throws IOException {
        while (p.next() == JsonToken.FIELD_NAME) {
            String name = p.name();
            JsonToken t = p.next();
            switch (name) {
                case "request_id":
                    e.requestId = idText(p, t, e, name);
                    break;
                case "model_id":
                    e.modelId = idText(p, t, e, name);
                    break;
                case "model_version":
                    e.modelVersion = idText(p, t, e, name);
                    break;
                case "event_time":
                    if (t == JsonToken.VALUE_NUMBER_INT && p.isBigInteger()) {
                        e.fail("absurd_timestamp", "event_time " + clip(p.text()) + " is outside the accepted range");
                    } else if (t == JsonToken.VALUE_NUMBER_INT) {
                        e.eventMs = p.longValue();
                    } else if (t == JsonToken.VALUE_STRING) {
                        Long ms = parseIso(p.text());
                        if (ms == null) {
                            e.fail("bad_timestamp", "event_time is not ISO-8601: " + clip(p.text()));
                        } else {
                            e.eventMs = ms;
                        }
                    } else if (t != JsonToken.VALUE_NULL) {
                        e.fail("wrong_type", "event_time must be epoch milliseconds or an ISO-8601 string");
                        p.skipChildren();
                    }
                    break;
                case "segments":
                    readSegments(p, t, e);
                    break;
                case "score":
                    e.score = number(p, t, e, name);
                    break;
                case "probabilities":
                    readProbabilities(p, t, e);
                    break;
                case "predicted_label":
                    if (t == JsonToken.VALUE_NUMBER_INT || t == JsonToken.VALUE_NUMBER_FLOAT) {
                        e.predictedLabel = p.doubleValue() + 0.0;
                    } else if (t == JsonToken.VALUE_TRUE || t == JsonToken.VALUE_FALSE) {
                        e.predictedLabel = t == JsonToken.VALUE_TRUE;
                    } else {
                        e.predictedLabel = scalarText(p, t, e, name);
                    }
                    break;
                case "latency_ms":
                    e.latencyMs = number(p, t, e, name);
                    break;
                case "status":
                    e.status = scalarText(p, t, e, name);
                    break;
                case "error_code":
                    e.errorCode = scalarText(p, t, e, name);
                    break;
                case "label":
                    if (stream != Stream.LABELS) {
                        p.skipChildren();
                    } else if (t == JsonToken.VALUE_NUMBER_INT || t == JsonToken.VALUE_NUMBER_FLOAT) {
                        e.label = number(p, t, e, name);
                    } else if (t == JsonToken.VALUE_TRUE || t == JsonToken.VALUE_FALSE) {
                        e.label = t == JsonToken.VALUE_TRUE;
                    } else {
                        e.label = scalarText(p, t, e, name);
                    }
                    break;
                case "outcomes":
                    if (stream == Stream.LABELS) {
                        readOutcomes(p, t, e);
                    } else {
                        p.skipChildren();
                    }
                    break;
                default:
                    if (name.equals(stream.valuesField)) {
                        readValues(p, t, e, name, maxFeatures);
                    } else {
                        p.skipChildren();
                    }
            }
        }
    }

    private static String clip(String s) {
        return clip(s, 64);
    }

    /** Reasons quote the input: bounded, so a dead letter's size depends on the limits only. */
    private static String clip(String s, int max) {
        return s.length() > max ? s.substring(0, max) + "..." : s;
    }

    private static String idText(Tokens p, JsonToken t, Event e, String name) throws IOException {
        if (t == JsonToken.VALUE_STRING) {
            String s = p.text();
            if (s.isEmpty()) {
                e.fail("missing_field", name + " is empty");
            }
            return s;
        }
        if (t == JsonToken.VALUE_NUMBER_INT) {
            return p.text();
        }
        if (t != JsonToken.VALUE_NULL) {
            e.fail("wrong_type", name + " must be a string");
            p.skipChildren();
        }
        return null;
    }

    private static Double number(Tokens p, JsonToken t, Event e, String name) throws IOException {
        if (t == JsonToken.VALUE_NUMBER_INT || t == JsonToken.VALUE_NUMBER_FLOAT) {
            double v = p.doubleValue();
            if (!(Math.abs(v) <= MAX_ABS_VALUE)) {
                e.fail("absurd_value", name + " is not a finite number of magnitude at most 1e100");
            }
            return v + 0.0;
        }
        if (t != JsonToken.VALUE_NULL) {
            e.fail("wrong_type", name + " must be a number");
            p.skipChildren();
        }
        return null;
    }

    /** Strings, numbers and booleans as their text; null stays null; containers are wrong. */
    private static String scalarText(Tokens p, JsonToken t, Event e, String name) throws IOException {
        switch (t) {
            case VALUE_STRING:
            case VALUE_NUMBER_INT:
            case VALUE_NUMBER_FLOAT:
            case VALUE_TRUE:
            case VALUE_FALSE:
                return p.text();
            case VALUE_NULL:
                return null;
            default:
                e.fail("wrong_type", name + " must be a string, number or boolean");
                p.skipChildren();
                return null;
        }
    }

    private static void readSegments(Tokens p, JsonToken t, Event e) throws IOException {
        if (t == JsonToken.VALUE_NULL) {
            return;
        }
        if (t != JsonToken.START_OBJECT) {
            e.fail("wrong_type", "segments must be an object of strings");
            p.skipChildren();
            return;
        }
        while (p.next() == JsonToken.FIELD_NAME) {
            String key = p.name();
            String v = scalarText(p, p.next(), e, "segments." + key);
            if (v != null) {
                e.segments.put(key, v);
            }
        }
    }

    private static void readValues(Tokens p, JsonToken t, Event e, String name, int maxFeatures)
            throws IOException {
        if (t == JsonToken.VALUE_NULL) {
            return;
        }
        if (t != JsonToken.START_OBJECT) {
            e.fail("wrong_type", name + " must be an object");
            p.skipChildren();
            return;
        }
        e.sawValues = true;
        int count = 0;
        while (p.next() == JsonToken.FIELD_NAME) {
            String key = p.name();
            JsonToken vt = p.next();
            if (++count > maxFeatures) {
                // Read on (a later syntax error or duplicate key still wins) but keep nothing more.
                e.fail("too_many_features", name + " has more than limits.max_features (" + maxFeatures + ") entries");
                p.skipChildren();
                continue;
            }
            switch (vt) {
                case VALUE_NUMBER_INT:
                case VALUE_NUMBER_FLOAT:
                    e.values.put(key, p.doubleValue() + 0.0);
                    break;
                case VALUE_STRING:
                    e.values.put(key, p.text());
                    break;
                case VALUE_TRUE:
                    e.values.put(key, Boolean.TRUE);
                    break;
                case VALUE_FALSE:
                    e.values.put(key, Boolean.FALSE);
                    break;
                case VALUE_NULL:
                    e.values.put(key, null);
                    break;
                default:
                    e.values.put(key, NESTED);
                    p.skipChildren();
            }
        }
    }

    /** outcomes: {clicked: bool, converted: bool, revenue: number}; other keys are ignored. */
    private static void readOutcomes(Tokens p, JsonToken t, Event e) throws IOException {
        if (t == JsonToken.VALUE_NULL) {
            return;
        }
        if (t != JsonToken.START_OBJECT) {
            e.fail("wrong_type", "outcomes must be an object");
            p.skipChildren();
            return;
        }
        while (p.next() == JsonToken.FIELD_NAME) {
            String key = p.name();
            JsonToken vt = p.next();
            switch (key) {
                case "clicked":
                    e.clicked = bool(p, vt, e, "outcomes.clicked");
                    break;
                case "converted":
                    e.converted = bool(p, vt, e, "outcomes.converted");
                    break;
                case "revenue":
                    e.revenue = number(p, vt, e, "outcomes.revenue");
                    break;
                default:
                    p.skipChildren();
            }
        }
    }

    private static Boolean bool(Tokens p, JsonToken t, Event e, String name) throws IOException {
        if (t == JsonToken.VALUE_TRUE || t == JsonToken.VALUE_FALSE) {
            return t == JsonToken.VALUE_TRUE;
        }
        if (t != JsonToken.VALUE_NULL) {
            e.fail("wrong_type", name + " must be a boolean");
            p.skipChildren();
        }
        return null;
    }

    private static void readProbabilities(Tokens p, JsonToken t, Event e) throws IOException {
        if (t == JsonToken.VALUE_NULL) {
            return;
        }
        if (t != JsonToken.START_OBJECT && t != JsonToken.START_ARRAY) {
            e.fail("wrong_type", "probabilities must be an object or an array of numbers");
            p.skipChildren();
            return;
        }
        JsonToken end = t == JsonToken.START_OBJECT ? JsonToken.END_OBJECT : JsonToken.END_ARRAY;
        double max = Double.NEGATIVE_INFINITY;
        JsonToken vt;
        while ((vt = p.next()) != end) {
            if (vt == JsonToken.FIELD_NAME) {
                continue;
            }
            if (vt != JsonToken.VALUE_NUMBER_INT && vt != JsonToken.VALUE_NUMBER_FLOAT) {
                e.fail("wrong_type", "probabilities must be numbers");
                p.skipChildren();
                continue;
            }
            double v = p.doubleValue();
            if (!(v >= 0.0 && v <= 1.0)) {
                e.fail("absurd_value", "a probability is outside [0, 1]");
            }
            max = Math.max(max, v);
        }
        if (max > Double.NEGATIVE_INFINITY) {
            e.maxProbability = max;
        }
    }

    private static void checkRequired(Event e, Stream stream, Instant kafkaTs, long nowMs, MonitorCatalog c) {
        if (e.requestId == null) {
            e.fail("missing_field", "request_id is missing");
        } else if (e.modelId == null) {
            e.fail("missing_field", "model_id is missing");
        } else if (e.modelVersion == null && stream != Stream.LABELS) {
            e.fail("missing_field", "model_version is missing");
        } else if (e.eventMs == Long.MIN_VALUE) {
            e.fail("missing_field", "event_time is missing");
        } else if (stream == Stream.FEATURES && !e.sawValues) {
            e.fail("missing_field", "features is missing");
        } else if (stream == Stream.LABELS && e.label == null) {
            e.fail("missing_field", "label is missing");
        }
        if (!e.ok()) {
            return;
        }
        if (e.eventMs < c.minEventMs || e.eventMs > maxEventMs(kafkaTs, nowMs, c)) {
            e.fail("absurd_timestamp", "event_time " + e.eventMs + " is before 2000 or more than limits.max_future ("
                    + c.maxFutureMs + " ms) after the processing time or the Kafka timestamp");
            return;
        }
        if (c.maxEventAgeMs > 0 && e.eventMs < nowMs - c.maxEventAgeMs) {
            e.fail("too_old", "event_time " + e.eventMs + " is more than " + c.maxEventAgeMs + " ms before the"
                    + " processing time: the minute tables' retention would delete its window at insert"
                    + " (limits.backfill keeps such events)");
            return;
        }
        if (e.latencyMs != null && (e.latencyMs < 0 || e.latencyMs > c.maxLatencyMs)) {
            e.fail("absurd_value", "latency_ms " + e.latencyMs + " is outside [0, " + c.maxLatencyMs + "]");
            return;
        }
        if (e.status != null && !"ok".equals(e.status) && !"error".equals(e.status)) {
            e.fail("wrong_type", "status must be \"ok\" or \"error\"");
            return;
        }
        MonitorCatalog.Model m = c.models.get(e.modelId);
        if (m == null) {
            e.fail("unknown_model", "model_id '" + clip(e.modelId) + "' is not monitored");
            return;
        }
        if (stream == Stream.LABELS) {
            // A label is joined to its prediction, whose version it takes: no profile needed.
            if (m.regression && !(e.label instanceof Double)) {
                e.fail("wrong_type", "label must be a number: model '" + clip(e.modelId) + "' is a regression");
            }
            return;
        }
        if (m.profileFor(e.modelVersion) == null) {
            e.fail("unknown_model", "no reference profile for model '" + e.modelId
                    + "' version '" + clip(e.modelVersion) + "'");
        }
    }

    /**
     * The latest accepted event time: maxFutureMs after the processing time, and after the
     * broker's timestamp when there is one (a producer may set that timestamp ahead too).
     */
    static long maxEventMs(Instant kafkaTs, long nowMs, MonitorCatalog c) {
        long bound = nowMs + c.maxFutureMs;
        return kafkaTs == null ? bound : Math.min(bound, kafkaTs.toEpochMilli() + c.maxFutureMs);
    }
}
