package io.mlvigil.udf;

import java.io.IOException;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeMap;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.table.functions.FunctionContext;

/**
 * mlv_quality_stats(labelled, packed, score, predicted_label, label, label_value, clicked,
 * converted, revenue): the sufficient statistics of model quality for the predictions of one
 * window, model and version, overall ("*") and per configured segment ("dim=value", as in
 * WindowStatsFunction). Its input rows are of two kinds (see sql/flink/027_quality.sql):
 * a prediction (labelled = false), counted once when it arrives, and a prediction joined with
 * its first label (labelled = true), added whenever a label arrives, up to the label lateness
 * after the prediction. The segments come from the prediction's packed columns.
 *
 * Per segment: predictions, labelled; classification: scored (labelled with a predicted class),
 * correct, binary confusion counts (tp, fp, fn, tn) or, multi-class, per class [support,
 * predicted, true positives]; calibration over 10 equal-width score bins (count, score sum,
 * positives: the positive class for binary, a correct prediction for multi-class); regression:
 * count, sums of |error|, error^2, prediction and label; business outcomes: clicked, converted,
 * revenue sums, and how many labels reported each. Python (mlvigil.quality) turns them into
 * metrics. All counts only grow, so the input is append-only and no retraction is needed.
 *
 * The job runs it as plain Java in QualityWindows (accumulate right after the label join, merge
 * per window, getValue for the window's row), its accumulator encoded by QualityWindows.AccCodec;
 * it stays an AggregateFunction (catalog from the FunctionContext) so it also works as a SQL
 * UDAF. As one, the accumulator is a RAW type: a structured type would be converted to and from
 * its internal form (maps of arrays) for every row, which cost about 30 us per row.
 */
@FunctionHint(accumulator = @DataTypeHint(value = "RAW", bridgedTo = QualityStatsFunction.Acc.class))
public class QualityStatsFunction extends AggregateFunction<String, QualityStatsFunction.Acc> {
    public static final int CAL_BINS = 10;

    /** Multi-class counts of one class. */
    public static final class Cls {
        public long support;
        public long predicted;
        public long tp;

        public Cls() {}
    }

    public static final class Seg {
        public long predictions;
        public long labelled;
        public long scored;
        public long correct;
        public long tp;
        public long fp;
        public long fn;
        public long tn;
        public Map<String, Cls> classes = new HashMap<>();
        public long[] calN = new long[CAL_BINS];
        public double[] calSum = new double[CAL_BINS];
        public long[] calPos = new long[CAL_BINS];
        public long regN;
        public double absErr;
        public double sqErr;
        public double sumPred;
        public double sumLabel;
        public long clickedN;
        public long clicked;
        public long convertedN;
        public long converted;
        public long revenueN;
        public double revenue;

        public Seg() {}

        void merge(Seg o) {
            predictions += o.predictions;
            labelled += o.labelled;
            scored += o.scored;
            correct += o.correct;
            tp += o.tp;
            fp += o.fp;
            fn += o.fn;
            tn += o.tn;
            for (Map.Entry<String, Cls> e : o.classes.entrySet()) {
                Cls c = classes.computeIfAbsent(e.getKey(), k -> new Cls());
                c.support += e.getValue().support;
                c.predicted += e.getValue().predicted;
                c.tp += e.getValue().tp;
            }
            for (int i = 0; i < CAL_BINS; i++) {
                calN[i] += o.calN[i];
                calSum[i] += o.calSum[i];
                calPos[i] += o.calPos[i];
            }
            regN += o.regN;
            absErr += o.absErr;
            sqErr += o.sqErr;
            sumPred += o.sumPred;
            sumLabel += o.sumLabel;
            clickedN += o.clickedN;
            clicked += o.clicked;
            convertedN += o.convertedN;
            converted += o.converted;
            revenueN += o.revenueN;
            revenue += o.revenue;
        }
    }

