"""mlvigil monitor job: Kafka (features, predictions, labels) -> windowed metrics -> ClickHouse.

build() declares the graph top to bottom, as in Flink's own examples:
  sources    features_raw, predictions_raw,  Kafka, raw bytes + topic/partition/offset/timestamp
             labels_raw                      (020_source_kafka.sql; JSON-lines files: 020_source_file.sql)
  parse      mlv_parse (Java UDTF)           validate once, pack the monitored columns (025_parsed.sql)
  windows    TUMBLE on event time            mlv_window_stats (Java UDAF), PERCENTILE, COUNT (030_outputs.sql)
  quality    LabelJoin (Java, keyed by       QualityWindows (Java): QualityStatsFunction's statistics
             request): labels to predictions per prediction window, pre-aggregated after the join,
                                             re-emitted as labels arrive (027, 040)
  finish     FinishRows (Python)             PSI, KS, rates, accuracy, ECE... from the counts
  sinks      Kafka dead-letter topic         every invalid or late event, orphan or duplicate
                                             label, with its reason
             AlertProcessor (Python)         rules, detectors, notifications (when alerting is on)
             ClickHouseWriter (Python)       feature_metrics, service_metrics, window_events,
                                             quality_metrics, dead_letters
The SQL lives in sql/flink/; per-event work runs in the JVM, Python finishes windows.

Why every SQL result is one padded union (job_outputs, 19 columns, `kind` says what a row is;
job_stage adds the quality inputs): the planner reads a source once per query, so windows, dead
letters and the quality inputs must come out of one query to read each topic once, and one
stream into Python is one JVM-to-Python hop instead of one per kind of result. With labels the
union is split by stream (features; predictions and labels, 040) and put together again in Java
after the label join and the quality aggregation, still one append stream into Python.

Run it with `mlvigil run --config FILE`, or submit the installed package's copy to a cluster:
  flink run -py "$(mlvigil path job)" -pyexec PYTHON -pyclientexec PYTHON -- --config FILE
(PYTHON: one with mlvigil installed, on every TaskManager host; scripts/cluster.sh does this).
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import traceback
from collections import Counter
from pathlib import Path

import yaml
from py4j.protocol import Py4JError, Py4JJavaError
from pyflink.common import Configuration, Types
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import (
    DeliveryGuarantee,
    KafkaRecordSerializationSchema,
    KafkaSink,
)
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from mlvigil import clickhouse
from mlvigil.alert_operators import AlertInput, AlertProcessor, finish_deliveries
from mlvigil.alerting.rules import load_config as load_alerting_config
from mlvigil.catalog import CATALOG_PARAM, catalog_key, compile_catalog, encode_catalog
from mlvigil.config import Config, load_config
from mlvigil.health import PROMETHEUS_FACTORY, monitor_stream, reporter_on_local_classpath
from mlvigil.jars import MissingJarsError, job_jars
from mlvigil.resources import FLINK_SQL, package_file
from mlvigil.writer import COLUMNS, ClickHouseWriter, FinishRows, dead_letter_json, write_leftovers

LOG_CONFIG = package_file("conf", "log4j-cli.properties")
STREAMS = ("features", "predictions")
LABELS = "labels"
log = logging.getLogger(__name__)


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
    """The statements of sql/flink/NAME with its {placeholders} filled in. Lines starting with
    "--" are comments; a statement ends with ";" at the end of a line (option values may
    contain ";")."""
    statements, current = [], []
    for line in FLINK_SQL.joinpath(name).read_text().format(**params).splitlines():
        if line.strip().startswith("--"):
            continue
        end = line.rstrip().endswith(";")
        current.append(line.rstrip()[:-1] if end else line)
        if end:
            statements.append("\n".join(current).strip())
            current = []
    statements.append("\n".join(current).strip())
    return [s for s in statements if s]


def execute_statements(t_env: StreamTableEnvironment, name: str, **params: object) -> None:
    for stmt in sql_statements(name, **params):
        t_env.execute_sql(stmt)


def execute_as_tables(t_env: StreamTableEnvironment, statements: list[str]) -> None:
    """Runs statements, registering each view as a Table planned once: all readers of such a
    view share one plan node (one copy of its state). A view created with
    SQL is expanded again for every reader, and the planner then never merges the readers'
    copies of a LATERAL TABLE and what lies above it."""
    for stmt in statements:
        words = stmt.split(None, 5)  # CREATE TEMPORARY VIEW name AS query
        if len(words) == 6 and [w.upper() for w in words[:3] + words[4:5]] == ["CREATE", "TEMPORARY", "VIEW", "AS"]:
            t_env.create_temporary_view(words[3], t_env.sql_query(words[5]))
        else:
            t_env.execute_sql(stmt)


# G1 policy for the local JVM: collect rather than grow the heap while collections take under a
# fifth of the time (GCTimeRatio 4; G1's default is 12), and give back memory above 30 % free.
# Measured (500 k requests + labels): the JVM's peak RSS 1.3 GB with a 2 GB cap and this policy,
# 1.7 GB with the cap alone, 3.5 GB with neither, at the same CPU; about 5 % more CPU on the
# 2 M-request data-layer run (bench/quality.py, bench/throughput.py).
LOCAL_GC_ARGS = ("-XX:GCTimeRatio=4", "-XX:MaxHeapFreeRatio=30", "-XX:MinHeapFreeRatio=10")


def local_jvm_args(cfg: Config, environ: dict[str, str] = os.environ) -> None:
    """The local JVM's heap cap (flink.local_heap) and GC policy, in JVM_ARGS, which PyFlink's
    gateway reads when it starts the JVM for the mini-cluster (no effect under `flink run`, whose
    JVM runs already). An operator's own options in JVM_ARGS win. Out of heap, the JVM exits at
    once: the run fails loudly instead of a task thread dying in a JVM that can no longer work."""
    args = environ.get("JVM_ARGS", "").split()
    own = {a.split("=")[0].split(":")[-1].lstrip("+-") for a in args}
    if not any(a.startswith("-Xmx") for a in args):
        args.append(f"-Xmx{cfg.local_heap}")
    for arg in (*LOCAL_GC_ARGS, "-XX:+ExitOnOutOfMemoryError"):
        if arg.split("=")[0].split(":")[-1].lstrip("+-") not in own:
            args.append(arg)
    environ["JVM_ARGS"] = " ".join(args)


def flink_configuration(cfg: Config, catalog_param: str, restore: str | None = None) -> Configuration:
    local_jvm_args(cfg)  # before Configuration() starts the JVM
    if cfg.prometheus_port:
        reporter_on_local_classpath()  # before Configuration() starts the JVM
    conf = Configuration()
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
    if cfg.restart_attempts > 0:
        # Backs off 1 s, 2 s, 4 s ... up to 1 min between restarts; after 10 healthy minutes the
        # count starts again, so rare faults over a long run never use the attempts up.
        conf.set_string("restart-strategy.type", "exponential-delay")
        conf.set_string("restart-strategy.exponential-delay.attempts-before-reset-backoff", str(cfg.restart_attempts))
        conf.set_string("restart-strategy.exponential-delay.initial-backoff", "1 s")
        conf.set_string("restart-strategy.exponential-delay.backoff-multiplier", "2.0")
        conf.set_string("restart-strategy.exponential-delay.max-backoff", "1 min")
        conf.set_string("restart-strategy.exponential-delay.reset-backoff-threshold", "10 min")
        conf.set_string("restart-strategy.exponential-delay.jitter-factor", "0.1")
    else:
        conf.set_string("restart-strategy.type", "none")  # restart_attempts: 0 = fail at the first fault
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    # While the store is unavailable the writer waits (backpressure) and a checkpoint cannot pass
    # it; it expires after execution.checkpointing.timeout (10 min). Flink's default (0 tolerated)
    # would then fail the job, so a long store outage or a full checkpoint disk must not count.
    conf.set_string("execution.checkpointing.tolerable-failed-checkpoints", str(2**31 - 1))
    if cfg.state_backend == "rocksdb":
        conf.set_string("state.backend.type", "rocksdb")
        conf.set_string("execution.checkpointing.incremental", "true")
    if restore:
        conf.set_string("execution.state-recovery.path", restore)
    if cfg.prometheus_port:  # the monitor's own health, scraped by Prometheus (mlvigil/health.py)
        conf.set_string("metrics.reporter.prom.factory.class", PROMETHEUS_FACTORY)
        conf.set_string("metrics.reporter.prom.port", cfg.prometheus_port)
    for key, value in cfg.flink_conf.items():
        conf.set_string(key, value)
    return conf


def latest_checkpoint(checkpoint_dir: str | Path) -> Path:
    """The newest completed checkpoint (a chk-N directory with _metadata) under checkpoint_dir."""
    done = [m.parent for m in Path(checkpoint_dir).glob("*/chk-*/_metadata")]
    if not done:
        raise FileNotFoundError(f"no completed checkpoint under {checkpoint_dir}")
    return max(done, key=lambda d: (d.stat().st_mtime, int(d.name.split("-")[1])))


def build(
    cfg: Config,
    stop_offsets: dict[str, dict[int, int]] | None = None,
    source_files: dict[str, str] | None = None,
    restore: str | None = None,
) -> StreamExecutionEnvironment:
    """The job graph. Sources are Kafka topics, or JSON-lines files when source_files is given
    (the labels stream only when a labels file is given). restore: a checkpoint to resume from."""
    catalog = compile_catalog(cfg)
    encoded_catalog = encode_catalog(catalog)
    quality = cfg.quality_enabled and (source_files is None or LABELS in source_files)
    if quality != cfg.quality_enabled:
        cfg = dataclasses.replace(cfg, quality_enabled=quality)
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(cfg, encoded_catalog, restore))
    # add_jars appends to pipeline.jars, where `flink run` has put flink-python already.
    env.add_jars(*(p.as_uri() for p in job_jars()))
    t_env = StreamTableEnvironment.create(env)

    execute_statements(t_env, "010_functions.sql")
    for stream in STREAMS + ((LABELS,) if quality else ()):
        declare_source(t_env, cfg, stream, encoded_catalog, stop_offsets, source_files)
        # The parsed view as a planned Table: the windows and the dead letters then read one
        # mlv_parse correlate per stream instead of one each (a row conversion less per event).
        execute_as_tables(t_env, sql_statements("025_parsed.sql", stream=stream))
    outputs = job_outputs(t_env, cfg, quality)

    if source_files is None:  # from files (benchmarks, backfills) no broker need exist: ClickHouse keeps them
        dead_letters_to_kafka(outputs, cfg)
    finished = outputs.flat_map(FinishRows(catalog), output_type=Types.PICKLED_BYTE_ARRAY()).name("finish windows")
    alerting = alerting_config(cfg)
    if alerting is not None:
        alerts(finished, cfg, catalog, alerting)
    metrics_to_clickhouse(finished, cfg)
    return env


def declare_source(
    t_env: StreamTableEnvironment,
    cfg: Config,
    stream: str,
    encoded_catalog: str,
    stop_offsets: dict[str, dict[int, int]] | None,
    source_files: dict[str, str] | None,
) -> None:
    """The table {stream}_raw: the stream's Kafka topic, or its JSON-lines file."""
    common = dict(
        stream=stream, out_of_orderness=sql_interval(cfg.out_of_orderness_ms), catalog_key=catalog_key(encoded_catalog)
    )
    if source_files is not None:
        execute_statements(t_env, "020_source_file.sql", path=Path(source_files[stream]).resolve(), **common)
        return
    # A bounded run without offsets for a stream reads none of it (partition 0 stops at 0;
    # partitions not listed stop where they start, at the earliest offset).
    bounded = None if stop_offsets is None else stop_offsets.get(stream) or {0: 0}
    execute_statements(t_env, "020_source_kafka.sql", kafka_options=kafka_options(cfg, stream, bounded), **common)


