"""Configuration: durations, ${ENV} expansion, paths relative to the config file, defaults."""

import json
import os
from pathlib import Path

import pytest
import yaml

from mlvigil.config import DEFAULT_TOPICS, duration_ms, load_config, parse_config
from mlvigil.profile import build_profile, load_profile, save_profile


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("1m", 60_000),
        ("5min", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        (" 10 s ", 10_000),
        ("45", 45_000),  # no unit: seconds
        ("1.5s", 1_500),
        ("0.25m", 15_000),
        # Decimal fractions are exact (float arithmetic gave 1000, 245999, 2009).
        ("1.001s", 1_001),
        ("4.1m", 246_000),
        (2.01, 2_010),
        (30, 30_000),
        (0.25, 250),
        (0, 0),
    ],
)
def test_durations(value, ms):
    assert duration_ms(value) == ms
    assert isinstance(duration_ms(value), int)


def test_duration_fractions_of_ms_are_dropped():
    assert duration_ms("1.9ms") == 1


@pytest.mark.parametrize("value", ["10 parsecs", "-5s", "", "s", "1e3s", "ten seconds", True])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        duration_ms(value)


@pytest.fixture
def setup(tmp_path):
    """A profile in <tmp>/profiles and an empty config folder <tmp>/conf."""
    profile = build_profile({"x": [1.0, 2.0, 3.0, 4.0]}, "recsys", "v1")
    save_profile(profile, tmp_path / "profiles" / "recsys-v1.json")
    (tmp_path / "conf").mkdir()
    return tmp_path, profile


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def minimal(profile_path: str = "../profiles/recsys-v1.json") -> dict:
    return {"models": {"recsys": {"profiles": {"v1": profile_path}}}}


def test_defaults(setup, monkeypatch):
    root, profile = setup
    monkeypatch.chdir(root)
    cfg = load_config(write_config(root / "conf" / "mlvigil.yaml", minimal()))
    assert cfg.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.topics == DEFAULT_TOPICS
    assert cfg.group_id == "mlvigil"
    assert cfg.startup_mode == "group-offsets"
    assert cfg.kafka_properties == {}
    assert cfg.window_ms == 60 * 1000
    assert cfg.out_of_orderness_ms == 5 * 1000
    assert cfg.idle_timeout_ms == 30 * 1000
    assert cfg.max_future_ms == 24 * 3600 * 1000
    assert cfg.max_latency_ms == 3600 * 1000.0
    assert cfg.max_segment_values == 100
    assert cfg.clickhouse_database == "mlvigil"
    assert cfg.parallelism == 1
    assert cfg.checkpoint_interval_ms == 10 * 1000
    assert cfg.flush_interval_ms == 500
    assert cfg.restart_attempts == 3
    assert cfg.local_heap == "2g"
    assert cfg.source_path == root / "conf" / "mlvigil.yaml"
    m = cfg.models["recsys"]
    assert m.model_id == "recsys" and m.segments == []
    assert m.profiles == {"v1": profile}


def test_values_from_file(setup):
    root, _ = setup
    raw = {
        **minimal(),
        "kafka": {"bootstrap_servers": "kafka:9092", "topics": {"features": "f"}, "properties": {"linger.ms": 5}},
        "window": {"size": "10s", "out_of_orderness": "250ms"},
        "limits": {"max_future": "2h", "max_segment_values": 7},
        "flink": {"parallelism": 2},
    }
    raw["models"]["recsys"]["segments"] = ["region", "user_type"]
    cfg = load_config(write_config(root / "conf" / "c.yaml", raw))
    assert cfg.bootstrap_servers == "kafka:9092"
    assert cfg.topics == {**DEFAULT_TOPICS, "features": "f"}
    assert cfg.kafka_properties == {"linger.ms": "5"}
    assert (cfg.window_ms, cfg.out_of_orderness_ms, cfg.idle_timeout_ms) == (10_000, 250, 30_000)
    assert cfg.max_future_ms == 7_200_000 and cfg.max_segment_values == 7
    assert cfg.parallelism == 2
    assert cfg.models["recsys"].segments == ["region", "user_type"]


