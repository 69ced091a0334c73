"""mlvigil monitor job: Kafka (features, predictions) -> windowed metrics -> ClickHouse.

Sources, transformations and sinks, plainly:
  sources    features_raw, predictions_raw   Kafka, raw bytes + topic/partition/offset/timestamp
  parse      mlv_parse (Java UDTF)           validate once, pack the monitored columns
  windows    TUMBLE on event time            mlv_window_stats (Java UDAF), PERCENTILE, COUNT
  finish     FinishRows (Python)             PSI, KS, rates from the window's counts
  sinks      ClickHouseWriter (Python)       feature_metrics, service_metrics, window_events,
                                             dead_letters
             Kafka dead-letter topic         every invalid or late event, with its reason
The SQL lives in sql/flink/; per-event work runs in the JVM, Python finishes windows.

Run it with `mlvigil run --config FILE`, or submit it to a cluster:
  flink run -py jobs/monitor.py -pyfs mlvigil -- --config FILE
"""

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # the repo root holds the mlvigil package
    sys.path.insert(0, str(HERE.parent))

from pyflink.common import Configuration, Types  # noqa: E402
from pyflink.common.serialization import SimpleStringSchema  # noqa: E402
from pyflink.datastream import StreamExecutionEnvironment  # noqa: E402
from pyflink.datastream.connectors.kafka import (  # noqa: E402
    DeliveryGuarantee,
    KafkaRecordSerializationSchema,
    KafkaSink,
)
from pyflink.table import StreamTableEnvironment  # noqa: E402

from mlvigil import clickhouse  # noqa: E402
from mlvigil.catalog import CATALOG_PARAM, compile_catalog, encode_catalog  # noqa: E402
from mlvigil.config import Config, load_config  # noqa: E402
from mlvigil.jars import job_jars  # noqa: E402
from mlvigil.writer import ClickHouseWriter, FinishRows, dead_letter_json  # noqa: E402

SQL_DIR = HERE.parent / "sql" / "flink"
STREAMS = ("features", "predictions")
log = logging.getLogger("mlvigil.job")


def kafka_options(cfg: Config, stream: str, stop_offsets: dict[int, int] | None) -> str:
    opts = {
        "connector": "kafka",
        "topic": cfg.topics[stream],
        "properties.bootstrap.servers": cfg.bootstrap_servers,
        "properties.group.id": cfg.group_id,
        "scan.startup.mode": cfg.startup_mode,
        "format": "raw",
    }
    if cfg.startup_mode == "group-offsets":
        opts["properties.auto.offset.reset"] = "earliest"
    for k, v in cfg.kafka_properties.items():
        opts[f"properties.{k}"] = v
    if stop_offsets is not None:
        opts["scan.bounded.mode"] = "specific-offsets"
        opts["scan.bounded.specific-offsets"] = ";".join(
            f"partition:{p},offset:{o}" for p, o in sorted(stop_offsets.items())
        )
    return ", ".join(f"'{k}' = '{v}'" for k, v in opts.items())


