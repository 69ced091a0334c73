"""docker-compose.yml, the Flink image and the Kubernetes example, checked without a Docker engine
(none runs on these machines): `docker compose config` when the client has the compose plugin,
else the YAML parsed here; every file they use exists and is shipped into the image; the versions
are pinned; the long-running services have healthchecks; the job's config in the image is valid;
the ClickHouse init script creates exactly the schema apply_schema() creates."""

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlvigil import clickhouse

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "flink" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "flink" / "docker-entrypoint.sh"
IMAGE_ROOT = "/opt/mlvigil/"  # the repository's place in the image (Dockerfile WORKDIR)
SERVICES = {"kafka", "kafka-init", "clickhouse", "jobmanager", "taskmanager", "job", "producer", "grafana"}
LONG_RUNNING = {"kafka", "clickhouse", "jobmanager", "taskmanager", "grafana"}


def compose_client() -> bool:
    if not shutil.which("docker"):
        return False
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return r.returncode == 0


@pytest.fixture(scope="module")
def compose() -> dict:
    if compose_client():
        r = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--format", "yaml"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        resolved = yaml.safe_load(r.stdout)
        assert SERVICES <= set(resolved["services"])
    return yaml.safe_load(COMPOSE.read_text())  # the file as written (anchors merged by the YAML loader)


