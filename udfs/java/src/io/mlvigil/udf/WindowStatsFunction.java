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

        /** x with its PSI bin, its KS search result and its outlier flag (the same for every segment). */
        void addNumber(double x, int bin, int ks, boolean outlier) {
            present++;
            double d = x - mean;
            mean += d / present;
            m2 += d * (x - mean);
            if (outlier) {
                outliers++;
            }
            bins[bin]++;
            if (ks >= 0) {
                ksEq[ks]++;
            } else {
                ksLt[-ks - 1]++;
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

    /**
     * Arrays.binarySearch over sorted points, its result exactly, with the search narrowed first by
     * a uniform grid: the two searches per numeric value (PSI bin, KS cell) were about a tenth of
     * a feature event's cost. cell() is monotone in x, so the points of other cells are strictly
     * below or above x and the narrowed search returns the full one's index or insertion point.
     */
    public static final class PointIndex {
        private final double[] points;
        private final double lo;
        private final double scale;
        /** Points of cell c are points[from[c] .. from[c + 1]); null: no grid (full search). */
        private final int[] from;

        public PointIndex(double[] points) {
            this.points = points;
            int n = points.length;
            int cells = 4 * n;
            double span = n > 0 ? points[n - 1] - points[0] : 0;
            double sc = cells / span;
            if (n < 4 || !(span > 0) || !Double.isFinite(span) || !(sc > 0) || !Double.isFinite(sc)) {
                lo = 0;
                scale = 0;
                from = null;
                return;
            }
            lo = points[0];
            scale = sc;
            from = new int[cells + 1];
            int i = 0;
            for (int c = 0; c <= cells; c++) {
                while (i < n && cell(points[i], cells) < c) {
                    i++;
                }
                from[c] = i;
            }
        }

        private int cell(double x, int cells) {
            double t = (x - lo) * scale;
            if (!(t >= 0)) {
                return 0;
            }
            return t >= cells ? cells - 1 : (int) t;
        }

        public int search(double x) {
            if (from == null || x != x) {
                return Arrays.binarySearch(points, x);
            }
            int c = cell(x, from.length - 1);
            int i = from[c];
            int to = from[c + 1];
            if (to - i > 8) {
                return Arrays.binarySearch(points, i, to, x);
            }
            // A few points at most: the first not below x in Double.compare's order (Arrays.binarySearch's).
            while (i < to && Double.compare(points[i], x) < 0) {
                i++;
            }
            return i < to && Double.compare(points[i], x) == 0 ? i : -i - 1;
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
    /** Per profile and stream (index 2 * profile + stream): per column the bin and KS point indexes. */
    private transient PointIndex[][] edgeIndex;
    private transient PointIndex[][] ksIndex;
    private transient int[] bins;
    private transient int[] ksCells;
    private transient boolean[] outlier;

    @Override
    public void open(FunctionContext context) {
        catalog = MonitorCatalog.fromContext(context);
        tags = new byte[0];
        nums = new double[0];
        catIdx = new int[0];
        segKeys = new SegmentKeys();
        edgeIndex = new PointIndex[2 * catalog.profiles.size()][];
        ksIndex = new PointIndex[2 * catalog.profiles.size()][];
        bins = new int[0];
        ksCells = new int[0];
        outlier = new boolean[0];
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
            bins = new int[n];
            ksCells = new int[n];
            outlier = new boolean[n];
        }
        int slot = 2 * acc.profile + acc.stream;
        if (ksIndex[slot] == null) {
            edgeIndex[slot] = new PointIndex[n];
            ksIndex[slot] = new PointIndex[n];
            for (int i = 0; i < n; i++) {
                if (columns[i].type == MonitorCatalog.NUMERIC) {
                    edgeIndex[slot][i] = new PointIndex(columns[i].edges);
                    ksIndex[slot][i] = new PointIndex(columns[i].ksPoints);
                }
            }
        }
        PointIndex[] edgeIdx = edgeIndex[slot];
        PointIndex[] ksIdx = ksIndex[slot];
        for (int i = 0; i < n; i++) {
            tags[i] = b.get();
            if (tags[i] == ParseEventFunction.NUMBER) {
                double x = b.getDouble();
                nums[i] = x;
                // Per value once, not per segment: the bin (bisect_right, as MonitorCatalog.binOf), the
                // KS search result and the |x - ref mean| > 3 ref std flag.
                MonitorCatalog.Column c = columns[i];
                int k = edgeIdx[i].search(x);
                bins[i] = k >= 0 ? k + 1 : -k - 1;
                ksCells[i] = ksIdx[i].search(x);
                outlier[i] = c.std > 0 ? Math.abs(x - c.mean) > 3 * c.std : x != c.mean;
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
                    col.addNumber(nums[i], bins[i], ksCells[i], outlier[i]);
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
