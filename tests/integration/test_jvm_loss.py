"""The Flink JVM dies under a running job (out of heap, the OOM killer, an operator's kill -9).

The job's local JVM runs with the configured heap cap (flink.local_heap) and
-XX:+ExitOnOutOfMemoryError, so running out of heap ends that JVM at once. Then `mlvigil run`
must not hang: before, the Python workers' gRPC threads kept the interpreter alive for ever
after the JVM was gone (measured: a 200 MB heap over 500 k requests with labels left the driver
waiting 10 minutes with nothing running). Here the JVM of an unbounded run is SIGKILLed; the run
must end by itself, non-zero, saying what happened.
"""

import os
import signal
import time
from pathlib import Path

import pytest

from mlvigil import synth

from ..conftest import JobProcess
from .helpers import write_config

pytestmark = pytest.mark.integration


def java_child(pid: int) -> int | None:
    """The JVM the job's driver started (its child process running java), if any."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for c in children:
        try:
            if Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[0].endswith(b"java"):
                return int(c)
        except OSError:
            continue
    return None


def test_the_run_fails_loudly_when_its_jvm_dies(broker, topics, tmp_path):
    models = synth.save_profiles(tmp_path, 2000).models
    config = write_config(tmp_path / "config.yaml", broker, topics, models, f"chdb://{tmp_path / 'ch'}",
                          flink={"local_heap": "1536m"}, alerting=False)  # fmt: skip
    log = tmp_path / "job.log"
    job = JobProcess(config, None, log)  # unbounded, as in production
    try:
        deadline = time.monotonic() + 180
        while "starting job" not in log.read_text() or (jvm := java_child(job.proc.pid)) is None:
            assert job.proc.poll() is None, f"the job ended early:\n{job.tail()}"
            assert time.monotonic() < deadline, f"the job did not start:\n{job.tail()}"
            time.sleep(0.5)
        args = Path(f"/proc/{jvm}/cmdline").read_bytes().split(b"\0")
        assert b"-Xmx1536m" in args and b"-XX:+ExitOnOutOfMemoryError" in args, args

        os.kill(jvm, signal.SIGKILL)
        try:
            rc = job.proc.wait(90)
        except Exception:
            raise AssertionError(f"the run hung after its JVM died:\n{job.tail()}") from None
        assert rc != 0
        assert "mlvigil: the job failed" in log.read_text() and "the Flink JVM is gone" in log.read_text(), job.tail()
    finally:
        job.kill()
