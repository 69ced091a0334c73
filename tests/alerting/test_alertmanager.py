"""Our Alertmanager payload against a real Prometheus Alertmanager (Debian's
prometheus-alertmanager, installed by scripts/setup.sh): it accepts the alerts (HTTP 200) and
delivers them, and later their resolution, to a webhook receiver on 127.0.0.1."""

import shutil
import subprocess
import time
import urllib.request

import pytest

from mlvigil.alerting import AlertEngine, Routing, default_rules
from mlvigil.alerting.delivery import Deliverer
from mlvigil.alerting.rules import Receiver

from .conftest import MIN, Hook, feature_row, free_port, profiled_quality_row

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path):
    # scripts/setup.sh installs it; a missing binary is a failure, never a silent skip.
    assert BINARY is not None, "prometheus-alertmanager is not installed: run scripts/setup.sh"
    hook = Hook().start()
    port = free_port()
    config = tmp_path / "am.yml"
    config.write_text(
        "route:\n  receiver: hook\n  group_by: [alertname, model_id, segment]\n"
        "  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n"
        f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook.url}/am-webhook\n        send_resolved: true\n"
    )
    log = open(tmp_path / "am.log", "wb")
    proc = subprocess.Popen(
        [BINARY, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "am.log").read_text()
            time.sleep(0.05)
        yield base, hook
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        hook.stop()


def wait_webhooks(hook: Hook, predicate, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bodies = [b for b in hook.json_bodies() if predicate(b)]
        if bodies:
            return bodies
        time.sleep(0.05)
    raise AssertionError(f"Alertmanager sent no matching webhook; got {hook.json_bodies()}")


def test_alertmanager_accepts_our_alerts_and_delivers_them(alertmanager):
    base, hook = alertmanager
    am = Receiver("am", "alertmanager", base)
    routing = Routing({"am": am}, {"critical": ["am"], "warning": ["am"], "info": ["am"]})
    eng = AlertEngine(default_rules(), routing)
    # Event time 10 minutes in the past (the job runs behind real time), so that the recovery
    # below is in the past too and Alertmanager treats the resolution as done.
    w0 = (int(time.time() * 1000) // MIN - 10) * MIN
    state: dict = {}
    drift = feature_row("browsing_duration", 0.35, mean=2.1, reference_mean=10.0)
    eng.evaluate(state, [drift, profiled_quality_row(accuracy=0.70)], w0)
    (firing,) = eng.advance(state, w0 + 30_000)
    assert firing.receiver == "am" and firing.severity == "critical"

    records: list = []
    d = Deliverer([am], on_attempt=lambda *a: records.append(a), backoff_initial_s=0.1, max_total_s=10)
    try:
        d.submit(firing)
        assert d.drain(10)
        assert [(r[3], r[4]) for r in records] == [("delivered", 200)], "Alertmanager accepted the alerts"

        got = wait_webhooks(
            hook, lambda b: b["status"] == "firing" and b["groupLabels"].get("alertname") == "accuracy_drop_critical"
        )
        (payload,) = got[:1]
        assert payload["version"] == "4" and payload["receiver"] == "hook"
        (alert,) = payload["alerts"]
        assert alert["labels"] == {
            "alertname": "accuracy_drop_critical", "severity": "critical", "layer": "model", "metric": "accuracy",
            "model_id": "recsys", "model_version": "v2", "segment": "*",
        }  # fmt: skip
        assert alert["annotations"]["summary"] == "accuracy -23 % (0.91 -> 0.7)"
        assert alert["annotations"]["likely_cause"] == "browsing_duration PSI 0.35 (reference mean 10.0, now 2.1)"
        assert alert["annotations"]["notification_id"] == firing.id
        assert alert["startsAt"].startswith(firing.alerts[0]["startsAt"][:19])
        drift_hooks = wait_webhooks(hook, lambda b: b["groupLabels"].get("alertname") == "psi_drift")
        assert drift_hooks[0]["alerts"][0]["labels"]["feature"] == "browsing_duration"
        # The warning on the same target was inhibited by the engine: it never reached Alertmanager.
        assert not [b for b in hook.json_bodies() if b["groupLabels"].get("alertname") == "accuracy_drop_warning"]

        # Recovery at w0 + 2 min: resolved notification at the group's next tick, delivered, and
        # Alertmanager sends the resolution on.
        eng.evaluate(
            state,
            [feature_row("browsing_duration", 0.01), profiled_quality_row(accuracy=0.91)],
            w0 + 2 * MIN,
        )
        (resolved,) = eng.advance(state, w0 + 10 * MIN)
        assert resolved.status == "resolved"
        d.submit(resolved)
        assert d.drain(10)
        assert records[-1][3:5] == ("delivered", 200)
        got = wait_webhooks(
            hook, lambda b: b["status"] == "resolved" and b["groupLabels"].get("alertname") == "accuracy_drop_critical"
        )
        assert got[0]["alerts"][0]["endsAt"].startswith(resolved.alerts[0]["endsAt"][:19])
    finally:
        d.close()