    public static final class Acc {
        public int profile = -1;
        /** Input rows folded in (predictions + labels): grows with every update. */
        public long rows;
        public Map<String, Seg> segs = new LinkedHashMap<>();
        /** Distinct values seen per segment dimension, to cap cardinality. */
        public Map<String, Integer> distinct = new HashMap<>();
    }

    private static final JsonFactory JSON = new JsonFactory();
    private transient MonitorCatalog catalog;
    private transient SegmentKeys segKeys;

    @Override
    public void open(FunctionContext context) {
        catalog = MonitorCatalog.fromContext(context);
        segKeys = new SegmentKeys();
    }

    @Override
    public Acc createAccumulator() {
        return new Acc();
    }

    /** The bin of a score: min(floor(10 * score), 9), scores below 0 in bin 0. */
    public static int calBin(double score) {
        double b = Math.floor(score * CAL_BINS);
        return b < 0 ? 0 : b >= CAL_BINS - 1 ? CAL_BINS - 1 : (int) b;
    }

    public void accumulate(Acc acc, Boolean labelled, byte[] packed, Double score, String predicted, String label,
            Double labelValue, Boolean clicked, Boolean converted, Double revenue) {
        if (packed == null) {
            return;
        }
        ByteBuffer b = ByteBuffer.wrap(packed);
        int profile = b.getInt();
        b.get(); // stream
        if (acc.profile < 0) {
            acc.profile = profile;
        }
        MonitorCatalog.Model model = catalog.models.get(catalog.profiles.get(profile).model);
        segKeys.read(b, packed, model.segments, acc.segs, acc.distinct, catalog.maxSegmentValues);
        acc.rows++;
        boolean isLabel = Boolean.TRUE.equals(labelled);
        for (int s = 0; s < segKeys.count; s++) {
            Seg seg = acc.segs.get(segKeys.keys[s]);
            if (seg == null) {
                seg = new Seg();
                acc.segs.put(segKeys.keys[s], seg);
            }
            if (isLabel) {
                addLabel(seg, model, score, predicted, label, labelValue, clicked, converted, revenue);
            } else {
                seg.predictions++;
            }
        }
    }

    private static void addLabel(Seg seg, MonitorCatalog.Model model, Double score, String predicted, String label,
            Double labelValue, Boolean clicked, Boolean converted, Double revenue) {
        seg.labelled++;
        if (clicked != null) {
            seg.clickedN++;
            seg.clicked += clicked ? 1 : 0;
        }
        if (converted != null) {
            seg.convertedN++;
            seg.converted += converted ? 1 : 0;
        }
        if (revenue != null) {
            seg.revenueN++;
            seg.revenue += revenue;
        }
        if (model.regression) {
            if (score != null && labelValue != null) {
                double err = score - labelValue;
                seg.regN++;
                seg.absErr += Math.abs(err);
                seg.sqErr += err * err;
                seg.sumPred += score;
                seg.sumLabel += labelValue;
            }
            return;
        }
        if (model.positiveLabel != null) {
            boolean y = model.positiveLabel.equals(label);
            Boolean yHat = predicted != null ? (Boolean) model.positiveLabel.equals(predicted)
                    : score != null ? (Boolean) (score >= model.threshold) : null;
            if (yHat != null) {
                seg.scored++;
                if (y == yHat) {
                    seg.correct++;
                }
                if (y && yHat) {
                    seg.tp++;
                } else if (yHat) {
                    seg.fp++;
                } else if (y) {
                    seg.fn++;
                } else {
                    seg.tn++;
                }
            }
            if (score != null) {
                int bin = calBin(score);
                seg.calN[bin]++;
                seg.calSum[bin] += score;
                seg.calPos[bin] += y ? 1 : 0;
            }
            return;
        }
        if (predicted == null) {
            return;
        }
        boolean hit = predicted.equals(label);
        seg.scored++;
        seg.classes.computeIfAbsent(label, k -> new Cls()).support++;
        Cls p = seg.classes.computeIfAbsent(predicted, k -> new Cls());
        p.predicted++;
        if (hit) {
            seg.correct++;
            p.tp++;
        }
        if (score != null) {
            int bin = calBin(score);
            seg.calN[bin]++;
            seg.calSum[bin] += score;
            seg.calPos[bin] += hit ? 1 : 0;
        }
    }

