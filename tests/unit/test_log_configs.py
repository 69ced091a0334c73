"""Every way of running the Flink daemons logs with mlvigil's conf/log4j-console.properties (the
wheel's, with Beam's loggers that print the Python workers' environment, secrets included,
turned off): the Docker image's entry point installs it, the Kubernetes example carries it."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "conf" / "log4j-console.properties"
BEAM_ENV_LOGGER = "org.apache.beam.runners.fnexecution.control.DefaultJobBundleFactory"


def test_the_console_config_turns_beams_environment_logging_off():
    lines = [ln.split("=", 1) for ln in CONSOLE.read_text().splitlines() if "=" in ln and not ln.startswith("#")]
    props = {k.strip(): v.strip() for k, v in lines}
    (name_key,) = [k for k, v in props.items() if v == BEAM_ENV_LOGGER]
    assert props[name_key.removesuffix(".name") + ".level"] in ("ERROR", "OFF")


def test_the_image_entrypoint_installs_it_for_the_daemons(tmp_path):
    """docker-entrypoint.sh jobmanager, with a stand-in FLINK_HOME: the wheel's conf/ and a
    jobmanager.sh that only reports the conf dir it was started with."""
    flink = tmp_path / "flink"
    (flink / "bin").mkdir(parents=True)
    (flink / "conf").mkdir()
    (flink / "conf" / "config.yaml").write_text("rest.port: 8081\n")
    (flink / "conf" / "log4j-console.properties").write_text("rootLogger.level = INFO\n")  # the wheel's: no Beam line
    starter = flink / "bin" / "jobmanager.sh"
    starter.write_text('#!/bin/sh\necho "started $1 with $FLINK_CONF_DIR"\n')
    starter.chmod(0o755)
    conf_dir = tmp_path / "conf"
    env = {**os.environ, "FLINK_HOME": str(flink), "FLINK_CONF_DIR": str(conf_dir), "MLVIGIL_HOME": str(ROOT),
           "MLVIGIL_WORKER_PYTHON": sys.executable}  # fmt: skip
    r = subprocess.run(
        ["bash", str(ROOT / "docker" / "flink" / "docker-entrypoint.sh"), "jobmanager"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"started start-foreground with {conf_dir}"
    for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties"):
        assert (conf_dir / name).read_text() == (ROOT / "conf" / name).read_text(), name
    assert "rest.port: 8081" in (conf_dir / "config.yaml").read_text()


def test_the_image_ships_conf():
    dockerfile = (ROOT / "docker" / "flink" / "Dockerfile").read_text()
    assert "\nCOPY conf/ conf/\n" in dockerfile


def test_the_kubernetes_example_carries_it():
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "flinkdeployment.yaml").read_text()))
    (deployment,) = [d for d in docs if d and d["kind"] == "FlinkDeployment"]
    assert deployment["spec"]["logConfiguration"]["log4j-console.properties"] == CONSOLE.read_text()
