"""One definition of the minute tables' retention: the DDL's TTLs and the decoder's too_old bound."""

import re
from pathlib import Path

from mlvigil.catalog import DAY_MS, MAX_EVENT_AGE_MS, MINUTE_RETENTION_DAYS, RETENTION_MARGIN_MS

SQL = Path(__file__).resolve().parents[2] / "sql" / "clickhouse"
MINUTE_TABLES = {"feature_metrics", "service_metrics", "quality_metrics"}


def table_ttls() -> dict[str, str]:
    """table -> its TTL clause, from every CREATE TABLE in sql/clickhouse."""
    out = {}
    for path in sorted(SQL.glob("*.sql")):
        text = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)(.*?);", text, flags=re.S):
            ttl = re.search(r"\bTTL\s+(.+?)\s*$", body.strip(), flags=re.S)
            out[name] = ttl.group(1).strip() if ttl else ""
    return out


def test_minute_tables_keep_what_the_decoder_accepts():
    ttls = table_ttls()
    assert MINUTE_TABLES <= set(ttls)
    for table in MINUTE_TABLES:
        assert ttls[table] == f"toDateTime(window_start) + INTERVAL {MINUTE_RETENTION_DAYS} DAY", table
    # An accepted event's window starts at most a window before it: the margin leaves it a day
    # to close and be written before the TTL, applied at insert, would remove it.
    assert MAX_EVENT_AGE_MS == MINUTE_RETENTION_DAYS * DAY_MS - RETENTION_MARGIN_MS
    assert RETENTION_MARGIN_MS >= 3_600_000


def test_accounting_tables_expire_by_write_time():
    ttls = table_ttls()
    assert ttls["dead_letters"] == "toDateTime(received_at) + INTERVAL 30 DAY"
    assert ttls["window_events"] == f"toDateTime(computed_at) + INTERVAL {MINUTE_RETENTION_DAYS} DAY"
