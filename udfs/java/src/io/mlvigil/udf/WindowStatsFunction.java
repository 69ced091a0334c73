package io.mlvigil.udf;

import java.io.IOException;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.table.functions.FunctionContext;

/**
 * mlv_window_stats(packed): the sufficient statistics of one window for one (model, version),
 * overall ("*") and per configured segment ("dim=value"). Per monitored column: present and
 * missing counts, outliers (|x - ref mean| > 3 ref std), Welford mean and M2, PSI bin counts,
 * KS cell counts over the reference quantile points; categorical columns: category counts with
 * the last bucket for categories the reference does not know. The Python side (mlvigil.finalize)
 * turns these into rates, PSI and KS with the pure functions in mlvigil.stattests.
 */
public class WindowStatsFunction extends AggregateFunction<String, WindowStatsFunction.Acc> {

    public static final class Col {
        public long present;
        public long missing;
        public long outliers;
        public double mean;
        public double m2;
        public long[] bins;
        public long[] ksLt;
        public long[] ksEq;
        public long[] cats;

        public Col() {}

        Col(MonitorCatalog.Column c) {
            if (c.type == MonitorCatalog.NUMERIC) {
                bins = new long[c.edges.length + 1];
                ksLt = new long[c.ksPoints.length + 1];
                ksEq = new long[c.ksPoints.length];
            } else {
                cats = new long[c.categoryCount + 1];
            }
        }

        void addNumber(MonitorCatalog.Column c, double x) {
            present++;
            double d = x - mean;
            mean += d / present;
            m2 += d * (x - mean);
            if (c.std > 0 ? Math.abs(x - c.mean) > 3 * c.std : x != c.mean) {
                outliers++;
            }
            bins[MonitorCatalog.binOf(c.edges, x)]++;
            int k = Arrays.binarySearch(c.ksPoints, x);
            if (k >= 0) {
                ksEq[k]++;
            } else {
                ksLt[-k - 1]++;
            }
        }

        void merge(Col o) {
            long n = present + o.present;
            if (n > 0) {
                double d = o.mean - mean;
                m2 = m2 + o.m2 + d * d * present * o.present / n;
                mean = mean + d * o.present / n;
            }
            present = n;
            missing += o.missing;
            outliers += o.outliers;
            add(bins, o.bins);
            add(ksLt, o.ksLt);
            add(ksEq, o.ksEq);
            add(cats, o.cats);
        }

        private static void add(long[] a, long[] b) {
            if (a != null) {
                for (int i = 0; i < a.length; i++) {
                    a[i] += b[i];
                }
            }
        }
    }

    public static final class Seg {
        public long events;
        public Col[] cols;

        public Seg() {}

        Seg(MonitorCatalog.Column[] columns) {
            cols = new Col[columns.length];
            for (int i = 0; i < cols.length; i++) {
                cols[i] = new Col(columns[i]);
            }
        }
    }

    public static final class Acc {
        public int profile = -1;
        public int stream;
        public long events;
        public Map<String, Seg> segs = new LinkedHashMap<>();
        /** Distinct values seen per segment dimension, to cap cardinality. */
        public Map<String, Integer> distinct = new HashMap<>();
    }

    private static final JsonFactory JSON = new JsonFactory();
    private transient MonitorCatalog catalog;
    private transient byte[] tags;
    private transient double[] nums;
    private transient int[] catIdx;
    private transient SegmentKeys segKeys;

    @Override
    public void open(FunctionContext context) {
        catalog = MonitorCatalog.fromContext(context);
        tags = new byte[0];
        nums = new double[0];
        catIdx = new int[0];
        segKeys = new SegmentKeys();
    }

    @Override
    public Acc createAccumulator() {
        return new Acc();
    }

    private MonitorCatalog.Column[] columns(Acc acc) {
        MonitorCatalog.Profile p = catalog.profiles.get(acc.profile);
        return acc.stream == 0 ? p.features : p.prediction;
    }