def test_services_images_and_healthchecks(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, s in services.items():
        image = s["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"\d+(\.\d+)+", tag), f"{name}: image {image} is not pinned to a version"
        if name in LONG_RUNNING:
            assert s["healthcheck"]["test"], name
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in ("jobmanager", "taskmanager", "job", "producer"):
        assert services[name]["build"] == {"context": ".", "dockerfile": "docker/flink/Dockerfile"}
    grafana = services["grafana"]["environment"]
    plugin, version = grafana["GF_INSTALL_PLUGINS"].split()
    assert plugin == "grafana-clickhouse-datasource" and re.fullmatch(r"\d+\.\d+\.\d+", version)
    # started in order: the job only once Kafka topics, ClickHouse schema and the cluster are there
    job = services["job"]["depends_on"]
    assert job["kafka-init"]["condition"] == "service_completed_successfully"
    assert {job[s]["condition"] for s in ("jobmanager", "taskmanager", "clickhouse")} == {"service_healthy"}
    # the Dockerfile's base images are pinned too
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"ARG PYTHON_IMAGE=(\S+)", line)
        if m:
            assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", m.group(1))


def test_every_referenced_file_exists(compose):
    services = compose["services"]
    for name, s in services.items():
        for v in s.get("volumes", []):
            source = v.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"
        if "build" in s:
            assert (ROOT / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/mlvigil.yaml").read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "grafana/dashboards" / Path(home).name).is_file() and home.startswith(provider["options"]["path"])
    datasource = (ROOT / "grafana/provisioning/datasources/clickhouse.yaml").read_text()
    for var in re.findall(r"\$\{(\w+)\}", datasource):
        assert var in services["grafana"]["environment"], var
    # the ClickHouse init script and the SQL it reads
    ch = {v.split(":")[1]: v.split(":")[0] for v in services["clickhouse"]["volumes"] if v.startswith(".")}
    assert ch["/mlvigil/sql"] == "./sql/clickhouse"
    assert os.access(ROOT / ch["/docker-entrypoint-initdb.d/10-mlvigil-schema.sh"], os.X_OK)
    # the roles the services run are the entry point's
    roles = set(re.findall(r"^  (\w+)\)", ENTRYPOINT.read_text(), re.M))
    for name in ("jobmanager", "taskmanager", "job", "producer"):
        assert services[name]["command"][0] in roles
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    allowed = False
    for p in patterns:
        neg = p.startswith("!")
        p = p.lstrip("!").rstrip("/")
        if p == "*" or path == p or path.startswith(p + "/"):
            allowed = neg
    return allowed


def test_the_image_gets_what_it_uses():
    text = DOCKERFILE.read_text()
    ignore = [
        line.strip()
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "**" not in line
    ]
    copied = []
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for s in src.split():
            assert (ROOT / s).exists(), s
            assert _dockerignore_allows(s.rstrip("/"), ignore), f"{s} is excluded by Dockerfile.dockerignore"
            copied.append(s.rstrip("/"))
    # what the job needs at run time is inside: its jars' sources, SQL, schemas, the demo config
    for needed in ("jobs/monitor.py", "sql/flink", "sql/clickhouse", "udfs/java/src", "udfs/java/build.sh",
                   "docker/mlvigil.yaml", "docker/demo_producer.py", "mlvigil/jars.py"):  # fmt: skip
        assert any(needed == c or needed.startswith(c + "/") for c in copied), needed
        assert (ROOT / needed).exists(), needed
    assert "shigawire-apache-flink-libraries==2.0.0.post1" in text  # the connector jars, as setup.sh fetches them
    assert "pyflink/lib/" in text and "flink-connector-kafka.jar" in text and "kafka-clients.jar" in text


def test_the_job_config_in_the_image_is_valid(tmp_path, compose):
    from mlvigil.config import parse_config
    from mlvigil.demo import write_profiles

    env = compose["services"]["job"]["environment"]
    config = ROOT / env["MLVIGIL_CONFIG"].removeprefix(IMAGE_ROOT)
    raw = yaml.safe_load(config.read_text())
    profiles = write_profiles(tmp_path)  # what the Dockerfile writes to /opt/mlvigil/var/demo
    made = {p.name: p for p in profiles.values()}
    assert "write_profiles(Path('/opt/mlvigil/var/demo'))" in DOCKERFILE.read_text()
    for m in raw["models"].values():
        for version, path in m["profiles"].items():
            assert path.startswith("/opt/mlvigil/var/demo/profiles/") and Path(path).name in made
            m["profiles"][version] = str(made[Path(path).name])
    cfg = parse_config(raw)
    assert cfg.clickhouse_url.startswith("http://") and "@clickhouse:8123" in cfg.clickhouse_url
    assert cfg.bootstrap_servers == "kafka:9092"
    created = re.findall(r"for t in ([^;]+);", compose["services"]["kafka-init"]["command"][0])[0].split()
    assert sorted(created) == sorted(cfg.topics.values())
    assert "flink-checkpoints:" + cfg.checkpoint_dir in compose["services"]["taskmanager"]["volumes"]


def test_clickhouse_init_script_creates_the_schema(tmp_path):
    """Runs docker/clickhouse/init-schema.sh with clickhouse-client replaced by a chDB shim."""
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "clickhouse-client"
    shim.write_text(f"#!{sys.executable}\nimport os, sys\nfrom chdb import session\n"
                    "s = session.Session(os.environ['SHIM_CHDB'])\ns.query(sys.stdin.read())\ns.close()\n")  # fmt: skip
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{shim_dir}:{os.environ['PATH']}", SHIM_CHDB=str(tmp_path / "init"),
               MLVIGIL_SQL_DIR=str(ROOT / "sql/clickhouse"), MLVIGIL_DATABASE="mlvigil")  # fmt: skip
    env.pop("MLVIGIL_GRAFANA_PASSWORD", None)
    r = subprocess.run(["bash", str(ROOT / "docker/clickhouse/init-schema.sh")], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("mlvigil: applying") == len(list((ROOT / "sql/clickhouse").glob("*.sql")))
    listing = "SELECT name, engine FROM system.tables WHERE database = 'mlvigil' ORDER BY name"
    by_script = clickhouse.query_rows(f"chdb://{tmp_path / 'init'}", listing)
    url = f"chdb://{tmp_path / 'reference'}"
    clickhouse.apply_schema(url, "mlvigil")
    assert by_script == clickhouse.query_rows(url, listing)
    assert ("feature_metrics_hourly_mv", "MaterializedView") in by_script


def test_kubernetes_flinkdeployment(compose, tmp_path, monkeypatch):
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/flinkdeployment.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "PersistentVolumeClaim", "FlinkDeployment"}
    fd = kinds["FlinkDeployment"]
    assert fd["apiVersion"] == "flink.apache.org/v1beta1"
    assert re.fullmatch(r"v\d+_\d+", fd["spec"]["flinkVersion"])
    assert fd["spec"]["image"].endswith("/" + compose["services"]["jobmanager"]["image"])
    job = fd["spec"]["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    # the paths it names exist in the image: the wheel's flink-python jar, the job, the venv
    import pyflink

    jar = job["jarURI"].removeprefix("local:///opt/flink/")
    assert (Path(pyflink.__file__).parent / jar).is_file(), jar
    args = job["args"]
    assert (ROOT / args[args.index("-py") + 1].removeprefix(IMAGE_ROOT)).is_file()
    assert args[args.index("-pyclientexec") + 1] == "/opt/mlvigil/.venv/bin/python"
    # the config it mounts is a valid job config (with the profile paths pointed at real files)
    from mlvigil.config import parse_config
    from mlvigil.demo import write_profiles

    raw = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
    assert args[args.index("--config") + 1] == "/etc/mlvigil/config.yaml"
    monkeypatch.setenv("KAFKA_PASSWORD", "from-the-secret")
    profile = write_profiles(tmp_path)["recsys"]
    for m in raw["models"].values():
        m["profiles"] = {v: str(profile) for v in m["profiles"]}
    cfg = parse_config(raw)
    mounts = fd["spec"]["podTemplate"]["spec"]["containers"][0]["volumeMounts"]
    assert any(cfg.checkpoint_dir.startswith(m["mountPath"]) for m in mounts)
