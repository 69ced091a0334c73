"""Shared fixtures: a real Kafka-protocol broker for the session, and a job runner."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    from mlvigil.broker import LocalBroker

    b = LocalBroker(log_file=tmp_path_factory.mktemp("broker") / "tansu.log").start()
    yield b
    b.stop()


@pytest.fixture
def topics(broker):
    """Fresh topic names for one test, created on the broker."""
    return broker.create_topics(f"t{uuid.uuid4().hex[:8]}")


def job_env(log: Path) -> dict:
    """The environment of a job subprocess: Flink's own log (JVM and Python workers) next to the
    job's log, not in the shared pyflink/log of the venv."""
    return {**os.environ, "FLINK_LOG_DIR": str(log.with_suffix(".flink"))}


class JobProcess:
    """The monitor job as a user runs it: `python jobs/monitor.py --config ...` in a subprocess."""

    def __init__(self, config: Path, stop_offsets: dict | None, log: Path, extra: list[str] | None = None):
        """stop_offsets None: an unbounded run, as in production (end it with kill())."""
        self.log = log
        bounded = [] if stop_offsets is None else ["--stop-offsets", json.dumps(stop_offsets)]
        cmd = [sys.executable, str(ROOT / "jobs" / "monitor.py"), "--config", str(config), *bounded, *(extra or [])]
        # A session of its own, so kill() also ends the JVM the driver started.
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True, env=job_env(log)
        )

    def wait(self, timeout: float = 300) -> None:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"job did not finish in {timeout} s; log tail:\n{self.tail()}") from None
        assert rc == 0, f"job exited {rc}; log tail:\n{self.tail()}"

    def tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-40:])

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs, for a real full disk (mounting needs root: without it the test is skipped, visibly)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill_disk(disk: Path) -> Path:
    """Fills the file system of `disk` to the last byte with one file (remove it to free the space)."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 4096):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