def test_flink_options_pass_through_last(setup, monkeypatch):
    """flink.conf reaches the job's Flink configuration as given, over mlvigil's own settings."""
    from mlvigil.jobs.monitor import flink_configuration

    monkeypatch.setenv("JVM_ARGS", "")  # flink_configuration sets it for a local JVM: restored after
    root, _ = setup
    raw = {
        **minimal(),
        "flink": {"state_backend": "rocksdb", "conf": {"rest.port": 8089, "state.backend.type": "hashmap"}},
    }
    cfg = load_config(write_config(root / "conf" / "c.yaml", raw))
    assert cfg.flink_conf == {"rest.port": "8089", "state.backend.type": "hashmap"}
    conf = flink_configuration(cfg, "catalog")
    assert conf.get_string("rest.port", "") == "8089"
    assert conf.get_string("state.backend.type", "") == "hashmap"  # the user's word wins
    assert conf.get_string("execution.checkpointing.incremental", "") == "true"  # from state_backend: rocksdb


@pytest.mark.parametrize(("value", "size"), [("1536m", "1536m"), ("4G", "4g"), (" 512k ", "512k")])
def test_local_heap_sizes(setup, value, size):
    root, _ = setup
    cfg = load_config(write_config(root / "conf" / "c.yaml", {**minimal(), "flink": {"local_heap": value}}))
    assert cfg.local_heap == size


@pytest.mark.parametrize("value", ["2 GB", "0g", "-1g", "1.5g", 2, "2"])
def test_bad_local_heap_sizes_are_refused(setup, value):
    root, _ = setup
    with pytest.raises(ValueError, match="flink.local_heap"):
        load_config(write_config(root / "conf" / "c.yaml", {**minimal(), "flink": {"local_heap": value}}))


def test_local_jvm_args_cap_the_heap_and_exit_on_oom_unless_the_operator_says_otherwise(setup):
    from mlvigil.jobs.monitor import LOCAL_GC_ARGS, local_jvm_args

    root, _ = setup
    cfg = load_config(write_config(root / "conf" / "c.yaml", {**minimal(), "flink": {"local_heap": "3g"}}))
    environ: dict[str, str] = {}
    local_jvm_args(cfg, environ)
    assert environ["JVM_ARGS"].split() == ["-Xmx3g", *LOCAL_GC_ARGS, "-XX:+ExitOnOutOfMemoryError"]
    environ = {"JVM_ARGS": "-Dx=1 -Xmx8g -XX:GCTimeRatio=9 -XX:-ExitOnOutOfMemoryError"}
    local_jvm_args(cfg, environ)
    args = environ["JVM_ARGS"].split()
    assert args[:4] == ["-Dx=1", "-Xmx8g", "-XX:GCTimeRatio=9", "-XX:-ExitOnOutOfMemoryError"]
    assert not any(a.startswith("-Xmx3g") or a == "-XX:+ExitOnOutOfMemoryError" or "GCTimeRatio=4" in a for a in args)
    assert "-XX:MaxHeapFreeRatio=30" in args  # what the operator did not set is still added


def test_overrides_merge_deeply(setup):
    root, _ = setup
    path = write_config(root / "conf" / "c.yaml", {**minimal(), "window": {"size": "10s", "out_of_orderness": "1s"}})
    cfg = load_config(path, overrides={"window": {"size": "20s"}})
    assert cfg.window_ms == 20_000 and cfg.out_of_orderness_ms == 1_000


def test_relative_profile_path_is_relative_to_the_config_file(setup, monkeypatch):
    root, profile = setup
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a path relative to the working directory would not resolve
    cfg = load_config(write_config(root / "conf" / "c.yaml", minimal()))
    assert cfg.models["recsys"].profiles["v1"] == profile


def test_relative_config_path_and_absolute_profile(setup, monkeypatch):
    root, profile = setup
    monkeypatch.chdir(root)
    write_config(root / "conf" / "c.yaml", minimal(str(root / "profiles" / "recsys-v1.json")))
    cfg = load_config(Path("conf/c.yaml"))
    assert cfg.models["recsys"].profiles["v1"] == profile


def test_default_profile_version(setup):
    root, profile = setup
    raw = {"models": {"recsys": {"profiles": {"*": "../profiles/recsys-v1.json", 2: "../profiles/recsys-v1.json"}}}}
    cfg = load_config(write_config(root / "conf" / "c.yaml", raw))
    assert set(cfg.models["recsys"].profiles) == {"*", "2"}


