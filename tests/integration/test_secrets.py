"""No secret in any log, file, table, notification or the job graph.

Distinctive secrets are planted in the environment the way an operator provides them: a Slack
token in a receiver URL, a DingTalk token and signing secret, a Kafka SASL password in
`kafka.properties`, and MLVIGIL_CLICKHOUSE_PASSWORD. The real job runs over drifting traffic (so
both receivers get notifications), and then every byte the job and Flink wrote is searched for
each secret in its plain, URL-quoted, JSON and base64 forms: the job's stdout and stderr, Flink's
log directory (JVM and Python workers), checkpoints and Flink's temporary files (copied while the
job runs: they are removed at its end), the chDB data directory and the result of a query of
every table in it, the notifications the receivers got, and the job graph (every deployed task's information,
offloaded to a blob file: its operators with their pickled Python functions, the sources' options).
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from mlvigil import clickhouse, synth
from mlvigil.webhook_receiver import WebhookReceiver

from ..conftest import ROOT, job_env
from .helpers import produce_traffic

pytestmark = pytest.mark.integration


def secret_forms(secret: str) -> set[bytes]:
    """The secret as it could be written: plain, its distinctive core, URL-quoted, JSON-escaped
    and base64 (standard and URL-safe, at the three byte alignments: the middle of the encoding
    depends only on the secret's own bytes)."""
    raw = secret.encode()
    forms = {raw, secret[-32:].encode()}
    forms |= {urllib.parse.quote(secret, safe="").encode(), urllib.parse.quote_plus(secret).encode()}
    forms.add(json.dumps(secret)[1:-1].encode())
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(encode(b"\0" * pad + raw)[4:-4])
    return forms


def make_secrets() -> dict[str, str]:
    """Environment variable -> secret; each ends in a unique 32-character core and has characters
    that URL-quoting, JSON and base64 change."""
    core = lambda: uuid.uuid4().hex  # noqa: E731
    return {
        "MLV_SLACK_TOKEN": f"xoxb-slack+tok/{core()}",
        "MLV_DINGTALK_TOKEN": f"ding:tok@{core()}",
        "MLV_DINGTALK_SECRET": f"SEC+sign/key={core()}",
        "MLV_KAFKA_PASSWORD": f"kafka p@ss:{core()}",
        "MLVIGIL_CLICKHOUSE_PASSWORD": f"ch pw&{core()}",
    }


class CapturedJob:
    """The job as a user runs it (python jobs/monitor.py), stdout and stderr each to a file."""

    def __init__(self, config: Path, stop_offsets: dict, log: Path, env: dict):
        cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(config),
               "--stop-offsets", json.dumps(stop_offsets)]  # fmt: skip
        self.log = log
        self.proc = subprocess.Popen(
            cmd, stdout=open(log.with_suffix(".out"), "wb"), stderr=open(log, "wb"), start_new_session=True, env=env
        )


def snapshot(dirs: list[Path], seen: dict[Path, bytes], stamps: dict[Path, tuple] | None = None) -> None:
    """Copies new or changed files under dirs into seen (path -> its latest bytes); stamps keeps
    each file's (size, mtime) between calls, so an unchanged file is not read again."""
    stamps = {} if stamps is None else stamps
    for d in dirs:
        if not d.exists():
            continue
        for f in d.rglob("*"):
            try:
                st = f.stat()
                if f.is_file() and stamps.get(f) != (st.st_size, st.st_mtime_ns):
                    seen[f] = f.read_bytes()
                    stamps[f] = (st.st_size, st.st_mtime_ns)
            except OSError:  # removed while we looked
                pass


def leaks(blobs: dict[str, bytes], secrets: dict[str, str]) -> list[str]:
    found = []
    for name, secret in secrets.items():
        for form in secret_forms(secret):
            for where, data in blobs.items():
                if form in data:
                    found.append(f"{name} ({form!r}) in {where}")
    return found


