"""The label join's rule (udfs/java/.../LabelMatcher.java, the state of the keyed LabelJoin
operator), called directly through PyFlink's py4j gateway (no job).

For one (model_id, request_id): a label joins a prediction when label time is within
[prediction time - skew, prediction time + lateness]; the first label wins (LabelJoin sends later
ones to duplicate_label before the matcher sees them); it joins every kept prediction in range
and, until the watermark passes label time + skew, every prediction that arrives later in range;
a first label that joined nothing is an orphan once the watermark passes label time + skew;
predictions wait until the watermark passes prediction time + lateness. Hypothesis drives random
sequences of predictions, labels and watermark moves against a plain-Python statement of that
rule, with the state encoded and decoded between every step (as the operator stores it).
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py4j.java_gateway import get_field, set_field

from mlvigil.jars import UDF_JAR

L_MS = 60_000
SKEW_MS = 5_000
NO_TIMER = -(2**63)  # LabelMatcher.NO_TIMER
JVM_TIME = None  # java.time, set by the fixture


@pytest.fixture(scope="module")
def udf():
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    assert UDF_JAR.exists(), "build the UDF jar: bash udfs/java/build.sh"
    gw = get_gateway()
    add_jars_to_context_class_loader([UDF_JAR.as_uri()])
    global JVM_TIME
    JVM_TIME = gw.jvm.java.time
    return Udf(gw.jvm.io.mlvigil.udf)


class Udf:
    """The io.mlvigil.udf package, with a repr hypothesis can print when it reports a failure."""

    def __init__(self, package) -> None:
        self._package = package

    def __getattr__(self, name: str):
        if name.startswith("_"):  # hypothesis and pytest probe for _repr_pretty_ and the like
            raise AttributeError(name)
        return getattr(self._package, name)

    def __repr__(self) -> str:
        return "io.mlvigil.udf"


class Key:
    """One key's LabelMatcher state, stored as the operator stores it (byte[] between steps)."""

    def __init__(self, udf):
        self.udf = udf
        self.matcher = udf.LabelMatcher(L_MS, SKEW_MS)
        self.rec = getattr(udf, "LabelMatcher$Recorder")()
        self.state = None  # byte[] or None
        self.seen = False

    def _load(self):
        return self.matcher.decode(self.state)

    def _store(self, s) -> None:
        self.state = None if s is None else self.matcher.encode(s)

    def prediction(self, t: int, version: str = "v1", packed: bytes | None = b"\x01seg", score: float | None = 0.7):
        p = getattr(self.udf, "LabelMatcher$Prediction")(t, version, packed, score, "1")
        self._store(self.matcher.onPrediction(self._load(), p, self.rec))

    def label(self, t: int, payload: bytes = b'{"label":1}') -> str | None:
        if self.seen:
            return "duplicate"
        self.seen = True
        lab = getattr(self.udf, "LabelMatcher$Label")()
        for name, value in (("eventMs", t), ("label", "1"), ("payload", payload), ("topic", "labels"),
                            ("partition", 0), ("offset", 5_000_000_007)):  # fmt: skip
            set_field(lab, name, value)
        self._store(self.matcher.onFirstLabel(self._load(), lab, self.rec))
        return None

    def watermark(self, wm: int) -> None:
        s = self._load()
        timer = self.matcher.nextTimer(s)
        if s is not None and timer != NO_TIMER and timer <= wm:  # the operator's timer fires
            self._store(self.matcher.onWatermark(s, wm, self.rec))

    def events(self) -> list[str]:
        return list(get_field(self.rec, "events"))


def reference(steps: list[tuple[str, int]]) -> tuple[list[str], int]:
    """The rule in plain Python: verdicts in emission order, and duplicates."""
    preds: list[int] = []  # kept predictions' times
    label: dict | None = None  # the first label while kept
    seen, duplicates, out = False, 0, []
    for what, t in steps:
        if what == "p":
            if label is None:
                preds.append(t)
            elif t - SKEW_MS <= label["t"] <= t + L_MS:
                out.append(f"labelled {t} {label['t']}")
                label["matched"] = True
        elif what == "l":
            if seen:
                duplicates += 1
                continue
            seen = True
            hits = [p for p in preds if p - SKEW_MS <= t <= p + L_MS]
            out += [f"labelled {p} {t}" for p in hits]
            label, preds = {"t": t, "matched": bool(hits)}, []
        else:  # the watermark moves to t
            preds = [p for p in preds if t <= p + L_MS]
            if label is not None and t > label["t"] + SKEW_MS:
                if not label["matched"]:
                    out.append(f"orphan {label['t']}")
                label = None
    return out, duplicates


