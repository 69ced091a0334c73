package io.mlvigil.udf;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;

/**
 * The fast path of EventDecoder: a pull scanner over the UTF-8 bytes of one event that accepts
 * only a subset of what Jackson accepts, and gives up (Bail) on anything else. Accepted: a
 * strict RFC 8259 object (no BOM, no comments, no NaN, no leading zeros, no control characters
 * in strings, strictly valid UTF-8: no overlong forms, no encoded surrogates), followed by
 * whitespace only, with no duplicate key in any object. Given up on, so Jackson decides (with
 * its own verdict and wording, unchanged): any syntax error or possible duplicate key, and
 * whatever comes near one of Jackson's limits (StreamReadConstraints) or is rare and fiddly:
 * nesting deeper than MAX_DEPTH, numbers longer than MAX_NUMBER_CHARS, keys with escapes or
 * longer than MAX_KEY_BYTES, more than MAX_KEYS keys in one object, strings longer than
 * MAX_STRING_BYTES. A give-up is never a verdict: only the speed differs, so whenever the
 * scanner is unsure it may give up (a hash collision between two keys does too).
 *
 * Why: Jackson's per-parser set-up (bootstrapper, buffer recycler, duplicate-detection sets)
 * cost more than the scanning itself on events of a few hundred bytes.
 *
 * Tokens are those of Jackson's JsonToken, in the same order Jackson's parser returns them;
 * values are the same too: strings decoded (escapes included), numbers as their text, as the
 * correctly rounded double (as Jackson's fast double parser gives) and, for integers, as a long
 * unless outside long (Jackson's BIG_INTEGER). Not thread-safe; reused per event.
 */
final class StrictJsonScanner implements EventDecoder.Tokens {
    /** Thrown when the scanner gives up; preallocated, without a stack trace (it is not an error). */
    static final class Bail extends RuntimeException {
        private Bail() {
            super("the strict scanner gives up: Jackson decides", null, false, false);
        }
    }

    static final Bail BAIL = new Bail();
    /** Far below Jackson's limits (nesting 1000, numbers 1000 chars, names 50000, strings 20e6). */
    static final int MAX_DEPTH = 64;
    static final int MAX_NUMBER_CHARS = 100;
    static final int MAX_KEY_BYTES = 1000;
    static final int MAX_STRING_BYTES = 10_000_000;
    /** The duplicate check compares a key with the object's earlier keys: bounded cost. */
    static final int MAX_KEYS = 128;

    private static final int ROOT = 0;
    private static final int AFTER_ROOT = 1;
    private static final int OBJ_FIRST = 2;
    private static final int OBJ_NEXT = 3;
    private static final int OBJ_VALUE = 4;
    private static final int ARR_FIRST = 5;
    private static final int ARR_NEXT = 6;