def job_outputs(t_env: StreamTableEnvironment, cfg: Config, quality: bool) -> DataStream:
    """Windows, dead letters and (with labels) model quality, as one append stream of rows in
    job_outputs' columns (kind says which). A quality window's row is re-emitted as its labels
    arrive, with a growing `events` (ClickHouse keeps the row with the largest)."""
    if quality:
        quality_sql = dict(
            lateness=sql_interval(cfg.label_lateness_ms), skew=sql_interval(cfg.label_skew_ms), window_ms=cfg.window_ms
        )
        execute_as_tables(t_env, sql_statements("027_quality.sql", **quality_sql))
    execute_statements(
        t_env,
        "030_outputs.sql",
        window=sql_interval(cfg.window_ms),
        quality_branch="UNION ALL\nSELECT * FROM quality_outputs" if quality else "",
    )
    if not quality:
        return t_env.to_data_stream(t_env.from_path("job_outputs"))
    # One planning stage, two tables (every source read once): job_stage (predictions and labels)
    # and the features stream's outputs, as DataStreams of objects. QualityWindows
    # (udfs/java/.../QualityWindows.java) joins the labels (LabelJoin, keyed by model_id and
    # request_id), aggregates the quality windows and returns everything in job_outputs' columns,
    # of the features DataStream's type.
    execute_as_tables(t_env, sql_statements("040_quality_stage.sql"))
    stage = t_env.to_data_stream(t_env.from_path("job_stage"))
    features = t_env.to_data_stream(t_env.from_path("job_outputs_features"))
    outputs = get_gateway().jvm.io.mlvigil.udf.QualityWindows.apply(
        stage._j_data_stream,
        features._j_data_stream,
        cfg.label_lateness_ms,
        cfg.label_skew_ms,
        cfg.window_ms,
        cfg.label_state_ttl_ms,
    )
    return DataStream(outputs)