    public void accumulate(Acc acc, byte[] packed) {
        if (packed == null) {
            return;
        }
        ByteBuffer b = ByteBuffer.wrap(packed);
        int profile = b.getInt();
        int stream = b.get();
        if (acc.profile < 0) {
            acc.profile = profile;
            acc.stream = stream;
        }
        MonitorCatalog.Column[] columns = columns(acc);
        MonitorCatalog.Model model = catalog.models.get(catalog.profiles.get(profile).model);
        segKeys.read(b, packed, model.segments, acc.segs, acc.distinct, catalog.maxSegmentValues);
        int n = columns.length;
        if (tags.length < n) {
            tags = new byte[n];
            nums = new double[n];
            catIdx = new int[n];
        }
        for (int i = 0; i < n; i++) {
            tags[i] = b.get();
            if (tags[i] == ParseEventFunction.NUMBER) {
                nums[i] = b.getDouble();
            } else if (tags[i] == ParseEventFunction.CATEGORY) {
                catIdx[i] = b.getInt();
            }
        }
        acc.events++;
        for (int s = 0; s < segKeys.count; s++) {
            Seg seg = acc.segs.get(segKeys.keys[s]);
            if (seg == null) {
                seg = new Seg(columns);
                acc.segs.put(segKeys.keys[s], seg);
            }
            seg.events++;
            for (int i = 0; i < n; i++) {
                Col col = seg.cols[i];
                if (tags[i] == ParseEventFunction.NUMBER) {
                    col.addNumber(columns[i], nums[i]);
                } else if (tags[i] == ParseEventFunction.CATEGORY) {
                    col.present++;
                    int k = catIdx[i];
                    col.cats[k < 0 ? col.cats.length - 1 : k]++;
                } else {
                    col.missing++;
                }
            }
        }
    }

    public void merge(Acc acc, Iterable<Acc> others) {
        for (Acc o : others) {
            if (o.profile < 0) {
                continue;
            }
            if (acc.profile < 0) {
                acc.profile = o.profile;
                acc.stream = o.stream;
            }
            acc.events += o.events;
            for (Map.Entry<String, Seg> e : o.segs.entrySet()) {
                // The cardinality cap holds for merged accumulators too (as in QualityStatsFunction).
                String key = e.getKey();
                if (!"*".equals(key)) {
                    key = SegmentKeys.capped(key.substring(0, key.indexOf('=')), key, acc.segs, acc.distinct,
                            catalog.maxSegmentValues);
                }
                Seg mine = acc.segs.get(key);
                if (mine == null) {
                    acc.segs.put(key, e.getValue());
                    continue;
                }
                mine.events += e.getValue().events;
                for (int i = 0; i < mine.cols.length; i++) {
                    mine.cols[i].merge(e.getValue().cols[i]);
                }
            }
        }
    }

    @Override
    public String getValue(Acc acc) {
        StringWriter out = new StringWriter();
        try (JsonGenerator g = JSON.createGenerator(out)) {
            g.writeStartObject();
            g.writeNumberField("profile", acc.profile);
            g.writeNumberField("events", acc.events);
            g.writeArrayFieldStart("segments");
            for (Map.Entry<String, Seg> e : acc.segs.entrySet()) {
                g.writeStartObject();
                g.writeStringField("segment", e.getKey());
                g.writeNumberField("events", e.getValue().events);
                g.writeArrayFieldStart("columns");
                for (Col c : e.getValue().cols) {
                    g.writeStartObject();
                    g.writeNumberField("present", c.present);
                    g.writeNumberField("missing", c.missing);
                    if (c.cats == null) {
                        g.writeNumberField("outliers", c.outliers);
                        g.writeNumberField("mean", c.mean);
                        g.writeNumberField("m2", c.m2);
                        longs(g, "bins", c.bins);
                        longs(g, "ks_lt", c.ksLt);
                        longs(g, "ks_eq", c.ksEq);
                    } else {
                        longs(g, "cats", c.cats);
                    }
                    g.writeEndObject();
                }
                g.writeEndArray();
                g.writeEndObject();
            }
            g.writeEndArray();
            g.writeEndObject();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        return out.toString();
    }

    private static void longs(JsonGenerator g, String name, long[] values) throws IOException {
        g.writeArrayFieldStart(name);
        for (long v : values) {
            g.writeNumber(v);
        }
        g.writeEndArray();
    }
}
