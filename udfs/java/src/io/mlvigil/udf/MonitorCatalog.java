package io.mlvigil.udf;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.zip.GZIPInputStream;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.table.functions.FunctionContext;

/**
 * The monitored models and their reference profiles, as compiled by the Python launcher
 * (mlvigil.catalog). It travels inside the job as a job parameter (base64 of gzipped JSON), so
 * a cluster's TaskManagers need no shared file. Parsed once per JVM and shared by all UDFs.
 */
public final class MonitorCatalog {
    public static final String PARAM = "mlvigil.catalog";

    public static final byte NUMERIC = 1;
    public static final byte CATEGORICAL = 2;

    /** One monitored column: a feature, or a pseudo-feature of the prediction (score, label). */
    public static final class Column {
        public final String name;
        public final byte type;
        /** Inner PSI bin edges, ascending, unique; bin i is [edges[i-1], edges[i]). */
        public final double[] edges;
        /** Unique reference quantile points for KS, ascending. */
        public final double[] ksPoints;
        public final double mean;
        public final double std;
        /** Categorical: known categories; anything else lands in the "other" bucket. */
        public final Map<String, Integer> categoryIndex;
        public final int categoryCount;

        Column(JsonNode n) {
            name = n.get("name").asText();
            type = "numeric".equals(n.get("type").asText()) ? NUMERIC : CATEGORICAL;
            if (type == NUMERIC) {
                edges = doubles(n.get("edges"));
                ksPoints = doubles(n.get("ks_points"));
                mean = n.get("mean").asDouble();
                std = n.get("std").asDouble();
                categoryIndex = null;
                categoryCount = 0;
            } else {
                edges = null;
                ksPoints = null;
                mean = 0;
                std = 0;
                categoryIndex = new HashMap<>();
                JsonNode cats = n.get("categories");
                for (int i = 0; i < cats.size(); i++) {
                    categoryIndex.put(cats.get(i).asText(), i);
                }
                categoryCount = cats.size();
            }
        }

        private static double[] doubles(JsonNode arr) {
            double[] out = new double[arr.size()];
            for (int i = 0; i < out.length; i++) {
                // +0.0 folds -0.0 into 0.0 so binary search treats them as equal, like Python's bisect.
                out[i] = arr.get(i).asDouble() + 0.0;
            }
            return out;
        }
    }

    /** The reference of one (model, version): the columns of each stream, in profile order. */
    public static final class Profile {
        public final int index;
        public final String model;
        public final String version;
        public final Column[] features;
        public final Map<String, Integer> featureIndex = new HashMap<>();
        public final Column[] prediction;
        public final Map<String, Integer> predictionIndex = new HashMap<>();

        Profile(int index, JsonNode n) {
            this.index = index;
            model = n.get("model").asText();
            version = n.get("version").asText();
            features = columns(n.get("features"), featureIndex);
            prediction = columns(n.get("prediction"), predictionIndex);
        }

        private static Column[] columns(JsonNode arr, Map<String, Integer> index) {
            if (arr == null) {
                return new Column[0];
            }
            Column[] out = new Column[arr.size()];
            for (int i = 0; i < out.length; i++) {
                out[i] = new Column(arr.get(i));
                index.put(out[i].name, i);
            }
            return out;
        }
    }

    /**
     * A monitored model: its segment dimensions, the profile of each version, and how its
     * labels are scored (model quality): a regression, or a classification that is binary when
     * a positive label is configured (else multi-class, macro-averaged).
     */
    public static final class Model {
        public final String id;
        public final String[] segments;
        public final Map<String, Profile> byVersion = new HashMap<>();
        public Profile fallback;
        public boolean regression;
        /** Category text of the positive class (binary classification), or null (multi-class). */
        public String positiveLabel;
        /** Binary: a prediction without predicted_label is positive when score >= threshold. */
        public double threshold;

        Model(String id, String[] segments) {
            this.id = id;
            this.segments = segments;
        }

        /** The version's own profile, else the model's default one ("*"), else null. */
        public Profile profileFor(String version) {
            Profile p = byVersion.get(version);
            return p != null ? p : fallback;
        }
    }

    public final List<Profile> profiles = new ArrayList<>();
    public final Map<String, Model> models = new HashMap<>();
    public final long windowMs;
    public final long minEventMs;
    public final long maxFutureMs;
    public final double maxLatencyMs;
    public final int maxSegmentValues;
    /** Larger messages are not parsed: dead letter too_large with a prefix, length and sha256. */
    public final int maxMessageBytes;
    /** More entries in an event's features object: dead letter too_many_features. */
    public final int maxFeatures;
    /**
     * Events older than this (against processing time) are dead letters too_old: the minute
     * tables' TTL would delete their windows at insert. 0 = no bound (limits.backfill).
     */
    public final long maxEventAgeMs;
    /** Bytes of a too_large message kept in its dead letter. */
    public final int deadLetterPrefixBytes;

