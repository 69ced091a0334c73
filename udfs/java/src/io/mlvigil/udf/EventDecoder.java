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
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;

/**
 * Validates one JSON event (feature, prediction or label) and pulls out its fields in a single
 * streaming pass. Every way an event can be wrong ends in a reason code and a human reason, so
 * the job can dead-letter it instead of failing or dropping it. The codes are documented in
 * schemas/README.md.
 */
public final class EventDecoder {
    /** Marks a feature value that is JSON but neither number, string, boolean nor null. */
    static final Object NESTED = new Object();

    private static final JsonFactory JSON = new JsonFactory();

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

    /** Reads only as far as event_time; returns epoch ms or null. For the watermark column. */
    public static Long eventTimeOnly(byte[] payload, long minMs, long maxMs) {
        if (payload == null) {
            return null;
        }
        try (JsonParser p = JSON.createParser(payload)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.getCurrentName();
                JsonToken t = p.nextToken();
                if ("event_time".equals(name)) {
                    Long ms = timeValue(p, t);
                    return ms != null && ms >= minMs && ms <= maxMs ? ms : null;
                }
                p.skipChildren();
            }
        } catch (IOException | RuntimeException e) {
            return null;
        }
        return null;
    }

    private static Long timeValue(JsonParser p, JsonToken t) throws IOException {
        if (t == JsonToken.VALUE_NUMBER_INT) {
            return p.getLongValue();
        }
        if (t == JsonToken.VALUE_STRING) {
            return parseIso(p.getText());
        }
        return null;
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
            }
        }
    }

    /**
     * Decodes and validates. kafkaTs bounds the future: an event may not claim to happen later
     * than maxFutureMs after the broker received it.
     */
    public Event decode(byte[] payload, Stream stream, Instant kafkaTs, MonitorCatalog catalog) {
        Event e = event;
        e.reset();
        if (payload == null) {
            e.fail("malformed_json", "empty message (null value)");
            return e;
        }
        try (JsonParser p = JSON.createParser(payload)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                e.fail("not_an_object", "the event is not a JSON object");
                return e;
            }
            readObject(p, e, stream);
            if (p.nextToken() != null) {
                e.fail("malformed_json", "trailing content after the JSON object");
            }
        } catch (IOException | RuntimeException ex) {
            e.reasonCode = null;
            e.fail("malformed_json", "malformed JSON: " + firstLine(ex.getMessage()));
            return e;
        }
        if (!e.ok()) {
            return e;
        }
        checkRequired(e, stream, kafkaTs, catalog);
        return e;
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "unreadable";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    private void readObject(JsonParser p, Event e, Stream stream) throws IOException {
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String name = p.getCurrentName();
            JsonToken t = p.nextToken();
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
                    if (t == JsonToken.VALUE_NUMBER_INT) {
                        e.eventMs = p.getLongValue();
                    } else if (t == JsonToken.VALUE_STRING) {
                        Long ms = parseIso(p.getText());
                        if (ms == null) {
                            e.fail("bad_timestamp", "event_time is not ISO-8601: " + clip(p.getText()));
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
                        e.predictedLabel = p.getDoubleValue() + 0.0;
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
                        readValues(p, t, e, name);
                    } else {
                        p.skipChildren();
                    }
            }
        }
    }

    private static String clip(String s) {
        return s.length() > 64 ? s.substring(0, 64) + "..." : s;
    }

    private static String idText(JsonParser p, JsonToken t, Event e, String name) throws IOException {
        if (t == JsonToken.VALUE_STRING) {
            String s = p.getText();
            if (s.isEmpty()) {
                e.fail("missing_field", name + " is empty");
            }
            return s;
        }
        if (t == JsonToken.VALUE_NUMBER_INT) {
            return p.getText();
        }
        if (t != JsonToken.VALUE_NULL) {
            e.fail("wrong_type", name + " must be a string");
            p.skipChildren();
        }
        return null;
    }

    private static Double number(JsonParser p, JsonToken t, Event e, String name) throws IOException {
        if (t == JsonToken.VALUE_NUMBER_INT || t == JsonToken.VALUE_NUMBER_FLOAT) {
            double v = p.getDoubleValue();
            if (!Double.isFinite(v)) {
                e.fail("absurd_value", name + " is not a finite number");
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
    private static String scalarText(JsonParser p, JsonToken t, Event e, String name) throws IOException {
        switch (t) {
            case VALUE_STRING:
            case VALUE_NUMBER_INT:
            case VALUE_NUMBER_FLOAT:
            case VALUE_TRUE:
            case VALUE_FALSE:
                return p.getText();
            case VALUE_NULL:
                return null;
            default:
                e.fail("wrong_type", name + " must be a string, number or boolean");
                p.skipChildren();
                return null;
        }
    }

    private static void readSegments(JsonParser p, JsonToken t, Event e) throws IOException {
        if (t == JsonToken.VALUE_NULL) {
            return;
        }
        if (t != JsonToken.START_OBJECT) {
            e.fail("wrong_type", "segments must be an object of strings");
            p.skipChildren();
            return;
        }
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String key = p.getCurrentName();
            String v = scalarText(p, p.nextToken(), e, "segments." + key);
            if (v != null) {
                e.segments.put(key, v);
            }
        }
    }

    private static void readValues(JsonParser p, JsonToken t, Event e, String name) throws IOException {
        if (t == JsonToken.VALUE_NULL) {
            return;
        }
        if (t != JsonToken.START_OBJECT) {
            e.fail("wrong_type", name + " must be an object");
            p.skipChildren();
            return;
        }
        e.sawValues = true;
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String key = p.getCurrentName();
            JsonToken vt = p.nextToken();
            switch (vt) {
                case VALUE_NUMBER_INT:
                case VALUE_NUMBER_FLOAT:
                    e.values.put(key, p.getDoubleValue() + 0.0);
                    break;
                case VALUE_STRING:
                    e.values.put(key, p.getText());
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
    private static void readOutcomes(JsonParser p, JsonToken t, Event e) throws IOException {
        if (t == JsonToken.VALUE_NULL) {
            return;
        }
        if (t != JsonToken.START_OBJECT) {
            e.fail("wrong_type", "outcomes must be an object");
            p.skipChildren();
            return;
        }
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String key = p.getCurrentName();
            JsonToken vt = p.nextToken();
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

    private static Boolean bool(JsonParser p, JsonToken t, Event e, String name) throws IOException {
        if (t == JsonToken.VALUE_TRUE || t == JsonToken.VALUE_FALSE) {
            return t == JsonToken.VALUE_TRUE;
        }
        if (t != JsonToken.VALUE_NULL) {
            e.fail("wrong_type", name + " must be a boolean");
            p.skipChildren();
        }
        return null;
    }

    private static void readProbabilities(JsonParser p, JsonToken t, Event e) throws IOException {
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
        while ((vt = p.nextToken()) != end) {
            if (vt == JsonToken.FIELD_NAME) {
                continue;
            }
            if (vt != JsonToken.VALUE_NUMBER_INT && vt != JsonToken.VALUE_NUMBER_FLOAT) {
                e.fail("wrong_type", "probabilities must be numbers");
                p.skipChildren();
                continue;
            }
            double v = p.getDoubleValue();
            if (!(v >= 0.0 && v <= 1.0)) {
                e.fail("absurd_value", "a probability is outside [0, 1]");
            }
            max = Math.max(max, v);
        }
        if (max > Double.NEGATIVE_INFINITY) {
            e.maxProbability = max;
        }
    }

    private static void checkRequired(Event e, Stream stream, Instant kafkaTs, MonitorCatalog c) {
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
        long maxMs = kafkaTs == null ? Long.MAX_VALUE : kafkaTs.toEpochMilli() + c.maxFutureMs;
        if (e.eventMs < c.minEventMs || e.eventMs > maxMs) {
            e.fail("absurd_timestamp", "event_time " + e.eventMs + " is outside the accepted range");
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

    /** Event time bounds for the watermark column: [minEventMs, kafkaTs + maxFutureMs]. */
    public static long maxEventMs(Instant kafkaTs, MonitorCatalog c) {
        return kafkaTs == null ? Long.MAX_VALUE : kafkaTs.toEpochMilli() + c.maxFutureMs;
    }
}
