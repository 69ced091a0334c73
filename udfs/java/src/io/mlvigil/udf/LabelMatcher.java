package io.mlvigil.udf;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;

/**
 * What the label join keeps for one (model_id, request_id) and how it moves, without Flink: the
 * keyed operator (LabelJoin) holds it as one byte[] per key, and tests drive it directly.
 *
 * A label joins a prediction of the same key when label time is within [prediction time - skew,
 * prediction time + lateness]. The first label of a key to arrive wins (the caller checks the
 * "seen" flag, which outlives this state); it joins every kept prediction it is in range of and,
 * until the watermark passes label time + skew, every prediction that arrives later in range
 * (the interval join's rule: a label waits for predictions up to the skew after it). A first
 * label that joined nothing by then is an orphan. Predictions wait for their first label until
 * the watermark passes prediction time + lateness; once a first label came, no later label can
 * join them, so they are dropped.
 *
 * Compact on purpose: a prediction keeps only what its labelled row needs (event time, version,
 * packed segments, score, predicted label); a matched label keeps only its values, never its
 * payload; an unmatched one keeps what its dead letter needs.
 */
public final class LabelMatcher {
    /** No event-time timer registered. */
    public static final long NO_TIMER = Long.MIN_VALUE;

    private final long latenessMs;
    private final long skewMs;

    public LabelMatcher(long latenessMs, long skewMs) {
        this.latenessMs = latenessMs;
        this.skewMs = skewMs;
    }

    /** A valid, on-time prediction. */
    public static final class Prediction {
        public long eventMs;
        public String modelVersion;
        public byte[] packed;
        public Double score;
        public String predictedLabel;

        public Prediction() {}

        public Prediction(long eventMs, String modelVersion, byte[] packed, Double score, String predictedLabel) {
            this.eventMs = eventMs;
            this.modelVersion = modelVersion;
            this.packed = packed;
            this.score = score;
            this.predictedLabel = predictedLabel;
        }
    }

    /** A valid label; the Kafka coordinates and payload only matter for its dead letter. */
    public static final class Label {
        public long eventMs;
        public boolean matched;
        public String label;
        public Double labelValue;
        public Boolean clicked;
        public Boolean converted;
        public Double revenue;
        public String topic;
        public Integer partition;
        public Long offset;
        public LocalDateTime kafkaTime;
        public byte[] payload;

        public Label() {}
    }

    /** The state of one key: predictions waiting for a first label, or the first label. */
    public static final class Pending {
        public final List<Prediction> predictions = new ArrayList<>(1);
        public Label label;
        /** The event-time timer registered for this key (NO_TIMER: none). */
        public long timer = NO_TIMER;

        public boolean isEmpty() {
            return predictions.isEmpty() && label == null;
        }
    }

    /** Where joined rows and orphans go. */
    public interface Output {
        void labelled(Prediction prediction, Label label);

        void orphan(Label label);
    }

    /** Records the verdicts as text ("labelled P L", "orphan L": event times): for tests. */
    public static final class Recorder implements Output {
        public final List<String> events = new ArrayList<>();

        @Override
        public void labelled(Prediction prediction, Label label) {
            events.add("labelled " + prediction.eventMs + " " + label.eventMs);
        }

        @Override
        public void orphan(Label label) {
            events.add("orphan " + label.eventMs);
        }
    }

    public boolean inRange(Prediction p, Label l) {
        return l.eventMs >= p.eventMs - skewMs && l.eventMs <= p.eventMs + latenessMs;
    }

    /** A prediction arrives. Returns the key's new state (never null). */
    public Pending onPrediction(Pending s, Prediction p, Output out) {
        if (s == null) {
            s = new Pending();
        }
        if (s.label != null) {
            // The first label came already: it joins this prediction if in range, and no later
            // label ever will, so the prediction is not kept.
            if (inRange(p, s.label)) {
                out.labelled(p, s.label);
                matched(s.label);
            }
        } else {
            s.predictions.add(p);
        }
        return s;
    }

    /** The first label of the key arrives (the caller sent later ones to duplicate_label). */
    public Pending onFirstLabel(Pending s, Label l, Output out) {
        if (s == null) {
            s = new Pending();
        }
        for (Prediction p : s.predictions) {
            if (inRange(p, l)) {
                out.labelled(p, l);
                l.matched = true;
            }
        }
        s.predictions.clear();
        if (l.matched) {
            matched(l);
        }
        s.label = l;
        return s;
    }