def run(udf, steps: list[tuple[str, int]]) -> tuple[list[str], int, "Key"]:
    key, duplicates = Key(udf), 0
    for what, t in steps:
        if what == "p":
            key.prediction(t)
        elif what == "l":
            duplicates += key.label(t) == "duplicate"
        else:
            key.watermark(t)
    return key.events(), duplicates, key


def test_label_within_the_skew_before_its_prediction_joins_when_the_prediction_comes(udf):
    events, _, key = run(udf, [("l", 98_000), ("w", 90_000), ("p", 100_000), ("w", 200_000)])
    assert events == ["labelled 100000 98000"] and key.state is None  # nothing left once both expired


def test_unmatched_first_label_is_an_orphan_only_once_no_prediction_can_come(udf):
    events, _, key = run(udf, [("l", 100_000), ("w", 100_000 + SKEW_MS)])
    assert events == []  # a prediction up to the skew after the label may still come
    key.watermark(100_000 + SKEW_MS + 1)
    assert key.events() == ["orphan 100000"] and key.state is None


def test_label_after_the_lateness_is_an_orphan_and_later_labels_are_duplicates(udf):
    events, dups, _ = run(udf, [("p", 0), ("l", L_MS + 1), ("l", 10), ("w", 10 * L_MS)])
    assert events == [f"orphan {L_MS + 1}"] and dups == 1  # the in-range second label does not win


def test_one_label_joins_every_prediction_of_its_key_in_range(udf):
    # Two predictions with one request id (a client retry): the interval join's rule, one
    # labelled row each, also for the one that comes after the label within the skew.
    events, _, _ = run(udf, [("p", 50_000), ("l", 60_000), ("p", 62_000), ("p", 70_000), ("w", 10 * L_MS)])
    assert events == ["labelled 50000 60000", "labelled 62000 60000"]


def test_state_keeps_no_payload_once_matched_and_round_trips_every_field(udf):
    key = Key(udf)
    big = "é" * 70_000  # beyond writeUTF's 64 KiB
    key.prediction(1_000, version=big, packed=bytes(range(256)), score=None)
    s = key.matcher.decode(key.state)
    p = get_field(s, "predictions").get(0)
    assert tuple(get_field(p, f) for f in ("eventMs", "modelVersion", "packed", "score", "predictedLabel")) == (
        1_000,
        big,
        bytes(range(256)),
        None,
        "1",
    )
    key.label(2_000, payload=b"x" * 10_000)
    s = key.matcher.decode(key.state)
    lab = get_field(s, "label")
    assert get_field(lab, "matched") and get_field(lab, "payload") is None and get_field(s, "predictions").size() == 0
    assert len(key.state) < 100  # the matched label's values only: no prediction, no payload
    lone = Key(udf)
    lone.label(3_000, payload=b"y" * 1_000)
    lab = get_field(lone.matcher.decode(lone.state), "label")
    assert tuple(get_field(lab, f) for f in ("topic", "partition", "offset", "payload")) == (
        "labels",
        0,
        5_000_000_007,
        b"y" * 1_000,
    )  # its dead letter


def test_open_prediction_state_is_compact(udf):
    key = Key(udf)
    key.prediction(1_700_000_000_000, packed=b"\x00" * 24)
    s = key.matcher.decode(key.state)
    set_field(s, "timer", 1_700_000_000_000 + L_MS + 1)  # the timer the operator registers for it
    state = key.matcher.encode(s)
    # flags, count, time, version, packed, score, predicted label, timer: what the heap holds per
    # open prediction besides the key, the map entry and its timer (16 bytes of array header
    # make it a 64-byte object).
    assert len(state) <= 48
    assert get_field(key.matcher.decode(state), "timer") == 1_700_000_000_000 + L_MS + 1


def test_state_of_the_older_fixed_width_layout_is_refused_not_misread(udf):
    from py4j.protocol import Py4JJavaError

    older = b"\x00" + (123).to_bytes(8, "big") + b"\x00\x00"  # flags, timer, no predictions
    with pytest.raises(Py4JJavaError, match="older layout"):
        udf.LabelMatcher(L_MS, SKEW_MS).decode(older)