def test_no_secret_anywhere(broker, topics, tmp_path):
    secrets = make_secrets()
    env = {**job_env(tmp_path / "job.log"), **secrets}
    env.pop("LOG4J_PROPERTIES", None)  # the job's own log configuration
    env["MLV_DNS_LOOKUP"] = "use_all_dns_ips"
    start = (int(time.time() * 1000) // 60_000 - 6) * 60_000
    models = synth.save_profiles(tmp_path, 5_000).models
    stop = produce_traffic(broker.bootstrap, topics, synth.traffic(start, 3, 250, drift_minute=1, seed=5))
    ch_dir, ckpt, flink_tmp = tmp_path / "ch", tmp_path / "ckpt", tmp_path / "flink-tmp"
    with WebhookReceiver() as hook:
        base = hook.url.rsplit("/", 1)[0]
        cfg = {
            "kafka": {
                "bootstrap_servers": broker.bootstrap,
                "startup_mode": "earliest-offset",
                "topics": topics,
                "properties": {
                    # Not used without SASL (the broker here has none), but handed to every client.
                    "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    'username="mlvigil" password="${MLV_KAFKA_PASSWORD}";',
                    # Checked by the client: an unresolved reference would fail the job.
                    "client.dns.lookup": "${MLV_DNS_LOOKUP}",
                },
            },
            "models": models,
            "clickhouse": {"url": f"chdb://{ch_dir}"},
            "flink": {
                "checkpoint_dir": str(ckpt),
                "checkpoint_interval": "1s",
                "restart_attempts": 0,
                # Flink's temporary files here, and every deployed task's information (its part of the job
                # graph: operators with their pickled Python functions, the sources' options) offloaded
                # there as a blob file, which this test reads while the job runs.
                "conf": {"io.tmp.dirs": str(flink_tmp), "blob.offload.minsize": "0"},
            },
            "alerting": {
                "use_default_rules": True,
                "receivers": [
                    {"name": "slack", "type": "slack", "url": base + "/services/${MLV_SLACK_TOKEN}"},
                    {
                        "name": "ding",
                        "type": "dingtalk",
                        "url": base + "/robot/send?access_token=${MLV_DINGTALK_TOKEN}",
                        "secret": "${MLV_DINGTALK_SECRET}",
                    },
                ],
                "route": {
                    "by_severity": {"critical": ["slack", "ding"], "warning": ["slack", "ding"]},
                    "group_wait": "30s",
                    "group_interval": "5m",
                },
                "correlation_window": "1m",
            },
        }
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps(cfg))

        job = CapturedJob(config, stop, tmp_path / "job.log", env)
        transient: dict[Path, bytes] = {}
        stamps: dict[Path, tuple] = {}
        deadline = time.monotonic() + 300
        try:
            while job.proc.poll() is None and time.monotonic() < deadline:
                snapshot([ckpt, flink_tmp], transient, stamps)
                time.sleep(0.3)
        finally:
            if job.proc.poll() is None:
                os.killpg(job.proc.pid, signal.SIGKILL)  # its own session: the JVM goes too
                job.proc.wait()
        log_tail = "\n".join((tmp_path / "job.log").read_text(errors="replace").splitlines()[-40:])
        assert job.proc.returncode == 0, f"job exited {job.proc.returncode}:\n{log_tail}"
        messages = list(hook.messages)

    # The receivers got notifications, so the operator did expand the references where it opened.
    slack = [m for m in messages if m["path"].startswith("/services/")]
    ding = [m for m in messages if m["path"].startswith("/robot/send")]
    assert slack and ding, [m["path"] for m in messages]
    assert {urllib.parse.unquote(m["path"]) for m in slack} == {"/services/" + secrets["MLV_SLACK_TOKEN"]}
    for m in ding:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(m["path"]).query)
        assert query["access_token"] == [secrets["MLV_DINGTALK_TOKEN"]]
        ts, key = query["timestamp"][0], secrets["MLV_DINGTALK_SECRET"]
        sign = base64.b64encode(hmac.new(key.encode(), f"{ts}\n{key}".encode(), hashlib.sha256).digest()).decode()
        assert query["sign"] == [sign]

    blobs: dict[str, bytes] = {}
    # What the receivers got besides the URL (which is where a webhook's token belongs).
    for i, m in enumerate(messages):
        blobs[f"notification {i} body and headers"] = json.dumps([m["body"], m["headers"]]).encode()
    # Every file the job and Flink wrote, including those gone by now.
    files: dict[Path, bytes] = dict(transient)
    snapshot([tmp_path], files)
    del files[config]
    blobs.update({str(p.relative_to(tmp_path)): b for p, b in files.items()})

    # Every table of the store, as text.
    def dump_tables(c) -> dict[str, bytes]:
        names = c.query(
            "SELECT database, name FROM system.tables WHERE database NOT IN ('system', 'information_schema', "
            "'INFORMATION_SCHEMA')"
        ).result_rows
        return {f"table {d}.{n}": repr(c.query(f"SELECT * FROM `{d}`.`{n}`").result_rows).encode() for d, n in names}

    tables = clickhouse.run(f"chdb://{ch_dir}", dump_tables)
    blobs.update(tables)

    found = leaks(blobs, secrets)
    assert not found, "\n".join(found)

    # The search looked at what it claims to have looked at.
    flink_logs = [p for p in files if tmp_path / "job.flink" in p.parents]
    python_log = b"".join(b for p, b in files.items() if "-python-" in p.name and tmp_path / "job.flink" in p.parents)
    assert flink_logs and b"ConsumerConfig values" in python_log
    assert b"sasl.jaas.config = [hidden]" in python_log
    # The Kafka clients resolved the references themselves (an unresolved one would have failed).
    assert b"client.dns.lookup = use_all_dns_ips" in python_log and b"${env:" not in python_log
    assert any("chk-" in str(p) for p in transient), "no checkpoint was seen"
    assert {"table mlvigil.alerts", "table mlvigil.feature_metrics"} <= set(tables)
    assert b"drift" in tables["table mlvigil.alerts"].lower()
    # The deployed job graph was read: the alert operator rides with the references, the Kafka
    # source with Kafka's own.
    job_graph = b"".join(b for p, b in transient.items() if flink_tmp in p.parents and "blob" in p.name)
    assert b"${MLV_SLACK_TOKEN}" in job_graph and b"${MLV_DINGTALK_SECRET}" in job_graph
    assert b"${env:MLV_KAFKA_PASSWORD}" in job_graph