def dead_letters_to_kafka(outputs: DataStream, cfg: Config) -> None:
    """Sink: every dead letter as JSON (dead_letter_json) to the dead-letter topic, at least once."""
    max_dead_letter_bytes = cfg.max_dead_letter_bytes
    dead = outputs.filter(lambda r: r["kind"] == "dead_letter").map(
        lambda r: dead_letter_json(r, max_dead_letter_bytes), output_type=Types.STRING()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(cfg.topics["dead_letters"])
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        # Every dead letter is at most limits.max_dead_letter_bytes (dead_letter_json), below this.
        .set_property("max.request.size", str(max(10_485_760, 2 * max_dead_letter_bytes)))
    )
    # The same client properties as the sources (SASL/TLS: without them the producer cannot
    # authenticate on a secured cluster); secrets stay ${env:VAR} references (config.py).
    for key, value in cfg.kafka_properties.items():
        sink = sink.set_property(key, value)
    dead.sink_to(sink.build()).name("dead-letter topic")


def alerts(finished: DataStream, cfg: Config, catalog: dict, alerting: dict) -> None:
    """Sink: the alert rules over every finished window, plus the monitor's own "no data" and
    "monitor degraded" signals, keyed by model; AlertProcessor stores and delivers notifications."""
    (
        finished.flat_map(AlertInput(catalog, COLUMNS), output_type=Types.PICKLED_BYTE_ARRAY())
        .name("alert input")
        .union(monitor_stream(finished, catalog, cfg.window_ms))
        .key_by(lambda v: v[0], key_type=Types.STRING())
        .process(AlertProcessor(alerting, cfg.clickhouse_url, cfg.clickhouse_database))
        .name("alerts")
    )