def test_chdb_url_made_absolute(setup, monkeypatch):
    root, _ = setup
    monkeypatch.chdir(root / "profiles")
    conf = root / "conf"
    cfg = load_config(write_config(conf / "a.yaml", {**minimal(), "clickhouse": {"url": "chdb://./var/ch"}}))
    assert cfg.clickhouse_url == "chdb://" + str((conf / "var" / "ch").resolve())
    assert cfg.clickhouse_url.startswith("chdb:///")
    # The default is ./var/clickhouse next to the config file.
    cfg = load_config(write_config(conf / "b.yaml", minimal()))
    assert cfg.clickhouse_url == "chdb://" + str((conf / "var" / "clickhouse").resolve())
    # Absolute chdb paths and servers are kept as they are.
    for url in ("chdb:///srv/ch", "http://clickhouse:8123"):
        cfg = load_config(write_config(conf / "c.yaml", {**minimal(), "clickhouse": {"url": url}}))
        assert cfg.clickhouse_url == url


def test_checkpoint_dir_relative_to_config(setup, monkeypatch):
    root, _ = setup
    monkeypatch.chdir(root / "profiles")
    cfg = load_config(write_config(root / "conf" / "c.yaml", {**minimal(), "flink": {"checkpoint_dir": "ck"}}))
    assert cfg.checkpoint_dir == str((root / "conf" / "ck").resolve())


def test_env_expansion(setup, monkeypatch):
    root, _ = setup
    monkeypatch.setenv("MLV_TEST_HOST", "broker.internal")
    monkeypatch.setenv("MLV_TEST_PASSWORD", "s3cr3t")
    monkeypatch.setenv("MLV_TEST_PROFILES", str(root / "profiles"))
    raw = {
        "models": {"recsys": {"profiles": {"v1": "${MLV_TEST_PROFILES}/recsys-v1.json"}}},
        "kafka": {
            "bootstrap_servers": "${MLV_TEST_HOST}:9092",
            "properties": {"sasl.password": "${MLV_TEST_PASSWORD}", "note": "$MLV_TEST_HOST stays"},
        },
    }
    cfg = load_config(write_config(root / "conf" / "c.yaml", raw))
    assert cfg.bootstrap_servers == "broker.internal:9092"
    assert cfg.models["recsys"].profiles["v1"] == load_profile(root / "profiles" / "recsys-v1.json")
    # Kafka client properties keep the reference, in the Kafka client's own syntax: the client
    # resolves it (EnvVarConfigProvider), so the password is not in the job graph.
    assert cfg.kafka_properties == {
        "sasl.password": "${env:MLV_TEST_PASSWORD}",
        "note": "$MLV_TEST_HOST stays",
        "config.providers": "env",
        "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
    }
    assert "s3cr3t" not in json.dumps(cfg.raw) and "s3cr3t" not in repr(cfg)
    assert "${MLV_TEST_HOST}" not in json.dumps(cfg.raw)


def test_kafka_references_join_the_operators_config_providers(setup, monkeypatch):
    root, _ = setup
    monkeypatch.setenv("MLV_TEST_PASSWORD", "s3cr3t")
    props = {
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" '
        'password="${MLV_TEST_PASSWORD}";',
        "config.providers": "file",
        "config.providers.file.class": "org.apache.kafka.common.config.provider.FileConfigProvider",
        "ssl.key.password": "${file:/etc/kafka/secrets.properties:key}",  # the operator's own provider: as is
    }
    cfg = load_config(write_config(root / "conf" / "c.yaml", {**minimal(), "kafka": {"properties": props}}))
    assert cfg.kafka_properties["sasl.jaas.config"].endswith('password="${env:MLV_TEST_PASSWORD}";')
    assert cfg.kafka_properties["config.providers"] == "file,env"
    assert cfg.kafka_properties["ssl.key.password"] == props["ssl.key.password"]
    # Without references nothing is added.
    plain = load_config(write_config(root / "conf" / "d.yaml", {**minimal(), "kafka": {"properties": {"acks": 1}}}))
    assert plain.kafka_properties == {"acks": "1"}
    # An unset variable in the properties fails at load, as everywhere else.
    monkeypatch.delenv("MLV_TEST_PASSWORD")
    with pytest.raises(ValueError, match="MLV_TEST_PASSWORD"):
        load_config(write_config(root / "conf" / "e.yaml", {**minimal(), "kafka": {"properties": props}}))


