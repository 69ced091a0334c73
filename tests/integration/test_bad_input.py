"""Bad input through the real broker and job (one produced stream, one job run, no restarts).

Features: valid traffic, and before it, every fault that once stalled, poisoned or killed the
job: far-future events of an unknown model or with `event_time` twice (they made every later
event late), a 4.5 MB message (its dead letter killed the job), a big invalid message whose
dead letter escapes to several MB, and events 30 minutes, 1 day, 120 days and 1 year old with
matching Kafka timestamps (old ones vanished at insert under the 90-day TTL). Predictions:
valid traffic mixed with seeded fuzz (random bytes, mutated events). With restart_attempts 0 any
dead-letter send error fails the job, so the job finishing is part of the proof.

Checked from ClickHouse: counted in windows + dead letters (invalid and late) = produced, per
stream, exactly; no valid feature event is late; each fault has its reason code; the dead-letter
topic carries the same dead letters, none over limits.max_dead_letter_bytes.
"""

import hashlib
import json
import random
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from mlvigil import clickhouse, synth
from mlvigil.broker import consume, partition_of, produce
from mlvigil.catalog import REASON_CODES

from ..conftest import JobProcess
from .helpers import messages, write_config

pytestmark = pytest.mark.integration
MIN = 60_000
DAY = 86_400_000
MAX_DEAD_LETTER = 1_000_000


def _event(rid: str, event_time, model: str = "recsys", **extra) -> dict:
    return {"request_id": rid, "model_id": model, "model_version": "v1", "event_time": event_time,
            "segments": {"user_type": "new", "region": "eu"},
            "features": {"age": 31, "browsing_duration": 9.5, "items_viewed": 3, "price_sensitivity": 0.4,
                         "device": "ios"}, **extra}  # fmt: skip