def metrics_to_clickhouse(finished: DataStream, cfg: Config) -> None:
    """Sink: every finished row to ClickHouse, through one writer (chDB allows one process per
    directory). It logs each flush itself; its output (rows per flush) goes nowhere."""
    (
        finished.key_by(lambda _: 0, key_type=Types.INT())
        .process(
            ClickHouseWriter(
                cfg.clickhouse_url, cfg.clickhouse_database, cfg.flush_interval_ms, cfg.clickhouse_give_up_after_ms
            ),
            output_type=Types.LONG(),
        )
        .name("clickhouse writer")
        .set_parallelism(1)
    )


def alerting_config(cfg: Config) -> dict | None:
    """The `alerting` section: inline, or a path to an alerting YAML (relative to the config).
    Absent: the article's default rules, stored only. `alerting: false` turns alerting off.
    The section goes into the job graph (inside AlertProcessor) with its ${ENV} references as
    text; they are expanded where the operator opens. It is loaded once here only to fail at
    start-up on a bad rule or an unset variable (that expanded copy is dropped)."""
    raw = cfg.raw.get("alerting", {"use_default_rules": True})
    if raw is False:
        return None
    if isinstance(raw, str):
        path = Path(raw)
        if not path.is_absolute() and cfg.source_path is not None:
            path = cfg.source_path.parent / path
        raw = yaml.safe_load(path.read_text())
    load_alerting_config(raw or {"use_default_rules": True})
    return raw


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


def use_log_config() -> None:
    """Local mode: the Flink JVM that PyFlink starts from this process logs with conf/log4j-cli.properties
    (the wheel's, plus Beam's loggers that print the Python workers' environment, secrets and
    all, turned down). An operator's own LOG4J_PROPERTIES wins, with a warning if it lacks that.
    Must run before anything starts the JVM. On a cluster the daemons' FLINK_CONF_DIR decides
    (scripts/cluster.sh installs conf/)."""
    own = os.environ.setdefault("LOG4J_PROPERTIES", str(LOG_CONFIG))
    if own != str(LOG_CONFIG) and "DefaultJobBundleFactory" not in Path(own).read_text(errors="replace"):
        log.warning(
            "LOG4J_PROPERTIES=%s does not quiet org.apache.beam.runners.fnexecution.control.DefaultJobBundleFactory: "
            "the Python workers' environment (secrets included) will be logged; see %s",
            own,
            LOG_CONFIG,
        )