    private static final Map<String, MonitorCatalog> CACHE = new ConcurrentHashMap<>();
    /** Catalogs by key (see key()), for functions that get no job parameters (watermarks). */
    private static final Map<String, MonitorCatalog> BY_KEY = new ConcurrentHashMap<>();

    private MonitorCatalog(JsonNode root) {
        // No defaults here: mlvigil.catalog.compile_catalog always sends every field (one definition
        // of each limit, in Python), and a catalog without one is a bug that must not run quietly.
        windowMs = required(root, "window_ms").asLong();
        minEventMs = required(root, "min_event_ms").asLong();
        maxFutureMs = required(root, "max_future_ms").asLong();
        maxLatencyMs = required(root, "max_latency_ms").asDouble();
        maxSegmentValues = required(root, "max_segment_values").asInt();
        maxMessageBytes = required(root, "max_message_bytes").asInt();
        maxFeatures = required(root, "max_features").asInt();
        maxEventAgeMs = required(root, "max_event_age_ms").asLong();
        deadLetterPrefixBytes = required(root, "dead_letter_prefix_bytes").asInt();
        JsonNode ps = root.get("profiles");
        for (int i = 0; i < ps.size(); i++) {
            profiles.add(new Profile(i, ps.get(i)));
        }
        JsonNode ms = root.get("models");
        ms.fieldNames().forEachRemaining(id -> {
            JsonNode m = ms.get(id);
            JsonNode segs = required(m, "segments");
            String[] segNames = new String[segs.size()];
            for (int i = 0; i < segNames.length; i++) {
                segNames[i] = segs.get(i).asText();
            }
            Model model = new Model(id, segNames);
            model.regression = "regression".equals(required(m, "task").asText());
            JsonNode pos = required(m, "positive_label");
            model.positiveLabel = pos.isNull() ? null : pos.asText();
            model.threshold = required(m, "threshold").asDouble();
            JsonNode versions = required(m, "versions");
            versions.fieldNames().forEachRemaining(v -> {
                Profile p = profiles.get(versions.get(v).asInt());
                if ("*".equals(v)) {
                    model.fallback = p;
                } else {
                    model.byVersion.put(v, p);
                }
            });
            models.put(id, model);
        });
    }

    /** The field, or a loud error: the catalog is compiled by mlvigil.catalog, never written by hand. */
    private static JsonNode required(JsonNode node, String field) {
        JsonNode v = node.get(field);
        if (v == null) {
            throw new IllegalStateException("the mlvigil catalog has no field " + field
                    + " (it is compiled by mlvigil.catalog.compile_catalog, which sends every field)");
        }
        return v;
    }

    public static MonitorCatalog fromContext(FunctionContext context) {
        String encoded = context.getJobParameter(PARAM, null);
        if (encoded == null) {
            throw new IllegalStateException("job parameter " + PARAM + " is not set");
        }
        return fromEncoded(encoded);
    }

    /** The job's catalog; also published under its key for the watermark generator. */
    public static MonitorCatalog fromEncoded(String encoded) {
        MonitorCatalog c = CACHE.computeIfAbsent(encoded, MonitorCatalog::decode);
        BY_KEY.putIfAbsent(key(encoded), c);
        return c;
    }

    /**
     * The catalog published under key by a function that could read the job parameter. A
     * watermark expression runs with a FunctionContext without job parameters (Flink's
     * WatermarkGeneratorCodeGeneratorFunctionContextWrapper), so it names the catalog by key.
     * The chain's other operators, which open before the source, have published it by then.
     */
    public static MonitorCatalog byKey(String key) {
        MonitorCatalog c = BY_KEY.get(key);
        if (c == null) {
            throw new IllegalStateException("no mlvigil catalog with key " + key + " in this JVM yet");
        }
        return c;
    }

    /** First 16 hex digits of the sha256 of the encoded catalog (mlvigil.catalog.catalog_key). */
    public static String key(String encoded) {
        return sha256Hex(encoded.getBytes(StandardCharsets.US_ASCII)).substring(0, 16);
    }

    public static String sha256Hex(byte[] bytes) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(bytes);
            StringBuilder sb = new StringBuilder(64);
            for (byte b : d) {
                sb.append(Character.forDigit((b >> 4) & 0xf, 16)).append(Character.forDigit(b & 0xf, 16));
            }
            return sb.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e); // every JVM has SHA-256
        }
    }

    private static MonitorCatalog decode(String encoded) {
        byte[] gz = Base64.getDecoder().decode(encoded.getBytes(StandardCharsets.US_ASCII));
        try (InputStream in = new GZIPInputStream(new ByteArrayInputStream(gz))) {
            return new MonitorCatalog(new ObjectMapper().readTree(in));
        } catch (IOException e) {
            throw new IllegalStateException("cannot read the mlvigil catalog", e);
        }
    }

    /** bisect_right over unique ascending edges: the PSI bin of v. */
    public static int binOf(double[] edges, double v) {
        int i = Arrays.binarySearch(edges, v);
        return i >= 0 ? i + 1 : -i - 1;
    }
}