def alerting_section(url: str = "http://hooks.example/services/${MLV_TEST_SLACK}") -> dict:
    return {
        "rules": [{"name": "psi_high", "layer": "data", "metric": "psi", "condition": {"op": ">", "threshold": 0.3}}],
        "receivers": [
            {"name": "chat", "type": "slack", "url": url},
            {"name": "ding", "type": "dingtalk", "url": "http://ding.example/send", "secret": "${MLV_TEST_SIGN}"},
        ],
        "route": {"by_severity": {"warning": ["chat", "ding"]}},
        "actions": {"retrain": {"url": "http://ml.example/retrain?token=${MLV_TEST_RETRAIN}"}},
    }


@pytest.fixture
def alerting_env(monkeypatch):
    secrets = {"MLV_TEST_SLACK": "T0/B0/slack-secret", "MLV_TEST_SIGN": "SECsign", "MLV_TEST_RETRAIN": "rt-token"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    return secrets


@pytest.mark.parametrize("inline", [True, False])
def test_alerting_references_reach_the_job_graph_unexpanded(setup, alerting_env, inline):
    """The section as the job passes it to AlertProcessor (pickled into the job graph) holds the
    ${...} text; mlvigil.alerting.rules.load_config, which AlertProcessor.open calls, expands it."""
    import cloudpickle

    from mlvigil.alert_operators import AlertProcessor
    from mlvigil.alerting.rules import load_config as load_alerting_config
    from mlvigil.jobs.monitor import alerting_config

    root, _ = setup
    section = alerting_section()
    if not inline:
        (root / "conf" / "alerts.yaml").write_text(yaml.safe_dump(section))
    raw = {**minimal(), "alerting": section if inline else "alerts.yaml"}
    cfg = load_config(write_config(root / "conf" / "c.yaml", raw))
    shipped = alerting_config(cfg)
    assert shipped == section
    operator = cloudpickle.dumps(AlertProcessor(shipped, cfg.clickhouse_url, cfg.clickhouse_database))
    for secret in alerting_env.values():
        assert secret.encode() not in operator
        assert secret not in json.dumps(cfg.raw)
    assert b"${MLV_TEST_SLACK}" in operator
    opened = load_alerting_config(shipped)  # what the operator does where it opens
    assert opened.routing.receivers["chat"].url == "http://hooks.example/services/T0/B0/slack-secret"
    assert opened.routing.receivers["ding"].secret == "SECsign"
    assert opened.actions["retrain"]["url"].endswith("token=rt-token")


def test_alerting_fails_at_start_up_on_an_unset_variable_or_a_bad_rule(setup, alerting_env, monkeypatch):
    from mlvigil.jobs.monitor import alerting_config

    root, _ = setup
    monkeypatch.delenv("MLV_TEST_SIGN")
    cfg = load_config(write_config(root / "conf" / "c.yaml", {**minimal(), "alerting": alerting_section()}))
    with pytest.raises(ValueError, match=r"alerting config refers to \$\{MLV_TEST_SIGN\}"):
        alerting_config(cfg)
    bad = alerting_section()
    bad["rules"][0]["layer"] = "nowhere"
    monkeypatch.setenv("MLV_TEST_SIGN", "x")
    cfg = load_config(write_config(root / "conf" / "d.yaml", {**minimal(), "alerting": bad}))
    with pytest.raises(ValueError, match="layer must be one of"):
        alerting_config(cfg)


def test_one_expansion_function():
    """config.py and the alerting rules share one expand_env (one definition, one behaviour)."""
    import mlvigil.alerting.rules as rules
    import mlvigil.config as config

    assert rules.expand_env is config.expand_env


def test_clickhouse_password_in_the_url_is_refused(setup):
    root, _ = setup
    path = write_config(root / "conf" / "c.yaml", {**minimal(), "clickhouse": {"url": "http://u:pw@ch:8123"}})
    with pytest.raises(ValueError, match="MLVIGIL_CLICKHOUSE_PASSWORD"):
        load_config(path)
    ok = write_config(root / "conf" / "d.yaml", {**minimal(), "clickhouse": {"url": "http://u@ch:8123"}})
    assert load_config(ok).clickhouse_url == "http://u@ch:8123"


def test_env_expansion_in_lists(setup, monkeypatch):
    root, _ = setup
    monkeypatch.setenv("MLV_TEST_DIM", "region")
    raw = minimal()
    raw["models"]["recsys"]["segments"] = ["${MLV_TEST_DIM}", "user_type"]
    cfg = load_config(write_config(root / "conf" / "c.yaml", raw))
    assert cfg.models["recsys"].segments == ["region", "user_type"]


def test_unset_env_is_an_error(setup, monkeypatch):
    root, _ = setup
    monkeypatch.delenv("MLV_TEST_UNSET", raising=False)
    path = write_config(root / "conf" / "c.yaml", {**minimal(), "kafka": {"bootstrap_servers": "${MLV_TEST_UNSET}"}})
    with pytest.raises(ValueError, match="MLV_TEST_UNSET"):
        load_config(path)


def test_no_models_is_an_error():
    with pytest.raises(ValueError):
        parse_config({})
    with pytest.raises(ValueError):
        parse_config({"models": {"recsys": {"profiles": {}}}})


def test_profile_of_another_schema_is_an_error(setup):
    root, _ = setup
    (root / "profiles" / "bad.json").write_text(json.dumps({"schema": "other/v9"}))
    with pytest.raises(ValueError):
        load_config(write_config(root / "conf" / "c.yaml", minimal("../profiles/bad.json")))


def test_restore_with_stop_offsets_is_refused_up_front(capsys):
    """A Kafka source restored from a checkpoint never ends (FLINK-31006): refused before anything
    starts, with the way out, and a non-zero exit."""
    from mlvigil.jobs.monitor import main

    with pytest.raises(SystemExit) as exit_:
        main(["--config", "/nonexistent.yaml", "--restore", "latest", "--stop-offsets", '{"features": {"0": 10}}'])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--restore cannot be combined with --stop-offsets" in err and "without --stop-offsets" in err


def test_local_mode_logs_with_the_shipped_log_config(monkeypatch, tmp_path, caplog):
    """jobs/monitor.py points the Flink JVM it starts at conf/log4j-cli.properties; an operator's
    own file wins, with a warning when it lets Beam log the workers' environment."""
    from mlvigil.jobs.monitor import LOG_CONFIG, use_log_config

    monkeypatch.delenv("LOG4J_PROPERTIES", raising=False)
    use_log_config()
    assert Path(os.environ["LOG4J_PROPERTIES"]) == LOG_CONFIG
    own = tmp_path / "log4j.properties"
    own.write_text("rootLogger.level = INFO\n")
    monkeypatch.setenv("LOG4J_PROPERTIES", str(own))
    use_log_config()
    assert os.environ["LOG4J_PROPERTIES"] == str(own)
    assert "DefaultJobBundleFactory" in caplog.text and "secrets included" in caplog.text


@pytest.mark.parametrize("name", ["log4j-cli.properties", "log4j.properties", "log4j-console.properties"])
def test_shipped_log_configs_are_the_wheels_with_beam_quiet(name):
    """conf/: local mode (cli), cluster daemons, containers (console). Each is PyFlink's file with
    the two Beam loggers that print the Python workers' environment set to ERROR."""
    import pyflink

    ours = (Path(__file__).resolve().parents[2] / "conf" / name).read_text()
    wheels = (Path(pyflink.__file__).parent / "conf" / name).read_text()
    setting = dict(
        line.split("=", 1) for line in (x.strip() for x in ours.splitlines()) if line and not line.startswith("#")
    )
    setting = {k.strip(): v.strip() for k, v in setting.items()}
    levels = {
        setting[key]: setting[key.replace(".name", ".level")]
        for key in setting
        if key.startswith("logger.") and key.endswith(".name")
    }
    assert levels["org.apache.beam.runners.fnexecution.control.DefaultJobBundleFactory"] == "ERROR"
    assert levels["org.apache.beam.runners.fnexecution.environment.ProcessEnvironmentFactory"] == "ERROR"
    assert [x for x in wheels.splitlines() if x not in ours.splitlines()] == [], "the rest is the wheel's file"