    private static final double[] POW10 = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    };

    private byte[] b;
    private int pos;
    private int end;
    private int state;
    private int depth;
    private final boolean[] isObject = new boolean[MAX_DEPTH + 1];
    /** Key hashes of the open objects, innermost last; keyStart[d] is where depth d's keys begin. */
    private long[] keyHashes = new long[256];
    private int keyCount;
    private final int[] keyStart = new int[MAX_DEPTH + 1];

    private JsonToken cur;
    /** The current string (content, without quotes), number or key: [tokStart, tokEnd). */
    private int tokStart;
    private int tokEnd;
    private boolean escaped;
    private boolean ascii;
    private long keyHash;
    /** Numbers: integer (no fraction, no exponent) with its long value, unless outside long. */
    private boolean numberIsInt;
    private boolean numberFitsLong;
    private long numberLong;
    private double numberDouble;

    /** Keys seen before, as Strings: events repeat their keys, so their names are not allocated each time. */
    private final long[] nameHashes = new long[512];
    private final String[] names = new String[512];
    private final byte[][] nameBytes = new byte[512][];

    void reset(byte[] payload) {
        b = payload;
        pos = 0;
        end = payload.length;
        state = ROOT;
        depth = 0;
        keyCount = 0;
        cur = null;
    }

    @Override
    public JsonToken next() {
        skipWhitespace();
        switch (state) {
            case ROOT:
                if (pos >= end || b[pos] != '{') {
                    throw BAIL; // not an object, or empty: Jackson's verdict and wording
                }
                pos++;
                return cur = open(true);
            case AFTER_ROOT:
                if (pos < end) {
                    throw BAIL;
                }
                return cur = null;
            case OBJ_FIRST:
                if (pos < end && b[pos] == '}') {
                    pos++;
                    return cur = close();
                }
                return cur = key();
            case OBJ_NEXT:
                if (pos < end) {
                    byte c = b[pos++];
                    if (c == '}') {
                        return cur = close();
                    }
                    if (c == ',') {
                        skipWhitespace();
                        return cur = key();
                    }
                }
                throw BAIL;
            case OBJ_VALUE:
                return cur = value();
            case ARR_FIRST:
                if (pos < end && b[pos] == ']') {
                    pos++;
                    return cur = close();
                }
                return cur = value();
            case ARR_NEXT:
                if (pos < end) {
                    byte c = b[pos++];
                    if (c == ']') {
                        return cur = close();
                    }
                    if (c == ',') {
                        skipWhitespace();
                        return cur = value();
                    }
                }
                throw BAIL;
            default:
                throw BAIL;
        }
    }

    private void skipWhitespace() {
        while (pos < end) {
            byte c = b[pos];
            if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
                return;
            }
            pos++;
        }
    }

    private JsonToken open(boolean object) {
        if (depth == MAX_DEPTH) {
            throw BAIL;
        }
        depth++;
        isObject[depth] = object;
        keyStart[depth] = keyCount;
        state = object ? OBJ_FIRST : ARR_FIRST;
        return object ? JsonToken.START_OBJECT : JsonToken.START_ARRAY;
    }

    private JsonToken close() {
        boolean object = isObject[depth];
        keyCount = keyStart[depth];
        depth--;
        afterValue();
        return object ? JsonToken.END_OBJECT : JsonToken.END_ARRAY;
    }

    private void afterValue() {
        state = depth == 0 ? AFTER_ROOT : isObject[depth] ? OBJ_NEXT : ARR_NEXT;
    }

    private JsonToken key() {
        if (pos >= end || b[pos] != '"') {
            throw BAIL;
        }
        string();
        int len = tokEnd - tokStart;
        if (escaped || len > MAX_KEY_BYTES) {
            throw BAIL; // "a" and "\u0061" are one key: Jackson compares decoded names
        }
        // Strictly valid UTF-8 is one spelling per name: equal names are equal bytes.
        long h = 0xcbf29ce484222325L ^ len;
        for (int i = tokStart; i < tokEnd; i++) {
            h = (h ^ (b[i] & 0xff)) * 0x100000001b3L;
        }
        int first = keyStart[depth];
        if (keyCount - first >= MAX_KEYS) {
            throw BAIL;
        }
        for (int i = first; i < keyCount; i++) {
            if (keyHashes[i] == h) {
                throw BAIL; // a duplicate (or a collision): Jackson's verdict
            }
        }
        if (keyCount == keyHashes.length) {
            keyHashes = Arrays.copyOf(keyHashes, keyCount * 2);
        }
        keyHashes[keyCount++] = h;
        keyHash = h;
        skipWhitespace();
        if (pos >= end || b[pos] != ':') {
            throw BAIL;
        }
        pos++;
        state = OBJ_VALUE;
        return JsonToken.FIELD_NAME;
    }

    private JsonToken value() {
        if (pos >= end) {
            throw BAIL;
        }
        byte c = b[pos];
        switch (c) {
            case '{':
                pos++;
                return open(true);
            case '[':
                pos++;
                return open(false);
            case '"':
                string();
                afterValue();
                return JsonToken.VALUE_STRING;
            case 't':
                literal("true");
                return JsonToken.VALUE_TRUE;
            case 'f':
                literal("false");
                return JsonToken.VALUE_FALSE;
            case 'n':
                literal("null");
                return JsonToken.VALUE_NULL;
            default:
                if (c == '-' || (c >= '0' && c <= '9')) {
                    JsonToken t = number();
                    afterValue();
                    return t;
                }
                throw BAIL;
        }
    }

    private void literal(String word) {
        int n = word.length();
        if (end - pos < n) {
            throw BAIL;
        }
        for (int i = 1; i < n; i++) {
            if (b[pos + i] != word.charAt(i)) {
                throw BAIL;
            }
        }
        pos += n;
        afterValue(); // "truex": the next call finds no ',' or closer and gives up
    }

    /** Scans a string from its opening quote: validates escapes and UTF-8, records the content range. */
    private void string() {
        int i = pos + 1;
        boolean esc = false;
        boolean asc = true;
        while (true) {
            if (i >= end) {
                throw BAIL;
            }
            int c = b[i];
            if (c == '"') {
                break;
            }
            if (c >= 0x20 && c != '\\') {
                i++;
                continue;
            }
            if (c == '\\') {
                esc = true;
                if (i + 1 >= end) {
                    throw BAIL;
                }
                int e = b[i + 1];
                if (e == 'u') {
                    if (i + 6 > end || hex(b[i + 2]) < 0 || hex(b[i + 3]) < 0 || hex(b[i + 4]) < 0 || hex(b[i + 5]) < 0) {
                        throw BAIL;
                    }
                    i += 6;
                } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r'
                        || e == 't') {
                    i += 2;
                } else {
                    throw BAIL;
                }
                continue;
            }
            if (c >= 0) {
                throw BAIL; // a control character
            }
            asc = false;
            i = utf8(i);
        }
        if (i - pos - 1 > MAX_STRING_BYTES) {
            throw BAIL;
        }
        tokStart = pos + 1;
        tokEnd = i;
        escaped = esc;
        ascii = asc;
        pos = i + 1;
    }

    /** One strictly valid UTF-8 sequence at i (RFC 3629: no overlongs, no surrogates, at most U+10FFFF). */
    private int utf8(int i) {
        int c = b[i] & 0xff;
        int n;
        int lo = 0x80;
        int hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) {
                lo = 0xa0;
            } else if (c == 0xed) {
                hi = 0x9f;
            }
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f;
            }
        } else {
            throw BAIL;
        }
        if (i + n >= end) {
            throw BAIL;
        }
        int c1 = b[i + 1] & 0xff;
        if (c1 < lo || c1 > hi) {
            throw BAIL;
        }
        for (int k = 2; k <= n; k++) {
            if ((b[i + k] & 0xc0) != 0x80) {
                throw BAIL;
            }
        }
        return i + n + 1;
    }

    private static int hex(int c) {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return -1;
    }

    /** -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? and its value. */
    private JsonToken number() {
        int start = pos;
        int i = pos;
        boolean negative = b[i] == '-';
        if (negative) {
            i++;
        }
        if (i >= end || b[i] < '0' || b[i] > '9') {
            throw BAIL;
        }
        // Integer part: accumulated negatively, so Long.MIN_VALUE fits (as Jackson's LONG range).
        long acc = 0;
        boolean fits = true;
        long mantissa = 0;
        int mantissaDigits = 0;
        if (b[i] == '0') {
            i++;
            if (i < end && b[i] >= '0' && b[i] <= '9') {
                throw BAIL; // leading zero
            }
        } else {
            while (i < end && b[i] >= '0' && b[i] <= '9') {
                int d = b[i] - '0';
                if (fits) {
                    if (acc < (Long.MIN_VALUE + d) / 10) {
                        fits = false;
                    } else {
                        acc = acc * 10 - d;
                    }
                }
                if (mantissaDigits < 18) {
                    mantissa = mantissa * 10 + d;
                    mantissaDigits++;
                } else {
                    mantissaDigits = 99; // too many digits for the exact fast path
                }
                i++;
            }
        }
        int exp10 = 0;
        boolean isInt = true;
        if (i < end && b[i] == '.') {
            isInt = false;
            i++;
            int fracStart = i;
            while (i < end && b[i] >= '0' && b[i] <= '9') {
                int d = b[i] - '0';
                if (mantissaDigits < 18) {
                    if (mantissa != 0 || d != 0) {
                        mantissa = mantissa * 10 + d;
                        mantissaDigits++;
                    }
                    exp10--;
                } else {
                    mantissaDigits = 99;
                }
                i++;
            }
            if (i == fracStart) {
                throw BAIL;
            }
        }
        if (i < end && (b[i] == 'e' || b[i] == 'E')) {
            isInt = false;
            i++;
            boolean expNegative = false;
            if (i < end && (b[i] == '+' || b[i] == '-')) {
                expNegative = b[i] == '-';
                i++;
            }
            int expStart = i;
            int e = 0;
            while (i < end && b[i] >= '0' && b[i] <= '9') {
                if (e < 100_000) {
                    e = e * 10 + (b[i] - '0');
                }
                i++;
            }
            if (i == expStart) {
                throw BAIL;
            }
            exp10 += expNegative ? -e : e;
        }
        if (i - start > MAX_NUMBER_CHARS) {
            throw BAIL;
        }
        tokStart = start;
        tokEnd = i;
        pos = i;
        numberIsInt = isInt;
        if (isInt) {
            numberFitsLong = fits && (negative || acc != Long.MIN_VALUE);
            numberLong = negative ? acc : -acc;
            // Jackson reads an integer within long as a long, and converts: -0 is 0.0.
            numberDouble = numberFitsLong ? (double) numberLong : Double.NaN;
        } else {
            numberFitsLong = false;
            // Exact operands and one rounding: the correctly rounded double (Clinger's fast path).
            if (mantissaDigits <= 18 && mantissa < (1L << 53) && exp10 >= -22 && exp10 <= 22) {
                double m = (double) mantissa;
                double v = exp10 >= 0 ? m * POW10[exp10] : m / POW10[-exp10];
                numberDouble = negative ? -v : v;
            } else {
                numberDouble = Double.NaN;
            }
        }
        return isInt ? JsonToken.VALUE_NUMBER_INT : JsonToken.VALUE_NUMBER_FLOAT;
    }

    @Override
    public String name() {
        long h = keyHash;
        int slot = (int) (h ^ (h >>> 29)) & (names.length - 1);
        byte[] known = nameBytes[slot];
        if (nameHashes[slot] == h && known != null
                && Arrays.equals(known, 0, known.length, b, tokStart, tokEnd)) {
            return names[slot];
        }
        String name = decode();
        nameHashes[slot] = h;
        nameBytes[slot] = Arrays.copyOfRange(b, tokStart, tokEnd);
        names[slot] = name;
        return name;
    }

    @Override
    public String text() {
        if (cur == JsonToken.VALUE_STRING) {
            return decode();
        }
        if (cur == JsonToken.VALUE_NUMBER_INT || cur == JsonToken.VALUE_NUMBER_FLOAT) {
            return new String(b, tokStart, tokEnd - tokStart, StandardCharsets.ISO_8859_1);
        }
        if (cur != null) {
            return cur.asString(); // true, false, null, and the structural tokens as Jackson spells them
        }
        return null;
    }

    private String decode() {
        int len = tokEnd - tokStart;
        if (!escaped) {
            return new String(b, tokStart, len, ascii ? StandardCharsets.ISO_8859_1 : StandardCharsets.UTF_8);
        }
        StringBuilder out = new StringBuilder(len);
        int i = tokStart;
        while (i < tokEnd) {
            int run = i;
            while (i < tokEnd && b[i] != '\\') {
                i++;
            }
            if (i > run) {
                out.append(new String(b, run, i - run, StandardCharsets.UTF_8));
            }
            if (i >= tokEnd) {
                break;
            }
            byte e = b[i + 1];
            switch (e) {
                case 'u':
                    out.append((char) (hex(b[i + 2]) << 12 | hex(b[i + 3]) << 8 | hex(b[i + 4]) << 4 | hex(b[i + 5])));
                    i += 6;
                    continue;
                case 'b':
                    out.append('\b');
                    break;
                case 'f':
                    out.append('\f');
                    break;
                case 'n':
                    out.append('\n');
                    break;
                case 'r':
                    out.append('\r');
                    break;
                case 't':
                    out.append('\t');
                    break;
                default:
                    out.append((char) e); // " \ /
            }
            i += 2;
        }
        return out.toString();
    }

    @Override
    public double doubleValue() {
        double v = numberDouble;
        if (Double.isNaN(v)) {
            // Outside the exact fast path: Double.parseDouble is correctly rounded too.
            v = Double.parseDouble(new String(b, tokStart, tokEnd - tokStart, StandardCharsets.ISO_8859_1));
            numberDouble = v;
        }
        return v;
    }

    @Override
    public boolean isBigInteger() {
        return numberIsInt && !numberFitsLong;
    }

    @Override
    public long longValue() {
        return numberLong;
    }

    @Override
    public void skipChildren() {
        if (cur != JsonToken.START_OBJECT && cur != JsonToken.START_ARRAY) {
            return;
        }
        int open = 1;
        while (true) {
            JsonToken t = next();
            if (t == JsonToken.START_OBJECT || t == JsonToken.START_ARRAY) {
                open++;
            } else if (t == JsonToken.END_OBJECT || t == JsonToken.END_ARRAY) {
                if (--open == 0) {
                    return;
                }
            }
        }
    }
}