    /**
     * The watermark reached `watermark`: drops what no future event can join (predictions older
     * than lateness, the label older than skew) and emits the label as an orphan if it joined
     * nothing. Returns null when nothing is left.
     */
    public Pending onWatermark(Pending s, long watermark, Output out) {
        if (s == null) {
            return null;
        }
        s.predictions.removeIf(p -> watermark > p.eventMs + latenessMs);
        if (s.label != null && watermark > s.label.eventMs + skewMs) {
            if (!s.label.matched) {
                out.orphan(s.label);
            }
            s.label = null;
        }
        return s.isEmpty() ? null : s;
    }

    /** When onWatermark has work for this state next (NO_TIMER: never). */
    public long nextTimer(Pending s) {
        if (s == null) {
            return NO_TIMER;
        }
        long next = Long.MAX_VALUE;
        for (Prediction p : s.predictions) {
            next = Math.min(next, p.eventMs + latenessMs + 1);
        }
        if (s.label != null) {
            next = Math.min(next, s.label.eventMs + skewMs + 1);
        }
        return next == Long.MAX_VALUE ? NO_TIMER : next;
    }

    /** A matched label keeps its values only: its dead letter can no longer happen. */
    private static void matched(Label l) {
        l.matched = true;
        l.topic = null;
        l.partition = null;
        l.offset = null;
        l.kafkaTime = null;
        l.payload = null;
    }

    // ---- encoding: one byte[] per key (heap backend: a compact object; RocksDB: no Kryo) ----
    //
    // flags, [label], prediction count, predictions, [timer]. Times and lengths are varints
    // (zigzag), a string or byte[] is its length + 1 (0: null) and its bytes, and the timer is
    // the difference to the expiry it usually is (first prediction + lateness + 1, or label +
    // skew + 1): one byte instead of eight. Per open prediction that is about 24 bytes (of ~90)
    // less than fixed-width fields, and decode/encode touch fewer bytes.

    private static final int HAS_LABEL = 1;
    private static final int MATCHED = 2;
    private static final int HAS_TIMER = 4;
    /** Set in every state this layout writes: a state of the older fixed-width layout is refused, not misread. */
    private static final int FORMAT = 0x40;

    // One operator instance runs on one thread: the buffers are reused from record to record.
    private final DataOutputSerializer out = new DataOutputSerializer(96);
    private final DataInputDeserializer in = new DataInputDeserializer();

