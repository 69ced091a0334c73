package io.mlvigil.udf;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.api.java.tuple.Tuple5;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.runtime.state.VoidNamespace;
import org.apache.flink.runtime.state.VoidNamespaceSerializer;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.InternalTimer;
import org.apache.flink.streaming.api.operators.InternalTimerService;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.operators.Triggerable;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.runtime.typeutils.ExternalTypeInfo;
import org.apache.flink.table.types.DataType;
import org.apache.flink.types.Row;
import org.apache.flink.util.OutputTag;

/**
 * The job's outputs with labels enabled (jobs/monitor.py): job_stage (040_quality_stage.sql)
 * through the label join (LabelJoin), the model-quality aggregation per (prediction window,
 * model, version), and the features stream's outputs, as one append stream in job_outputs'
 * columns (030_outputs.sql), of the features stream's type (ExternalTypeInfo&lt;Row&gt;, what the
 * Python operators read).
 *
 * <pre>
 *  job_stage ─┬─ not predictions/labels ─▶ project to job_outputs ───────────────────────────┐
 *             └─ LabelJoin ─▶ PreAggregate (chained: folds 'quality_input' rows) ─ dead letters ┤
 *                                  └─ partials ─▶ keyBy (window, model, version) ─▶ Windows ──┤ 'quality'
 *  features outputs (job_outputs of the features stream) ───────────────────────────────────┴─▶ union
 * </pre>
 *
 * The math is QualityStatsFunction's (accumulate in PreAggregate, merge in Windows, getValue for
 * the row), so one definition of it serves both. A window's 'quality' row is re-emitted as labels
 * arrive, at most once per EMIT_INTERVAL_MS (processing time), and at the end of a bounded input;
 * its `events` (rows folded in: predictions + labelled rows) only grows, and ClickHouse keeps the
 * row with the largest (ReplacingMergeTree version). A window's state lives labels.state_ttl
 * after its last update.
 */
public final class QualityWindows {
    /** At most one flush of partials and one emission of a window per this interval. */
    public static final long EMIT_INTERVAL_MS = 1000;
    /** PreAggregate flushes early when it holds this many (window, model, version) keys. */
    public static final int MAX_PARTIAL_KEYS = 4096;

    static final TypeInformation<Tuple5<Long, String, String, Long, byte[]>> PARTIAL_TYPE = Types.TUPLE(Types.LONG,
            Types.STRING, Types.STRING, Types.LONG, Types.PRIMITIVE_ARRAY(Types.BYTE));
    static final TypeInformation<Tuple3<Long, String, String>> KEY_TYPE = Types.TUPLE(Types.LONG, Types.STRING,
            Types.STRING);

    private QualityWindows() {}

    /** The job's outputs: see the class comment. stage: job_stage; features: the features stream's job_outputs. */
    public static DataStream<Row> apply(DataStream<Row> stage, DataStream<Row> features, long latenessMs, long skewMs,
            long windowMs, long stateTtlMs) {
        TypeInformation<Row> outType = features.getType();
        List<String> outNames = names(outType);
        List<String> stageNames = names(stage.getType());
        int[] projection = new int[outNames.size()];
        for (int i = 0; i < projection.length; i++) {
            projection[i] = stageNames.indexOf(outNames.get(i));
            if (projection[i] < 0) {
                throw new IllegalArgumentException("job_stage has no column " + outNames.get(i) + ": " + stageNames);
            }
        }
        LabelJoin.Columns c = new LabelJoin.Columns(stageNames);
        OutputTag<Row> passOn = new OutputTag<>("job outputs of the label join", outType);
        DataStream<Row> bypass = LabelJoin.bypass(stage).map(new Project(projection), outType)
                .name("job stage: not labels, as job_outputs");
        SingleOutputStreamOperator<Tuple5<Long, String, String, Long, byte[]>> partials = LabelJoin
                .apply(stage, latenessMs, skewMs, windowMs, stateTtlMs)
                .transform("quality pre-aggregation", PARTIAL_TYPE, new PreAggregate(c, projection, passOn))
                .uid("mlvigil-quality-pre-aggregation");
        DataStream<Row> quality = partials.keyBy(new PartialKey(), KEY_TYPE)
                .transform("quality windows (prediction window, model, version)", outType,
                        new Windows(outNames, windowMs, stateTtlMs))
                .uid("mlvigil-quality-windows");
        // One operator after the union: the Python operators reading the result then chain to it
        // (one task, one Python worker) instead of each reading the four streams itself.
        return bypass.union(partials.getSideOutput(passOn), quality, features).map(new Identity(), outType)
                .name("job outputs");
    }

