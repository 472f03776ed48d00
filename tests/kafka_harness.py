"""Kafka for tests, and helpers to drive the worker as a real process.

Broker choice, in order: ``KAFKA_BOOTSTRAP_SERVERS`` (a cluster you give) -> a testcontainers Kafka when a
Docker engine answers -> Apache Kafka from ``../shared/kafka``, started by the suite on ports of its own
when Java 17+ is there -> librdkafka's mock cluster in a process of its own. Each test uses fresh topic
names, so one broker serves the whole session; tests that freeze or crash a broker start their own.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka as ck
from prometheus_client.parser import text_string_to_metric_families

from worker.demo.processes import Child
from worker.kafka.apache_kafka import apache_kafka, apache_kafka_missing
from worker.ports import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SessionBroker:
    """The broker a test session uses: where, which kind, and why that one."""

    bootstrap: str
    kind: str  # external, testcontainers, apache-kafka or mock
    why: str


@contextlib.contextmanager
def kafka_broker() -> Iterator[SessionBroker]:
    """The session's broker, in the order of the module docstring."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield SessionBroker(external, "external", "KAFKA_BOOTSTRAP_SERVERS is set")
        return
    if _docker_answers():
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # testcontainers < 4.10
            from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield SessionBroker(container.get_bootstrap_server(), "testcontainers", "a Docker engine answers")
        return
    missing = apache_kafka_missing()
    if missing is None:
        with apache_kafka() as broker:
            why = "no KAFKA_BOOTSTRAP_SERVERS, no Docker engine; started from ../shared/kafka"
            yield SessionBroker(broker.bootstrap, "apache-kafka", why)
        return
    from worker.kafka.mock_cluster import MockCluster

    with MockCluster() as cluster:
        why = f"no KAFKA_BOOTSTRAP_SERVERS, no Docker engine, no Apache Kafka ({missing})"
        yield SessionBroker(cluster.bootstrap_servers, "mock", why)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # no daemon, no socket, no permission: all mean "not here"
        return False
    return True


def unique(name: str) -> str:
    """A fresh topic or group name."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    settings: dict[str, object] | None = None,
) -> int:
    """Produce ``(key, value)`` records and wait until all are acknowledged (``settings``: librdkafka
    properties on top of an idempotent producer)."""
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, **(settings or {})}
    )
    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    assert producer.flush(120) == 0
    return count


def read_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float = 60.0,
    read_committed: bool = True,
    settle: float = 0.0,
    distinct: Callable[[Any], object] | None = None,
    until: Callable[[list[Any]], bool] | None = None,
    settings: dict[str, str] | None = None,
) -> list[Any]:
    """Read ``topic`` from the start until ``expected`` records arrived (plus ``settle`` seconds more,
    to catch duplicates) or ``timeout``. With ``distinct``, count distinct ``distinct(record)`` values
    instead of records (at-least-once output may hold duplicates). With ``until``, also wait (checked
    about once a second) until ``until(records)`` holds. ``settings``: further librdkafka properties (a
    login, say)."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            **(settings or {}),
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    checked_at = 0.0
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.3)
            records.extend(m for m in batch if m.error() is None)
            seen = len({distinct(r) for r in records}) if distinct else len(records)
            if seen >= expected and until is not None and settled_at is None:
                if time.monotonic() - checked_at < 1.0:
                    continue
                checked_at = time.monotonic()
                if not until(records):
                    continue
            if seen >= expected:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle:
                    break
    finally:
        consumer.close()
    return records


_COORDINATOR_MOVING = frozenset(
    {
        ck.KafkaError.NOT_COORDINATOR,
        ck.KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        ck.KafkaError.COORDINATOR_NOT_AVAILABLE,
        ck.KafkaError._TIMED_OUT,  # a thawed broker can take over 10 s to answer the first offset fetch
    }
)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """The group's committed offset per partition (-1001: none)."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                tps = consumer.committed([ck.TopicPartition(topic, p) for p in range(partitions)], timeout=10)
                break
            except ck.KafkaException as exc:  # the coordinator settling after a broker thaws: ask again
                error = exc.args[0]
                settling = error.retriable() or error.code() in _COORDINATOR_MOVING
                if not settling or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Metrics of a running worker: ``{(sample name, sorted labels): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_sum(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


class WorkerProcess(Child):
    """``python -m worker`` as a child process with its own environment, metrics on a free port, and one log
    file appended across restarts. ``stop()`` (test teardown) kills it at once."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        port = free_port()
        super().__init__(
            "worker",
            "worker",
            {**env, "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1"},
            log_path,
            port,
            append_log=True,
            unset=("KAFKA_CONFIG_FILE",),
            cwd=REPO,
        )

    @property
    def metrics_port(self) -> int:
        """Where it serves /metrics."""
        return self.port

    def start(self) -> WorkerProcess:
        """Start it (again, after a kill or an exit)."""
        super().start()
        return self


class StageProcess(Child):
    """``python -m reputation`` (the reputation stage) with metrics on a free port and one log file
    appended across restarts."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        port = free_port()
        super().__init__(
            "reputation",
            "reputation",
            {**env, "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1"},
            log_path,
            port,
            append_log=True,
            unset=("KAFKA_CONFIG_FILE",),
            cwd=REPO,
        )

    def start(self) -> StageProcess:
        """Start it (again, after a kill or an exit)."""
        super().start()
        return self