    /** The key's state as bytes (not thread-safe: one matcher per operator instance). */
    public byte[] encode(Pending s) {
        out.clear();
        try {
            Label l = s.label;
            out.writeByte(FORMAT | (l != null ? HAS_LABEL : 0) | (l != null && l.matched ? MATCHED : 0)
                    | (s.timer != NO_TIMER ? HAS_TIMER : 0));
            if (l != null) {
                writeVarLong(out, zigzag(l.eventMs));
                writeString(out, l.label);
                writeDouble(out, l.labelValue);
                out.writeByte(tri(l.clicked) | tri(l.converted) << 2);
                writeDouble(out, l.revenue);
                if (!l.matched) {
                    writeString(out, l.topic);
                    writeVarLong(out, l.partition == null ? 0 : zigzag(l.partition) + 1);
                    out.writeBoolean(l.offset != null); // not "+ 1": zigzag(Long.MIN_VALUE) + 1 is 0
                    if (l.offset != null) {
                        writeVarLong(out, zigzag(l.offset));
                    }
                    out.writeBoolean(l.kafkaTime != null);
                    if (l.kafkaTime != null) {
                        writeVarLong(out, zigzag(l.kafkaTime.toEpochSecond(ZoneOffset.UTC)));
                        writeVarLong(out, l.kafkaTime.getNano());
                    }
                    writeBytes(out, l.payload);
                }
            }
            writeVarLong(out, s.predictions.size());
            for (Prediction p : s.predictions) {
                writeVarLong(out, zigzag(p.eventMs));
                writeString(out, p.modelVersion);
                writeBytes(out, p.packed);
                writeDouble(out, p.score);
                writeString(out, p.predictedLabel);
            }
            if (s.timer != NO_TIMER) {
                writeVarLong(out, zigzag(s.timer - usualTimer(s)));
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.getCopyOfBuffer();
    }

    /** The state encode wrote (null: none). */
    public Pending decode(byte[] bytes) {
        if (bytes == null) {
            return null;
        }
        in.setBuffer(bytes);
        Pending s = new Pending();
        try {
            int flags = in.readByte();
            if ((flags & FORMAT) == 0) {
                throw new IllegalStateException("label join state of an older layout (flags " + flags
                        + "): restore from a checkpoint of this version, or start without one");
            }
            if ((flags & HAS_LABEL) != 0) {
                Label l = new Label();
                l.matched = (flags & MATCHED) != 0;
                l.eventMs = unzigzag(readVarLong(in));
                l.label = readString(in, bytes);
                l.labelValue = readDouble(in);
                int bools = in.readByte();
                l.clicked = untri(bools & 3);
                l.converted = untri(bools >> 2 & 3);
                l.revenue = readDouble(in);
                if (!l.matched) {
                    l.topic = readString(in, bytes);
                    long partition = readVarLong(in);
                    l.partition = partition == 0 ? null : (int) unzigzag(partition - 1);
                    l.offset = in.readBoolean() ? unzigzag(readVarLong(in)) : null;
                    if (in.readBoolean()) {
                        long seconds = unzigzag(readVarLong(in));
                        l.kafkaTime = LocalDateTime.ofEpochSecond(seconds, (int) readVarLong(in), ZoneOffset.UTC);
                    }
                    l.payload = readBytes(in);
                }
                s.label = l;
            }
            long n = readVarLong(in);
            for (long i = 0; i < n; i++) {
                Prediction p = new Prediction();
                p.eventMs = unzigzag(readVarLong(in));
                p.modelVersion = readString(in, bytes);
                p.packed = readBytes(in);
                p.score = readDouble(in);
                p.predictedLabel = readString(in, bytes);
                s.predictions.add(p);
            }
            if ((flags & HAS_TIMER) != 0) {
                s.timer = unzigzag(readVarLong(in)) + usualTimer(s);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return s;
    }

    /** What the key's timer usually is (the base its encoding is relative to). */
    private long usualTimer(Pending s) {
        if (!s.predictions.isEmpty()) {
            return s.predictions.get(0).eventMs + latenessMs + 1;
        }
        return s.label != null ? s.label.eventMs + skewMs + 1 : 0;
    }

    private static long zigzag(long v) {
        return (v << 1) ^ (v >> 63);
    }

    private static long unzigzag(long v) {
        return (v >>> 1) ^ -(v & 1);
    }

    private static void writeVarLong(DataOutputSerializer out, long v) throws IOException {
        while ((v & ~0x7FL) != 0) {
            out.writeByte((int) (v & 0x7F) | 0x80);
            v >>>= 7;
        }
        out.writeByte((int) v);
    }

    private static long readVarLong(DataInputDeserializer in) throws IOException {
        long v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            int b = in.readByte();
            v |= (long) (b & 0x7F) << shift;
            if ((b & 0x80) == 0) {
                return v;
            }
        }
        throw new IOException("varint longer than 64 bits");
    }

    private static void writeString(DataOutputSerializer out, String v) throws IOException {
        // Length-prefixed UTF-8 (writeUTF stops at 64 KiB).
        writeBytes(out, v == null ? null : v.getBytes(StandardCharsets.UTF_8));
    }

    private static String readString(DataInputDeserializer in, byte[] bytes) throws IOException {
        int n = (int) readVarLong(in) - 1;
        if (n < 0) {
            return null;
        }
        String v = new String(bytes, in.getPosition(), n, StandardCharsets.UTF_8);
        in.skipBytesToRead(n);
        return v;
    }

    private static void writeDouble(DataOutputSerializer out, Double v) throws IOException {
        out.writeBoolean(v != null);
        if (v != null) {
            out.writeDouble(v);
        }
    }

    private static Double readDouble(DataInputDeserializer in) throws IOException {
        return in.readBoolean() ? in.readDouble() : null;
    }

    private static int tri(Boolean v) {
        return v == null ? 2 : v ? 1 : 0;
    }

    private static Boolean untri(int b) {
        return b == 2 ? null : b == 1;
    }

    private static void writeBytes(DataOutputSerializer out, byte[] v) throws IOException {
        writeVarLong(out, v == null ? 0 : v.length + 1L);
        if (v != null) {
            out.write(v);
        }
    }

    private static byte[] readBytes(DataInputDeserializer in) throws IOException {
        int n = (int) readVarLong(in) - 1;
        if (n < 0) {
            return null;
        }
        byte[] v = new byte[n];
        in.readFully(v);
        return v;
    }
}