def _big_produce(bootstrap: str, topic: str, messages: list[tuple]) -> dict[int, int]:
    """Like broker.produce, with the client's message limit raised (librdkafka refuses > 1 MB)."""
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 10_000_000, "acks": "all",
                  "enable.idempotence": False, "compression.type": "none"})  # fmt: skip
    end, errors = {i: 0 for i in range(4)}, []

    def done(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            end[msg.partition()] = max(end[msg.partition()], msg.offset() + 1)

    for key, value, ts in messages:
        p.produce(topic, value=value, key=key, partition=partition_of(key, 0, 4), on_delivery=done,
                  **({"timestamp": ts} if ts else {}))  # fmt: skip
        p.flush(60)  # one at a time: their order on the partition is the order given
    assert not errors, errors
    return end


def _fuzz(rng: random.Random, valid: list[dict], n: int) -> list[bytes]:
    """Seeded bad input for the predictions stream: bytes, truncations, flips, wrong types, dups."""
    out = []
    for i in range(n):
        base = orjson.dumps(dict(rng.choice(valid), request_id=f"fuzz-{i}"))
        kind = i % 8
        if kind == 0:
            out.append(rng.randbytes(rng.randint(0, 200)))
        elif kind == 1:
            out.append(base[: rng.randint(0, len(base) - 1)])
        elif kind == 2:
            b = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            out.append(bytes(b))
        elif kind == 3:
            field = rng.choice(["score", "latency_ms", "status", "event_time", "model_id", "probabilities"])
            doc = json.loads(base)
            doc[field] = rng.choice([[1, 2], {"a": 1}, "x", True, -1e308, None, 10**25])
            out.append(json.dumps(doc).encode())
        elif kind == 4:
            out.append(base[:-1] + b', "score": 0.5}')  # duplicate key when score exists, else valid
        elif kind == 5:
            out.append(b"[" * rng.randint(1, 3000))
        elif kind == 6:
            out.append(base.replace(b'"event_time":', b'"event_time":' + rng.choice([b"-", b"1e", b"0"])))
        else:
            out.append(base.replace(b"{", b'{"nested": ' + b'{"a":' * 600 + b"1" + b"}" * 600 + b",", 1))
    return out


def test_bad_input_cannot_stall_poison_or_kill_the_stream(broker, topics, tmp_path):
    now = int(time.time() * 1000)
    start = (now // MIN - 8) * MIN
    url = f"chdb://{tmp_path / 'ch'}"
    config = write_config(
        tmp_path / "config.yaml", broker, topics, synth.save_profiles(tmp_path, 5000).models, url,
        kafka={"group_id": topics["features"]},
        window={"size": "1m", "out_of_orderness": "5s", "idle_timeout": "1h"},
        clickhouse={"flush_interval": "200ms"},
        flink={"parallelism": 1},
        labels={"enabled": False},
    )  # fmt: skip

    ahead = now + 20 * 3600_000
    poison = [
        _event("poison-unknown-1", ahead, model="nope"),
        _event("poison-unknown-2", ahead + 1000, model="nope"),
    ]
    poison_bytes = [orjson.dumps(e) for e in poison] + [
        # event_time twice: the old watermark column read the first, the parser kept the last.
        orjson.dumps(_event("poison-dup-1", ahead))[:-1] + f', "event_time": {start + 1000}}}'.encode(),
        orjson.dumps(_event("poison-dup-2", start + 1000))[:-1] + f', "event_time": {ahead}}}'.encode(),
        orjson.dumps(_event("future-2d", now + 2 * DAY)),
        # Lone UTF-16 surrogates (legal JSON escapes, not text) in fields a dead letter carries.
        b'{"request_id": "surrogate-\\ud800", "model_id": "\\udc00nope", "model_version": "v1", "event_time": '
        + str(start + 1500).encode()
        + b', "features": {}}',
    ]
    # A valid event with a lone surrogate in a segment value (carried into the window statistics).
    surrogate_seg = orjson.dumps(_event("surrogate-seg", start + 1500)).replace(b'"eu"', b'"eu\\udfff"')
    old = {"old-30m": now - 30 * MIN, "old-1d": now - DAY, "old-120d": now - 120 * DAY, "old-1y": now - 365 * DAY}
    huge = random.Random(3).randbytes(4_500_000)
    # An invalid message under the size limit whose dead letter escapes to about 2.4 MB of JSON.
    escapes = (
        orjson.dumps(_event("escapes", start + 2000, model="nope"))[:-1] + b', "blob": "' + b"\x01" * 400_000 + b'"}'
    )
    t = synth.traffic(start, 3, 100, seed=21)
    valid_f = messages(t.features)

    # Features: poison and the big ones first, then the traffic, then the old events.
    f_ends = [
        produce(broker.bootstrap, topics["features"], [(f"p{i}".encode(), b, None) for i, b in enumerate(poison_bytes)]),
        _big_produce(broker.bootstrap, topics["features"], [(b"huge", huge, None), (b"escapes", escapes, None)]),
        # surrogate-seg (minute 0) ahead of the traffic: after it, it could be late (its partition's
        # watermark past minute 0 by then, depending on when the watermark is emitted).
        produce(broker.bootstrap, topics["features"], [(b"surrogate-seg", surrogate_seg, None)] + valid_f),
        produce(broker.bootstrap, topics["features"], [(rid.encode(), orjson.dumps(_event(rid, ms)), max(ms, now - 365 * DAY))
                                                       for rid, ms in old.items()]),
    ]  # fmt: skip
    n_features = len(poison_bytes) + 2 + len(valid_f) + 1 + len(old)
    # Predictions: the traffic in its order, with fuzz inserted at random places.
    rng = random.Random(8)
    mixed = messages(t.predictions)
    for i, b in enumerate(_fuzz(rng, t.predictions, 240)):
        mixed.insert(rng.randint(0, len(mixed)), (f"z{i}".encode(), b, None))
    p_end = produce(broker.bootstrap, topics["predictions"], mixed)
    stop = {"features": {str(p): max(e[p] for e in f_ends) for p in range(4)},
            "predictions": {str(p): o for p, o in p_end.items()}}  # fmt: skip
    assert sum(stop["features"].values()) == n_features and sum(p_end.values()) == len(mixed)

    job = JobProcess(config, stop, tmp_path / "job.log")
    try:
        job.wait(300)
    finally:
        job.kill()

    counted = dict(
        clickhouse.query_rows(url, "SELECT stream, sum(events) FROM mlvigil.window_events FINAL GROUP BY stream")
    )
    dead = clickhouse.query_rows(
        url, "SELECT stream, kind, reason_code, reason, payload, offset FROM mlvigil.dead_letters FINAL"
    )
    dead_by_stream = Counter(r[0] for r in dead)
    # 1. Accounting, exactly: counted + dead letters (invalid and late) = produced.
    assert counted["features"] + dead_by_stream["features"] == n_features
    assert counted["predictions"] + dead_by_stream["predictions"] == len(mixed)
    assert all(r[2] in REASON_CODES for r in dead), Counter(r[2] for r in dead)

    # 2. No valid feature event became late: the poison never moved the watermark.
    f_dead = {}
    for r in dead:
        if r[0] == "features":
            try:
                f_dead[json.loads(r[4], strict=False)["request_id"]] = r[2]
            except ValueError:
                f_dead[r[3][:30]] = r[2]  # the random-bytes message: not JSON
    traffic_dead = {rid: code for rid, code in f_dead.items() if rid.startswith(("recsys-", "fraud-"))}
    assert traffic_dead == {}, Counter(traffic_dead.values())
    assert f_dead["poison-unknown-1"] == f_dead["poison-unknown-2"] == "unknown_model"
    assert f_dead["poison-dup-1"] == f_dead["poison-dup-2"] == "duplicate_key"
    assert f_dead["future-2d"] == "absurd_timestamp"
    assert [c for rid, c in f_dead.items() if rid.startswith("surrogate-")] == ["unknown_model"]
    assert f_dead["escapes"] == "malformed_json"  # raw control characters in a JSON string

    # 3. Old events: too_old beyond the retention (their dead letters kept despite year-old Kafka
    # timestamps); recent ones counted or late, never lost.
    assert f_dead["old-120d"] == f_dead["old-1y"] == "too_old"
    for rid in ("old-30m", "old-1d"):
        assert f_dead.get(rid) in (None, "late")
    late_old = sum(1 for rid in ("old-30m", "old-1d") if rid in f_dead)
    assert counted["features"] == len(valid_f) + 1 + 2 - late_old  # traffic, surrogate-seg, old ones on time

    # 4. The 4.5 MB message: one too_large dead letter with its length, hash and a bounded prefix.
    (too_large,) = [r for r in dead if r[2] == "too_large"]
    assert str(len(huge)) in too_large[3] and hashlib.sha256(huge).hexdigest() in too_large[3]
    assert len(too_large[4].encode("utf-8", errors="surrogatepass")) <= 3 * 4096

    # 5. The dead-letter topic carries every dead letter, each within the limit; the big one's
    # payload is cut there (ClickHouse keeps it whole for replay).
    topic_letters = consume(broker.bootstrap, topics["dead_letters"], len(dead))
    assert len(topic_letters) == len(dead)
    assert max(len(v) for v in topic_letters) <= MAX_DEAD_LETTER
    assert Counter((d["stream"], d["reason_code"]) for d in map(json.loads, topic_letters)) == Counter(
        (r[0], r[2]) for r in dead
    )
    (esc,) = [json.loads(v) for v in topic_letters if b'"payload_truncated":true' in v]
    assert esc["payload_length"] == len(escapes) and esc["payload_sha256"] == hashlib.sha256(escapes).hexdigest()
    (esc_row,) = [r for r in dead if r[4].startswith('{"request_id":"escapes"')]
    assert len(esc_row[4]) == len(escapes)