    public void merge(Acc acc, Iterable<Acc> others) {
        for (Acc o : others) {
            if (o.profile < 0) {
                continue;
            }
            if (acc.profile < 0) {
                acc.profile = o.profile;
            }
            acc.rows += o.rows;
            for (Map.Entry<String, Seg> e : o.segs.entrySet()) {
                String key = e.getKey();
                if (!"*".equals(key)) {
                    key = SegmentKeys.capped(key.substring(0, key.indexOf('=')), key, acc.segs, acc.distinct,
                            catalog.maxSegmentValues);
                }
                Seg mine = acc.segs.get(key);
                if (mine == null) {
                    mine = new Seg();
                    acc.segs.put(key, mine);
                }
                mine.merge(e.getValue());
            }
        }
    }

    @Override
    public String getValue(Acc acc) {
        StringWriter out = new StringWriter();
        String task = "multiclass";
        if (acc.profile >= 0) {
            MonitorCatalog.Model m = catalog.models.get(catalog.profiles.get(acc.profile).model);
            task = m.regression ? "regression" : m.positiveLabel != null ? "binary" : "multiclass";
        }
        try (JsonGenerator g = JSON.createGenerator(out)) {
            g.writeStartObject();
            g.writeNumberField("profile", acc.profile);
            g.writeStringField("task", task);
            g.writeNumberField("rows", acc.rows);
            g.writeArrayFieldStart("segments");
            for (Map.Entry<String, Seg> e : acc.segs.entrySet()) {
                Seg s = e.getValue();
                g.writeStartObject();
                g.writeStringField("segment", e.getKey());
                g.writeNumberField("predictions", s.predictions);
                g.writeNumberField("labelled", s.labelled);
                g.writeNumberField("scored", s.scored);
                g.writeNumberField("correct", s.correct);
                g.writeNumberField("tp", s.tp);
                g.writeNumberField("fp", s.fp);
                g.writeNumberField("fn", s.fn);
                g.writeNumberField("tn", s.tn);
                g.writeObjectFieldStart("classes");
                for (Map.Entry<String, Cls> c : new TreeMap<>(s.classes).entrySet()) {
                    g.writeArrayFieldStart(c.getKey());
                    g.writeNumber(c.getValue().support);
                    g.writeNumber(c.getValue().predicted);
                    g.writeNumber(c.getValue().tp);
                    g.writeEndArray();
                }
                g.writeEndObject();
                g.writeArrayFieldStart("cal_n");
                for (long v : s.calN) {
                    g.writeNumber(v);
                }
                g.writeEndArray();
                g.writeArrayFieldStart("cal_sum");
                for (double v : s.calSum) {
                    g.writeNumber(v);
                }
                g.writeEndArray();
                g.writeArrayFieldStart("cal_pos");
                for (long v : s.calPos) {
                    g.writeNumber(v);
                }
                g.writeEndArray();
                g.writeNumberField("reg_n", s.regN);
                g.writeNumberField("abs_err", s.absErr);
                g.writeNumberField("sq_err", s.sqErr);
                g.writeNumberField("sum_pred", s.sumPred);
                g.writeNumberField("sum_label", s.sumLabel);
                g.writeNumberField("clicked_n", s.clickedN);
                g.writeNumberField("clicked", s.clicked);
                g.writeNumberField("converted_n", s.convertedN);
                g.writeNumberField("converted", s.converted);
                g.writeNumberField("revenue_n", s.revenueN);
                g.writeNumberField("revenue", s.revenue);
                g.writeEndObject();
            }
            g.writeEndArray();
            g.writeEndObject();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        return out.toString();
    }
}
