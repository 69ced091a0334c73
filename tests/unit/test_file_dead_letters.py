"""Dead letters of a run from JSON-lines files (020_source_file.sql) have no Kafka offset or
timestamp. dead_letters is keyed by (topic, partition, offset) with non-nullable columns: before,
such a row failed the insert (TypeError in the ClickHouse client, the run died) and, had it passed
with a default offset, every dead letter of a file would have replaced the previous one. FinishRows
numbers them per subtask instead."""

from datetime import UTC, datetime

from pyflink.common import Row

from mlvigil.finalize import DEAD_LETTER_COLUMNS
from mlvigil.writer import FinishRows

FIELDS = ["kind", "window_start", "window_end", "model_id", "model_version", "events", "errors",
          "latency_percentiles", "stats", "dl_stream", "dl_kind", "reason_code", "reason", "topic",
          "kafka_partition", "kafka_offset", "kafka_time", "event_ms", "payload"]  # fmt: skip


def dead_letter(offset: int | None, kafka_time: datetime | None, payload: bytes) -> Row:
    values = dict.fromkeys(FIELDS)
    values |= {"kind": "dead_letter", "dl_stream": "labels", "dl_kind": "orphan_label", "reason_code": "orphan_label",
               "reason": "no prediction", "topic": "file:/data/labels.jsonl", "kafka_partition": 0,
               "kafka_offset": offset, "kafka_time": kafka_time, "event_ms": 1_700_000_000_000, "payload": payload}  # fmt: skip
    return Row(**values)


def rows_of(finish: FinishRows, rows: list[Row]) -> list[dict]:
    out = []
    for r in rows:
        for table, batch in finish.flat_map(r):
            assert table == "dead_letters"
            out += [dict(zip(DEAD_LETTER_COLUMNS, row, strict=True)) for row in batch]
    return out


def test_dead_letters_from_files_get_distinct_offsets_per_subtask():
    finish = FinishRows({})
    got = rows_of(finish, [dead_letter(None, None, b"x")] * 3)
    assert [r["offset"] for r in got] == [0, 1, 2]  # identical lines stay three dead letters
    assert all(isinstance(r["kafka_ts"], datetime) and r["kafka_ts"].tzinfo == UTC for r in got)

    second = FinishRows({})
    second.subtask, second.subtasks = 1, 2  # what open() reads from the runtime context
    assert [r["offset"] for r in rows_of(second, [dead_letter(None, None, b"y")] * 3)] == [1, 3, 5]


def test_dead_letters_from_kafka_keep_their_coordinates():
    at = datetime(2026, 12, 1, 12, 0)
    got = rows_of(FinishRows({}), [dead_letter(41, at, b"z"), dead_letter(7, at, b"z")])
    assert [r["offset"] for r in got] == [41, 7]
    assert [r["kafka_ts"] for r in got] == [at.replace(tzinfo=UTC)] * 2