JVM_GONE = (
    " (the Flink JVM is gone: if its output above says OutOfMemoryError, raise flink.local_heap or use "
    "flink.state_backend: rocksdb, then resume with --restore latest)"
)

RESTORE_BOUNDED = (
    "--restore cannot be combined with --stop-offsets: a Kafka source restored from a checkpoint never "
    "ends (flink-connector-kafka 4.0.1, FLINK-31006), so the run would hang without writing its last "
    "windows. Either restore without --stop-offsets (the job then runs unbounded: stop it once the "
    "windows you need are in ClickHouse), or run the bounded range again from its start without "
    "--restore (kafka.startup_mode: earliest-offset; rewritten windows replace their rows by key)."
)


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
        help="read JSON-lines files instead of Kafka (bounded): features=PATH,predictions=PATH[,labels=PATH]",
    )
    ap.add_argument("--parallelism", type=int, help="overrides flink.parallelism")
    ap.add_argument("--skip-schema", action="store_true", help="do not create tables (already done)")
    ap.add_argument(
        "--restore",
        help="resume from a retained checkpoint: a chk-N directory, or 'latest' for the newest under flink.checkpoint_dir",
    )
    args = ap.parse_args(argv)
    if args.restore and args.stop_offsets:
        ap.error(RESTORE_BOUNDED)
    try:
        job_jars()  # before anything is written: a missing jar is named with the command that provides it
    except MissingJarsError as e:
        print(f"mlvigil run: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    use_log_config()
    overrides: dict = {}
    if args.clickhouse_url:
        overrides["clickhouse"] = {"url": args.clickhouse_url}
    if args.parallelism:
        overrides["flink"] = {"parallelism": args.parallelism}
    cfg = load_config(args.config, overrides)
    if not args.skip_schema:
        prepare_store(cfg)
    files = dict(kv.split("=", 1) for kv in args.source_files.split(",")) if args.source_files else None
    restore = args.restore
    if restore == "latest":
        restore = str(latest_checkpoint(cfg.checkpoint_dir))
    if restore:
        log.info("restoring from checkpoint %s", restore)
    env = build(cfg, parse_stop_offsets(args.stop_offsets), files, restore)
    log.info(
        "starting job: models %s, ClickHouse %s, mlvigil from %s",
        sorted(cfg.models),
        clickhouse.redact(cfg.clickhouse_url),
        package_file(),
    )
    try:
        result = env.execute("mlvigil-monitor")
    except BaseException as e:  # noqa: BLE001 - any end but success is a failed run
        # Leave at once: when the Flink JVM itself died (out of heap, killed), the Python workers'
        # gRPC threads never end, and a normal interpreter exit would wait for them for ever.
        # Printed, not logged: in local mode the Python workers own the logging handlers by now.
        traceback.print_exc()
        jvm_gone = isinstance(e, Py4JError) and not isinstance(e, Py4JJavaError)  # no Java exception came back
        print(f"mlvigil: the job failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
              f"{JVM_GONE if jvm_gone else ''}", file=sys.stderr, flush=True)  # fmt: skip
        sys.stdout.flush()
        os._exit(1)
    leftovers = write_leftovers()  # the end of a bounded run: see ClickHouseWriter
    if leftovers:  # printed: in local mode the Python workers own the logging handlers by now
        print(f"mlvigil: wrote {leftovers} rows left at the end of the input", file=sys.stderr, flush=True)
    undelivered = finish_deliveries()  # like write_leftovers: the alert operators ran in this process
    if undelivered:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(Counter(undelivered.values()).items()))
        print(f"mlvigil: {len(undelivered)} notifications were not delivered ({reasons}); see the alert_deliveries table",
              file=sys.stderr, flush=True)  # fmt: skip
    try:
        print(f"mlvigil: job finished: net runtime {result.get_net_runtime()} ms", file=sys.stderr, flush=True)
    except Exception:  # detached submission (flink run -d): no result to report
        pass
    # Leave without the interpreter's teardown: chDB's native shutdown, after Python operators
    # ran in this process (Flink's local mode), can crash on exit although all work is done.
    # The Flink JVM goes with us (it watches its parent process).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if undelivered else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