LONGS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5), st.integers(0, 2**42))
OPT_TEXT = st.none() | st.text(max_size=5)
OPT_BYTES = st.none() | st.binary(max_size=5)
OPT_DOUBLE = st.none() | st.floats(allow_nan=False)
OPT_BOOL = st.none() | st.booleans()
PREDICTION_FIELDS = ("eventMs", "modelVersion", "packed", "score", "predictedLabel")
PREDICTION = st.tuples(LONGS, OPT_TEXT, OPT_BYTES, OPT_DOUBLE, OPT_TEXT)
LABEL = st.fixed_dictionaries(
    {
        "eventMs": LONGS,
        "matched": st.booleans(),
        "label": OPT_TEXT,
        "labelValue": OPT_DOUBLE,
        "clicked": OPT_BOOL,
        "converted": OPT_BOOL,
        "revenue": OPT_DOUBLE,
        "topic": OPT_TEXT,
        "partition": st.none() | st.integers(-(2**31), 2**31 - 1),
        # py4j sends an int that fits 32 bits as an Integer, which a Long field refuses; the
        # small values' varints are covered by partition and the times.
        "offset": st.none()
        | st.sampled_from([-(2**63), 2**63 - 1])
        | st.integers(2**31, 2**63 - 1)
        | st.integers(-(2**63), -(2**31) - 1),
        "kafkaTime": st.none() | st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 999_999_999)),
        "payload": OPT_BYTES,
    }
)
DEAD_LETTER_ONLY = ("topic", "partition", "offset", "kafkaTime", "payload")  # not kept once matched


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.none() | LABEL, st.lists(PREDICTION, max_size=3), st.none() | LONGS)
def test_encoding_round_trips_every_field_and_extreme(udf, label, predictions, timer):
    matcher = udf.LabelMatcher(L_MS, SKEW_MS)
    s = getattr(udf, "LabelMatcher$Pending")()
    for p in predictions:
        pred = getattr(udf, "LabelMatcher$Prediction")()
        for name, value in zip(PREDICTION_FIELDS, p, strict=True):
            set_field(pred, name, value)
        get_field(s, "predictions").add(pred)
    if label is not None:
        lab = getattr(udf, "LabelMatcher$Label")()
        for name, value in label.items():
            if name == "kafkaTime" and value is not None:
                value = JVM_TIME.LocalDateTime.ofEpochSecond(value[0], value[1], JVM_TIME.ZoneOffset.UTC)
            set_field(lab, name, value)
        set_field(s, "label", lab)
    set_field(s, "timer", NO_TIMER if timer is None else timer)
    state = matcher.encode(s)
    back = matcher.decode(state)
    assert bytes(matcher.encode(back)) == bytes(state)
    assert get_field(back, "timer") == (NO_TIMER if timer is None else timer)
    got = [tuple(get_field(p, f) for f in PREDICTION_FIELDS) for p in get_field(back, "predictions")]
    assert got == [tuple(p) for p in predictions]
    lab = get_field(back, "label")
    assert (lab is None) == (label is None)
    if label is not None:
        for name, value in label.items():
            v = get_field(lab, name)
            if name == "kafkaTime" and v is not None:
                v = (v.toEpochSecond(JVM_TIME.ZoneOffset.UTC), v.getNano())
            assert v == (None if label["matched"] and name in DEAD_LETTER_ONLY else value), name


STEP = st.one_of(
    st.tuples(st.just("p"), st.integers(0, 3 * L_MS)),
    st.tuples(st.just("l"), st.integers(0, 3 * L_MS)),
    st.tuples(st.just("w"), st.integers(0, 4 * L_MS)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, max_size=12))
def test_matcher_follows_the_rule_on_random_sequences(udf, steps):
    # The watermark only moves forward; a final one far ahead flushes every orphan.
    wm, ordered = -1, []
    for what, t in steps + [("w", 10 * L_MS)]:
        if what == "w":
            if t <= wm:
                continue
            wm = t
        ordered.append((what, t))
    events, dups, key = run(udf, ordered)
    assert (events, dups) == reference(ordered)
    assert key.state is None  # every key's state is freed once the watermark passed it