def sql_interval(ms: int) -> str:
    """A Flink SQL interval literal for a duration in milliseconds."""
    days, rest = divmod(ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{rest / 1000:06.3f}' DAY TO SECOND(3)"


def sql_statements(name: str, **params: object) -> list[str]:
    text = (SQL_DIR / name).read_text().format(**params)
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    # A statement ends with ";" at the end of a line (option values may contain ";").
    return [s.strip() for s in re.split(r";[ \t]*(?:\n|$)", text) if s.strip()]


def flink_configuration(cfg: Config, catalog_param: str) -> Configuration:
    conf = Configuration()
    conf.set_string("pipeline.jars", ";".join(p.as_uri() for p in job_jars()))
    conf.set_string("python.executable", os.environ.get("MLVIGIL_WORKER_PYTHON", sys.executable))
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("pipeline.global-job-parameters", f"{CATALOG_PARAM}:{catalog_param}")
    conf.set_string("pipeline.object-reuse", "true")
    conf.set_string("parallelism.default", str(cfg.parallelism))
    conf.set_string("table.local-time-zone", "UTC")
    conf.set_string("table.exec.source.idle-timeout", f"{cfg.idle_timeout_ms} ms")
    conf.set_string("execution.checkpointing.interval", f"{cfg.checkpoint_interval_ms} ms")
    conf.set_string("execution.checkpointing.dir", Path(cfg.checkpoint_dir).as_uri())
    conf.set_string("state.backend.type", "hashmap")
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(cfg.restart_attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    return conf


def build(
    cfg: Config,
    stop_offsets: dict[str, dict[int, int]] | None = None,
    source_files: dict[str, str] | None = None,
) -> StreamExecutionEnvironment:
    """The job graph. Sources are Kafka topics, or JSON-lines files when source_files is given."""
    catalog = compile_catalog(cfg)
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(cfg, encode_catalog(catalog)))
    t_env = StreamTableEnvironment.create(env)
    statements = sql_statements("010_functions.sql")
    for stream in STREAMS:
        common = dict(
            stream=stream,
            out_of_orderness=sql_interval(cfg.out_of_orderness_ms),
            min_event_ms=catalog["min_event_ms"],
            max_future_ms=catalog["max_future_ms"],
        )
        if source_files is not None:
            statements += sql_statements("020_source_file.sql", path=Path(source_files[stream]).resolve(), **common)
        else:
            bounded = None if stop_offsets is None else stop_offsets.get(stream, {})
            statements += sql_statements(
                "020_source_kafka.sql", kafka_options=kafka_options(cfg, stream, bounded), **common
            )
        statements += sql_statements("025_parsed.sql", stream=stream)
    statements += sql_statements("030_outputs.sql", window=sql_interval(cfg.window_ms))
    for stmt in statements:
        t_env.execute_sql(stmt)

    outputs = t_env.to_data_stream(t_env.from_path("job_outputs"))
    dead = outputs.filter(lambda r: r["kind"] == "dead_letter").map(dead_letter_json, output_type=Types.STRING())
    dead.sink_to(
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(cfg.topics["dead_letters"])
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("max.request.size", "10485760")
        .build()
    ).name("dead-letter topic")
    (
        outputs.flat_map(FinishRows(catalog), output_type=Types.PICKLED_BYTE_ARRAY())
        .name("finish windows")
        .key_by(lambda _: 0, key_type=Types.INT())
        .process(
            ClickHouseWriter(cfg.clickhouse_url, cfg.clickhouse_database, cfg.flush_interval_ms),
            output_type=Types.LONG(),
        )
        .name("clickhouse writer")
        .set_parallelism(1)
        .print()
        .name("rows written")
        .set_parallelism(1)
    )
    return env


def prepare_store(cfg: Config) -> None:
    """Create the tables and record the profiles this run uses."""
    from mlvigil.finalize import now_utc

    clickhouse.apply_schema(cfg.clickhouse_url, cfg.clickhouse_database)
    now = now_utc()
    rows = [
        [m.model_id, version, p["fingerprint"], json.dumps(p), now]
        for m in cfg.models.values()
        for version, p in m.profiles.items()
    ]
    clickhouse.insert(
        cfg.clickhouse_url,
        "reference_profiles",
        rows,
        ["model_id", "model_version", "fingerprint", "profile", "loaded_at"],
        cfg.clickhouse_database,
    )


def parse_stop_offsets(text: str | None) -> dict[str, dict[int, int]] | None:
    """JSON {"features": {"0": 120, ...}, ...} or a path to such a file."""
    if not text:
        return None
    data = json.loads(Path(text).read_text() if not text.lstrip().startswith("{") else text)
    return {s: {int(p): int(o) for p, o in parts.items()} for s, parts in data.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlvigil run", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="YAML config file")
    ap.add_argument("--clickhouse-url", help="overrides clickhouse.url (chdb:///dir or http://host:8123)")
    ap.add_argument(
        "--stop-offsets",
        help="run bounded: JSON (or a file of it) {stream: {partition: end offset}}; the job ends there",
    )
    ap.add_argument(
        "--source-files",
        help="read JSON-lines files instead of Kafka (bounded): features=PATH,predictions=PATH",
    )
    ap.add_argument("--parallelism", type=int, help="overrides flink.parallelism")
    ap.add_argument("--skip-schema", action="store_true", help="do not create tables (already done)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    overrides: dict = {}
    if args.clickhouse_url:
        overrides["clickhouse"] = {"url": args.clickhouse_url}
    if args.parallelism:
        overrides["flink"] = {"parallelism": args.parallelism}
    cfg = load_config(args.config, overrides)
    if not args.skip_schema:
        prepare_store(cfg)
    files = dict(kv.split("=", 1) for kv in args.source_files.split(",")) if args.source_files else None
    env = build(cfg, parse_stop_offsets(args.stop_offsets), files)
    log.info("starting job: models %s, ClickHouse %s", sorted(cfg.models), clickhouse.redact(cfg.clickhouse_url))
    result = env.execute("mlvigil-monitor")
    print(f"mlvigil: job finished: net runtime {result.get_net_runtime()} ms", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