    static final class Identity implements MapFunction<Row, Row> {
        @Override
        public Row map(Row r) {
            return r;
        }
    }

    private static List<String> names(TypeInformation<Row> type) {
        return DataType.getFieldNames(((ExternalTypeInfo<Row>) type).getDataType());
    }

    /** A job_stage row as job_outputs' columns. */
    static final class Project implements MapFunction<Row, Row> {
        private final int[] positions;

        Project(int[] positions) {
            this.positions = positions;
        }

        @Override
        public Row map(Row r) {
            return Row.project(r, positions);
        }
    }

    static final class PartialKey implements KeySelector<Tuple5<Long, String, String, Long, byte[]>, Tuple3<Long, String, String>> {
        @Override
        public Tuple3<Long, String, String> getKey(Tuple5<Long, String, String, Long, byte[]> p) {
            return Tuple3.of(p.f0, p.f1, p.f2);
        }
    }

    /**
     * QualityStatsFunction.Acc as bytes (the state and the wire format between the two operators):
     * plain fields in declaration order, maps as a count and entries, strings as length-prefixed
     * UTF-8. The segment order (the order of getValue's "segments") is kept.
     */
    public static final class AccCodec {
        private AccCodec() {}

        public static byte[] encode(QualityStatsFunction.Acc acc) {
            DataOutputSerializer out = new DataOutputSerializer(256);
            try {
                write(acc, out);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
            return out.getCopyOfBuffer();
        }

        public static QualityStatsFunction.Acc decode(byte[] bytes) {
            try {
                return read(new DataInputDeserializer(bytes));
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }

        static void write(QualityStatsFunction.Acc acc, DataOutputSerializer out) throws IOException {
            out.writeInt(acc.profile);
            out.writeLong(acc.rows);
            out.writeInt(acc.segs.size());
            for (Map.Entry<String, QualityStatsFunction.Seg> e : acc.segs.entrySet()) {
                writeString(e.getKey(), out);
                QualityStatsFunction.Seg s = e.getValue();
                out.writeLong(s.predictions);
                out.writeLong(s.labelled);
                out.writeLong(s.scored);
                out.writeLong(s.correct);
                out.writeLong(s.tp);
                out.writeLong(s.fp);
                out.writeLong(s.fn);
                out.writeLong(s.tn);
                out.writeInt(s.classes.size());
                for (Map.Entry<String, QualityStatsFunction.Cls> c : s.classes.entrySet()) {
                    writeString(c.getKey(), out);
                    out.writeLong(c.getValue().support);
                    out.writeLong(c.getValue().predicted);
                    out.writeLong(c.getValue().tp);
                }
                for (int i = 0; i < QualityStatsFunction.CAL_BINS; i++) {
                    out.writeLong(s.calN[i]);
                    out.writeDouble(s.calSum[i]);
                    out.writeLong(s.calPos[i]);
                }
                out.writeLong(s.regN);
                out.writeDouble(s.absErr);
                out.writeDouble(s.sqErr);
                out.writeDouble(s.sumPred);
                out.writeDouble(s.sumLabel);
                out.writeLong(s.clickedN);
                out.writeLong(s.clicked);
                out.writeLong(s.convertedN);
                out.writeLong(s.converted);
                out.writeLong(s.revenueN);
                out.writeDouble(s.revenue);
            }
            out.writeInt(acc.distinct.size());
            for (Map.Entry<String, Integer> e : acc.distinct.entrySet()) {
                writeString(e.getKey(), out);
                out.writeInt(e.getValue());
            }
        }

        static QualityStatsFunction.Acc read(DataInputDeserializer in) throws IOException {
            QualityStatsFunction.Acc acc = new QualityStatsFunction.Acc();
            acc.profile = in.readInt();
            acc.rows = in.readLong();
            int segs = in.readInt();
            acc.segs = new LinkedHashMap<>(2 * segs);
            for (int k = 0; k < segs; k++) {
                String key = readString(in);
                QualityStatsFunction.Seg s = new QualityStatsFunction.Seg();
                s.predictions = in.readLong();
                s.labelled = in.readLong();
                s.scored = in.readLong();
                s.correct = in.readLong();
                s.tp = in.readLong();
                s.fp = in.readLong();
                s.fn = in.readLong();
                s.tn = in.readLong();
                int classes = in.readInt();
                for (int j = 0; j < classes; j++) {
                    String name = readString(in);
                    QualityStatsFunction.Cls c = new QualityStatsFunction.Cls();
                    c.support = in.readLong();
                    c.predicted = in.readLong();
                    c.tp = in.readLong();
                    s.classes.put(name, c);
                }
                for (int i = 0; i < QualityStatsFunction.CAL_BINS; i++) {
                    s.calN[i] = in.readLong();
                    s.calSum[i] = in.readDouble();
                    s.calPos[i] = in.readLong();
                }
                s.regN = in.readLong();
                s.absErr = in.readDouble();
                s.sqErr = in.readDouble();
                s.sumPred = in.readDouble();
                s.sumLabel = in.readDouble();
                s.clickedN = in.readLong();
                s.clicked = in.readLong();
                s.convertedN = in.readLong();
                s.converted = in.readLong();
                s.revenueN = in.readLong();
                s.revenue = in.readDouble();
                acc.segs.put(key, s);
            }
            int distinct = in.readInt();
            for (int k = 0; k < distinct; k++) {
                String dim = readString(in);
                acc.distinct.put(dim, in.readInt());
            }
            if (in.available() != 0) {
                throw new IOException(in.available() + " trailing bytes after a quality accumulator");
            }
            return acc;
        }

        private static void writeString(String s, DataOutputSerializer out) throws IOException {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            out.writeInt(b.length);
            out.write(b);
        }

        private static String readString(DataInputDeserializer in) throws IOException {
            byte[] b = new byte[in.readInt()];
            in.readFully(b);
            return new String(b, StandardCharsets.UTF_8);
        }
    }

    /**
     * One window's state in Windows: the merged accumulator, `updates` (rows folded in, as
     * COUNT(*) of the rows: only grows) and whether it changed since its last emission (dirty).
     * The emission rule: the first merge into a clean window asks for a timer
     * (EMIT_INTERVAL_MS later); the timer, or the end of the input, emits it if dirty.
     */
    public static final class WindowState {
        public long updates;
        public boolean dirty;
        public QualityStatsFunction.Acc acc = new QualityStatsFunction.Acc();

        /** Folds a partial in; true when the window was clean, so an emission must be scheduled. */
        public boolean merge(QualityStatsFunction fn, long partialUpdates, QualityStatsFunction.Acc partial) {
            fn.merge(acc, Collections.singletonList(partial));
            updates += partialUpdates;
            boolean schedule = !dirty;
            dirty = true;
            return schedule;
        }

        /** True when the window must be emitted now (it changed since it was last); it is clean after. */
        public boolean takeEmission() {
            boolean emit = dirty;
            dirty = false;
            return emit;
        }

        public byte[] encode() {
            DataOutputSerializer out = new DataOutputSerializer(256);
            try {
                out.writeLong(updates);
                out.writeBoolean(dirty);
                AccCodec.write(acc, out);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
            return out.getCopyOfBuffer();
        }

        public static WindowState decode(byte[] bytes) {
            WindowState w = new WindowState();
            if (bytes == null) {
                return w;
            }
            try {
                DataInputDeserializer in = new DataInputDeserializer(bytes);
                w.updates = in.readLong();
                w.dirty = in.readBoolean();
                w.acc = AccCodec.read(in);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
            return w;
        }
    }

    /** Positions of the job_stage columns mlv_quality_stats reads (in its argument order). */
    private static int[] qualityArgs(LabelJoin.Columns c) {
        return new int[] {c.labelled, c.packed, c.score, c.predictedLabel, c.label, c.labelValue, c.clicked,
                c.converted, c.revenue};
    }

    /**
     * Chained right after the label join (forward, no state): folds each 'quality_input' row into
     * an in-memory accumulator per (window, model, version) and passes every other row on (side
     * output, as job_outputs' columns). Flushes its partials at most every EMIT_INTERVAL_MS, before
     * every checkpoint barrier (so a checkpoint never holds partials not yet emitted: restored,
     * nothing is lost or counted twice), at the end of the input, and when it holds
     * MAX_PARTIAL_KEYS keys. Watermarks pass through; the last one (the end of the input) after
     * the flush.
     */
    static final class PreAggregate extends AbstractStreamOperator<Tuple5<Long, String, String, Long, byte[]>>
            implements OneInputStreamOperator<Row, Tuple5<Long, String, String, Long, byte[]>>, BoundedOneInput {
        private final int kind, windowMs, modelId, modelVersion;
        private final int[] args;
        private final int[] projection;
        private final OutputTag<Row> passOn;
        private transient QualityStatsFunction fn;
        private transient Map<WindowKey, Partial> partials;
        private transient boolean flushScheduled;

        PreAggregate(LabelJoin.Columns c, int[] projection, OutputTag<Row> passOn) {
            kind = c.kind;
            windowMs = c.windowMs;
            modelId = c.modelId;
            modelVersion = c.modelVersion;
            args = qualityArgs(c);
            this.projection = projection;
            this.passOn = passOn;
        }

        @Override
        public void open() throws Exception {
            super.open();
            fn = new QualityStatsFunction();
            fn.open(new FunctionContext(getRuntimeContext()));
            partials = new HashMap<>();
        }

        @Override
        public void processElement(StreamRecord<Row> element) throws Exception {
            Row r = element.getValue();
            if (!LabelJoin.PREDICTION.equals(r.getField(kind))) { // a dead letter of the join
                output.collect(passOn, element.replace(Row.project(r, projection)));
                return;
            }
            WindowKey key = new WindowKey((Long) r.getField(windowMs), (String) r.getField(modelId),
                    (String) r.getField(modelVersion));
            Partial p = partials.get(key);
            if (p == null) {
                p = new Partial(fn.createAccumulator());
                partials.put(key, p);
                if (!flushScheduled) {
                    flushScheduled = true;
                    long now = getProcessingTimeService().getCurrentProcessingTime();
                    getProcessingTimeService().registerTimer(now + EMIT_INTERVAL_MS, t -> {
                        flushScheduled = false;
                        flush();
                    });
                }
            }
            p.updates++;
            fn.accumulate(p.acc, (Boolean) r.getField(args[0]), (byte[]) r.getField(args[1]),
                    (Double) r.getField(args[2]), (String) r.getField(args[3]), (String) r.getField(args[4]),
                    (Double) r.getField(args[5]), (Boolean) r.getField(args[6]), (Boolean) r.getField(args[7]),
                    (Double) r.getField(args[8]));
            if (partials.size() >= MAX_PARTIAL_KEYS) {
                flush();
            }
        }

        private void flush() {
            if (partials.isEmpty()) {
                return;
            }
            for (Map.Entry<WindowKey, Partial> e : partials.entrySet()) {
                WindowKey k = e.getKey();
                output.collect(new StreamRecord<>(Tuple5.of(k.windowMs, k.modelId, k.modelVersion,
                        e.getValue().updates, AccCodec.encode(e.getValue().acc))));
            }
            partials.clear();
        }

        @Override
        public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
            super.prepareSnapshotPreBarrier(checkpointId);
            flush();
        }

        @Override
        public void processWatermark(Watermark mark) throws Exception {
            if (mark.getTimestamp() == Long.MAX_VALUE) {
                flush(); // the end of the input: nothing may follow the last watermark downstream
            }
            super.processWatermark(mark);
        }

        @Override
        public void endInput() {
            flush();
        }

        @Override
        public void finish() throws Exception {
            flush();
            super.finish();
        }
    }

    private static final class Partial {
        final QualityStatsFunction.Acc acc;
        long updates;

        Partial(QualityStatsFunction.Acc acc) {
            this.acc = acc;
        }
    }

    private static final class WindowKey {
        final Long windowMs;
        final String modelId;
        final String modelVersion;

        WindowKey(Long windowMs, String modelId, String modelVersion) {
            this.windowMs = windowMs;
            this.modelId = modelId;
            this.modelVersion = modelVersion;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof WindowKey && Objects.equals(windowMs, ((WindowKey) o).windowMs)
                    && Objects.equals(modelId, ((WindowKey) o).modelId)
                    && Objects.equals(modelVersion, ((WindowKey) o).modelVersion);
        }

        @Override
        public int hashCode() {
            return Objects.hash(windowMs, modelId, modelVersion);
        }
    }

    /**
     * Keyed by (window, model, version): merges the partials into the window's WindowState (one
     * byte[] value with the state TTL) and emits its 'quality' row by WindowState's rule, with a
     * processing-time timer in Flink's timer service (checkpointed with the state, so a restored
     * dirty window is still emitted). At the end of the input (Flink does not fire pending
     * processing-time timers then) every dirty window is emitted, before the last watermark
     * (Long.MAX_VALUE) is passed on: the Python writer registers timers at watermark + 1.
     */
    static final class Windows extends AbstractStreamOperator<Row>
            implements OneInputStreamOperator<Tuple5<Long, String, String, Long, byte[]>, Row>,
            Triggerable<Tuple3<Long, String, String>, VoidNamespace>, BoundedOneInput {
        private final int arity, kind, windowStart, windowEnd, modelId, modelVersion, events, stats;
        private final long windowMs;
        private final long stateTtlMs;
        private transient QualityStatsFunction fn;
        private transient ValueStateDescriptor<byte[]> descriptor;
        private transient ValueState<byte[]> state;
        private transient InternalTimerService<VoidNamespace> timers;

        Windows(List<String> outNames, long windowMs, long stateTtlMs) {
            arity = outNames.size();
            kind = at(outNames, "kind");
            windowStart = at(outNames, "window_start");
            windowEnd = at(outNames, "window_end");
            modelId = at(outNames, "model_id");
            modelVersion = at(outNames, "model_version");
            events = at(outNames, "events");
            stats = at(outNames, "stats");
            this.windowMs = windowMs;
            this.stateTtlMs = stateTtlMs;
        }

        private static int at(List<String> names, String name) {
            return LabelJoin.Columns.column(names, name, "job_outputs");
        }

        @Override
        public void open() throws Exception {
            super.open();
            fn = new QualityStatsFunction();
            fn.open(new FunctionContext(getRuntimeContext()));
            descriptor = new ValueStateDescriptor<>("quality_window", BytePrimitiveArraySerializer.INSTANCE);
            // What table.exec.state.ttl gave the group aggregation this replaces.
            descriptor.enableTimeToLive(StateTtlConfig.newBuilder(Duration.ofMillis(stateTtlMs))
                    .updateTtlOnCreateAndWrite()
                    .neverReturnExpired()
                    .build());
            state = getRuntimeContext().getState(descriptor);
            timers = getInternalTimerService("quality-emit", VoidNamespaceSerializer.INSTANCE, this);
        }

        @Override
        public void processElement(StreamRecord<Tuple5<Long, String, String, Long, byte[]>> element) throws Exception {
            Tuple5<Long, String, String, Long, byte[]> p = element.getValue();
            WindowState w = WindowState.decode(state.value());
            if (w.merge(fn, p.f3, AccCodec.decode(p.f4))) {
                timers.registerProcessingTimeTimer(VoidNamespace.INSTANCE,
                        timers.currentProcessingTime() + EMIT_INTERVAL_MS);
            }
            state.update(w.encode());
        }

        @Override
        public void onProcessingTime(InternalTimer<Tuple3<Long, String, String>, VoidNamespace> timer)
                throws Exception {
            emitIfDirty();
        }

        @Override
        public void onEventTime(InternalTimer<Tuple3<Long, String, String>, VoidNamespace> timer) {}

        @Override
        public void processWatermark(Watermark mark) throws Exception {
            if (mark.getTimestamp() == Long.MAX_VALUE) {
                emitAllDirty(); // the end of the input: nothing may follow the last watermark downstream
            }
            super.processWatermark(mark);
        }

        @Override
        public void endInput() throws Exception {
            emitAllDirty(); // none left when the last watermark came first, as it does from a bounded source
        }

        private void emitAllDirty() throws Exception {
            List<Object> dirty = new ArrayList<>();
            getKeyedStateBackend().applyToAllKeys(VoidNamespace.INSTANCE, VoidNamespaceSerializer.INSTANCE,
                    descriptor, (key, s) -> {
                        byte[] bytes = s.value();
                        if (bytes != null && WindowState.decode(bytes).dirty) {
                            dirty.add(key);
                        }
                    });
            for (Object key : dirty) { // emitted outside the iteration: emitting writes the state
                setCurrentKey(key);
                emitIfDirty();
            }
        }

        @SuppressWarnings("unchecked")
        private void emitIfDirty() throws Exception {
            byte[] bytes = state.value();
            if (bytes == null) {
                return; // expired
            }
            WindowState w = WindowState.decode(bytes);
            if (!w.takeEmission()) {
                return;
            }
            Tuple3<Long, String, String> key = (Tuple3<Long, String, String>) getCurrentKey();
            Row q = new Row(arity);
            q.setField(kind, "quality");
            q.setField(windowStart, utc(key.f0));
            q.setField(windowEnd, utc(key.f0 + windowMs));
            q.setField(modelId, key.f1);
            q.setField(modelVersion, key.f2);
            q.setField(events, w.updates);
            q.setField(stats, fn.getValue(w.acc));
            output.collect(new StreamRecord<>(q));
            state.update(w.encode());
        }

        private static LocalDateTime utc(long ms) {
            return LocalDateTime.ofInstant(Instant.ofEpochMilli(ms), ZoneOffset.UTC);
        }
    }
}
