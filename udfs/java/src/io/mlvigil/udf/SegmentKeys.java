package io.mlvigil.udf;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Map;

/**
 * The segment keys of one packed event (ParseEventFunction's layout: a dimension count, then per
 * dimension a length-prefixed UTF-8 value, length -1 when missing), for the window aggregates.
 * keys[0] is "*" (all traffic), then "dim=value" per dimension, "dim=(missing)" for a missing
 * value, and "dim=(other)" once the window has seen maxValues values of that dimension: the
 * cardinality cap, counted per accumulator in {@code distinct}. One instance per function
 * instance: the array is reused from event to event.
 */
final class SegmentKeys {
    String[] keys = new String[0];
    /** keys[0..count) hold this event's keys. */
    int count;

    void read(ByteBuffer b, byte[] packed, String[] dimensions, Map<String, ?> segs, Map<String, Integer> distinct,
            int maxValues) {
        int dims = b.get();
        if (keys.length < dims + 1) {
            keys = new String[dims + 1];
        }
        keys[0] = "*";
        for (int i = 0; i < dims; i++) {
            int len = b.getInt();
            String dim = dimensions[i];
            String value;
            if (len < 0) {
                value = "(missing)";
            } else {
                value = new String(packed, b.position(), len, StandardCharsets.UTF_8);
                b.position(b.position() + len);
            }
            keys[i + 1] = capped(dim, dim + "=" + value, segs, distinct, maxValues);
        }
        count = dims + 1;
    }

    /** key, or "dim=(other)" when it is new and dim already has maxValues values in segs. */
    static String capped(String dim, String key, Map<String, ?> segs, Map<String, Integer> distinct, int maxValues) {
        if (segs.containsKey(key)) {
            return key;
        }
        int seen = distinct.getOrDefault(dim, 0);
        if (seen >= maxValues) {
            return dim + "=(other)";
        }
        distinct.put(dim, seen + 1);
        return key;
    }
}
