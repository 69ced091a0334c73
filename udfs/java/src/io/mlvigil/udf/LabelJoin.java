package io.mlvigil.udf;

import java.time.Duration;
import java.util.List;

import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.table.runtime.typeutils.ExternalTypeInfo;
import org.apache.flink.table.types.DataType;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * The label join of model quality (sql/flink/027_quality.sql), as one keyed operator per
 * (model_id, request_id) on the DataStream of job_stage (QualityWindows aggregates its output).
 *
 * Input: job_stage rows (040_quality_stage.sql). kind 'quality_input' is a valid on-time
 * prediction (labelled = false): passed on as it is and kept compactly for its label; kind
 * 'label' is a valid label. Everything else passes by. Output, in job_stage's columns: the
 * predictions, one 'quality_input' row (labelled = true) per prediction a first label joins, and
 * a 'dead_letter' row (dl_stream 'labels') per duplicate_label or orphan_label. The rule (which
 * label joins which prediction, first to arrive wins) is LabelMatcher's.
 *
 * State per key: LabelMatcher.Pending as one byte[] (freed by one event-time timer per key, at
 * the next expiry), and a "label seen" flag with the state TTL (labels.state_ttl, processing
 * time after the key's last label, like the label numbering this operator replaces), so a label
 * after the first is a duplicate for as long as that flag lives.
 */
public final class LabelJoin {
    public static final String PREDICTION = "quality_input";
    public static final String LABEL = "label";
    static final String DUPLICATE_REASON = "a label for this model_id and request_id arrived before: the first label wins";
    static final String ORPHAN_REASON = "no valid prediction with this model_id and request_id within the label lateness "
            + "before the label (unknown request, or the label came too late)";

    private LabelJoin() {}

    /**
     * The label join over job_stage's predictions and labels: the predictions, the labelled rows
     * and the duplicate/orphan dead letters, in job_stage's type and columns. The rest of
     * job_stage is bypass(stage).
     */
    public static SingleOutputStreamOperator<Row> apply(DataStream<Row> stage, long latenessMs, long skewMs,
            long windowMs, long seenTtlMs) {
        TypeInformation<Row> type = stage.getType();
        Columns c = new Columns(DataType.getFieldNames(((ExternalTypeInfo<Row>) type).getDataType()));
        return stage.filter(new KindFilter(c.kind, true)).name("job stage: predictions and labels")
                .keyBy(new RequestKey(c), Types.STRING)
                .process(new Function(c, latenessMs, skewMs, windowMs, seenTtlMs), type)
                .name("label join (first label per model_id, request_id)")
                .uid("mlvigil-label-join");
    }

    /** The job_stage rows the join does not read (neither a prediction nor a label). */
    public static DataStream<Row> bypass(DataStream<Row> stage) {
        Columns c = new Columns(DataType.getFieldNames(((ExternalTypeInfo<Row>) stage.getType()).getDataType()));
        return stage.filter(new KindFilter(c.kind, false)).name("job stage: not labels");
    }

    /** Positions of the job_stage columns the join reads and writes. */
    static final class Columns implements java.io.Serializable {
        final int arity, kind, modelId, modelVersion, dlStream, dlKind, reasonCode, reason, topic, partition, offset,
                kafkaTime, eventMs, payload, requestId, windowMs, labelled, packed, score, predictedLabel, label,
                labelValue, clicked, converted, revenue;

        Columns(List<String> names) {
            arity = names.size();
            kind = at(names, "kind");
            modelId = at(names, "model_id");
            modelVersion = at(names, "model_version");
            dlStream = at(names, "dl_stream");
            dlKind = at(names, "dl_kind");
            reasonCode = at(names, "reason_code");
            reason = at(names, "reason");
            topic = at(names, "topic");
            partition = at(names, "kafka_partition");
            offset = at(names, "kafka_offset");
            kafkaTime = at(names, "kafka_time");
            eventMs = at(names, "event_ms");
            payload = at(names, "payload");
            requestId = at(names, "q_request_id");
            windowMs = at(names, "q_window_ms");
            labelled = at(names, "q_labelled");
            packed = at(names, "q_packed");
            score = at(names, "q_score");
            predictedLabel = at(names, "q_predicted_label");
            label = at(names, "q_label");
            labelValue = at(names, "q_label_value");
            clicked = at(names, "q_clicked");
            converted = at(names, "q_converted");
            revenue = at(names, "q_revenue");
        }

        private static int at(List<String> names, String name) {
            return column(names, name, "job_stage");
        }

        /** The position of a named column, failing loudly when the table lacks it. */
        static int column(List<String> names, String name, String table) {
            int i = names.indexOf(name);
            if (i < 0) {
                throw new IllegalArgumentException(table + " has no column " + name + ": " + names);
            }
            return i;
        }
    }

    static final class KindFilter implements FilterFunction<Row> {
        private final int kind;
        private final boolean join;

        KindFilter(int kind, boolean join) {
            this.kind = kind;
            this.join = join;
        }

        @Override
        public boolean filter(Row r) {
            Object k = r.getField(kind);
            return (PREDICTION.equals(k) || LABEL.equals(k)) == join;
        }
    }

    static final class RequestKey implements KeySelector<Row, String> {
        private final int modelId;
        private final int requestId;

        RequestKey(Columns c) {
            modelId = c.modelId;
            requestId = c.requestId;
        }

        @Override
        public String getKey(Row r) {
            // The parser guarantees both for valid events; '\0' cannot occur in either.
            return r.getField(modelId) + "\u0000" + r.getField(requestId);
        }
    }

    static final class Function extends KeyedProcessFunction<String, Row, Row> {
        private final Columns c;
        private final long latenessMs;
        private final long skewMs;
        private final long windowMs;
        private final long seenTtlMs;
        private transient LabelMatcher matcher;
        private transient ValueState<byte[]> pending;
        private transient ValueState<Boolean> seen;

        Function(Columns c, long latenessMs, long skewMs, long windowMs, long seenTtlMs) {
            this.c = c;
            this.latenessMs = latenessMs;
            this.skewMs = skewMs;
            this.windowMs = windowMs;
            this.seenTtlMs = seenTtlMs;
        }

        @Override
        public void open(OpenContext context) {
            matcher = new LabelMatcher(latenessMs, skewMs);
            pending = getRuntimeContext().getState(new ValueStateDescriptor<>("pending", BytePrimitiveArraySerializer.INSTANCE));
            ValueStateDescriptor<Boolean> seenDescriptor = new ValueStateDescriptor<>("label_seen", Types.BOOLEAN);
            seenDescriptor.enableTimeToLive(StateTtlConfig.newBuilder(Duration.ofMillis(seenTtlMs))
                    .updateTtlOnCreateAndWrite()
                    .neverReturnExpired()
                    // The sweep that frees expired flags looks at 2 entries per access, not 5 (it
                    // was 7 % of this operator's CPU). A label reads and writes the flag and
                    // adds at most one, so the sweep passes every entry at 4 per new one: the
                    // flags waiting for it stay a bounded share (under 1/4, ~1/8 on average
                    // instead of ~1/20) and nothing grows without bound.
                    .cleanupIncrementally(2, false)
                    .build());
            seen = getRuntimeContext().getState(seenDescriptor);
        }

        @Override
        public void processElement(Row r, Context ctx, Collector<Row> out) throws Exception {
            String modelId = (String) r.getField(c.modelId);
            boolean isPrediction = PREDICTION.equals(r.getField(c.kind));
            if (!isPrediction && seen.value() != null) {
                seen.update(Boolean.TRUE);
                out.collect(deadLetter(modelId, "duplicate_label", DUPLICATE_REASON, r.getField(c.topic),
                        r.getField(c.partition), r.getField(c.offset), r.getField(c.kafkaTime), r.getField(c.eventMs),
                        r.getField(c.payload)));
                return; // a duplicate needs none of the key's pending state: not decoded
            }
            Emit emit = new Emit(modelId, out);
            LabelMatcher.Pending s = matcher.decode(pending.value());
            if (isPrediction) {
                LabelMatcher.Prediction p = prediction(r);
                out.collect(r); // counted once as a prediction (labelled = false)
                s = matcher.onPrediction(s, p, emit);
            } else {
                seen.update(Boolean.TRUE);
                s = matcher.onFirstLabel(s, label(r), emit);
            }
            store(s, ctx.timerService());
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
            LabelMatcher.Pending s = matcher.decode(pending.value());
            if (s == null || s.timer != timestamp) {
                return;
            }
            s.timer = LabelMatcher.NO_TIMER; // fired
            s = matcher.onWatermark(s, ctx.timerService().currentWatermark(), new Emit(null, out, ctx.getCurrentKey()));
            store(s, ctx.timerService());
        }

        /** Writes the key's state back and keeps exactly one timer, at its next expiry. */
        private void store(LabelMatcher.Pending s, org.apache.flink.streaming.api.TimerService timers)
                throws Exception {
            long next = matcher.nextTimer(s);
            if (s == null || next == LabelMatcher.NO_TIMER) {
                if (s != null && s.timer != LabelMatcher.NO_TIMER) {
                    timers.deleteEventTimeTimer(s.timer);
                }
                pending.clear();
                return;
            }
            if (next != s.timer) {
                if (s.timer != LabelMatcher.NO_TIMER) {
                    timers.deleteEventTimeTimer(s.timer);
                }
                timers.registerEventTimeTimer(next);
                s.timer = next;
            }
            pending.update(matcher.encode(s));
        }

        private LabelMatcher.Prediction prediction(Row r) {
            return new LabelMatcher.Prediction((Long) r.getField(c.eventMs), (String) r.getField(c.modelVersion),
                    (byte[]) r.getField(c.packed), (Double) r.getField(c.score), (String) r.getField(c.predictedLabel));
        }

        private LabelMatcher.Label label(Row r) {
            LabelMatcher.Label l = new LabelMatcher.Label();
            l.eventMs = (Long) r.getField(c.eventMs);
            l.label = (String) r.getField(c.label);
            l.labelValue = (Double) r.getField(c.labelValue);
            l.clicked = (Boolean) r.getField(c.clicked);
            l.converted = (Boolean) r.getField(c.converted);
            l.revenue = (Double) r.getField(c.revenue);
            l.topic = (String) r.getField(c.topic);
            l.partition = (Integer) r.getField(c.partition);
            l.offset = (Long) r.getField(c.offset);
            l.kafkaTime = (java.time.LocalDateTime) r.getField(c.kafkaTime);
            l.payload = (byte[]) r.getField(c.payload);
            return l;
        }

        private Row deadLetter(String modelId, String kind, String reason, Object topic, Object partition,
                Object offset, Object kafkaTime, Object eventMs, Object payload) {
            Row d = new Row(c.arity);
            d.setField(c.kind, "dead_letter");
            d.setField(c.modelId, modelId);
            d.setField(c.dlStream, "labels");
            d.setField(c.dlKind, kind);
            d.setField(c.reasonCode, kind);
            d.setField(c.reason, reason);
            d.setField(c.topic, topic);
            d.setField(c.partition, partition);
            d.setField(c.offset, offset);
            d.setField(c.kafkaTime, kafkaTime);
            d.setField(c.eventMs, eventMs);
            d.setField(c.payload, payload);
            return d;
        }

        /** Turns the matcher's verdicts into job_stage rows. */
        private final class Emit implements LabelMatcher.Output {
            private String modelId;
            private final Collector<Row> out;
            private final String key;

            Emit(String modelId, Collector<Row> out) {
                this(modelId, out, null);
            }

            /** modelId null: taken from the key when a row needs it (a timer that frees state emits none). */
            Emit(String modelId, Collector<Row> out, String key) {
                this.modelId = modelId;
                this.out = out;
                this.key = key;
            }

            private String modelId() {
                if (modelId == null) {
                    modelId = key.substring(0, key.indexOf('\u0000'));
                }
                return modelId;
            }

            @Override
            public void labelled(LabelMatcher.Prediction p, LabelMatcher.Label l) {
                Row q = new Row(c.arity);
                q.setField(c.kind, PREDICTION);
                q.setField(c.modelId, modelId());
                q.setField(c.modelVersion, p.modelVersion);
                q.setField(c.windowMs, p.eventMs - p.eventMs % windowMs); // as 027's MOD: the prediction's window
                q.setField(c.labelled, Boolean.TRUE);
                q.setField(c.packed, p.packed);
                q.setField(c.score, p.score);
                q.setField(c.predictedLabel, p.predictedLabel);
                q.setField(c.label, l.label);
                q.setField(c.labelValue, l.labelValue);
                q.setField(c.clicked, l.clicked);
                q.setField(c.converted, l.converted);
                q.setField(c.revenue, l.revenue);
                out.collect(q);
            }

            @Override
            public void orphan(LabelMatcher.Label l) {
                out.collect(deadLetter(modelId(), "orphan_label", ORPHAN_REASON, l.topic, l.partition, l.offset,
                        l.kafkaTime, l.eventMs, l.payload));
            }
        }
    }
}
