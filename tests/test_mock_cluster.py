"""What librdkafka's mock cluster (our broker of last resort in tests and the demo) does and does not do.

These pin measured behaviour. If a librdkafka upgrade makes one of the "does not" tests fail, the mock
grew the feature: tighten the exactly-once assertions in test_worker_resilience.py accordingly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import confluent_kafka as ck
import pytest

from tests.kafka_harness import produce, read_all
from worker.kafka.mock_cluster import MockCluster


@pytest.fixture(scope="module")
def mock() -> Iterator[str]:
    with MockCluster() as cluster:
        yield cluster.bootstrap_servers


def consume(consumer: ck.Consumer, n: int, timeout: float = 15.0) -> list[ck.Message]:
    got: list[ck.Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [m for m in consumer.consume(n - len(got), 0.5) if m.error() is None]
    return got


def test_topics_auto_create_with_4_partitions_and_are_reachable_over_tcp(mock: str) -> None:
    assert all(b.startswith("127.0.0.1:") for b in mock.split(","))
    produce(mock, "auto", [(b"k", b"v")])
    metadata = ck.Producer({"bootstrap.servers": mock}).list_topics("auto", timeout=10)
    assert len(metadata.topics["auto"].partitions) == 4


def test_does_not_hide_aborted_transactions_from_read_committed_readers(mock: str) -> None:
    producer = ck.Producer({"bootstrap.servers": mock, "transactional.id": "abort-check"})
    producer.init_transactions(10)
    producer.begin_transaction()
    for i in range(5):
        producer.produce("aborts", b"aborted", str(i))
    producer.flush(10)
    producer.abort_transaction(10)
    seen = Counter(m.value() for m in read_all(mock, "aborts", 5, timeout=10, read_committed=True))
    assert seen[b"aborted"] == 5  # a real broker shows 0


def test_forgets_transactional_offsets_while_a_later_transaction_is_open(mock: str) -> None:
    produce(mock, "txn-in", ((str(i).encode(), b"x") for i in range(100)))
    settings = {
        "bootstrap.servers": mock,
        "group.id": "txn-group",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    }
    producer = ck.Producer({"bootstrap.servers": mock, "transactional.id": "offsets-check"})
    producer.init_transactions(10)
    member = ck.Consumer(settings)
    member.subscribe(["txn-in"])
    assert len(consume(member, 40)) == 40
    producer.begin_transaction()
    producer.send_offsets_to_transaction(
        member.position(member.assignment()), member.consumer_group_metadata(), 10
    )
    producer.commit_transaction(10)  # 40 records are done, durably
    consume(member, 30)
    producer.begin_transaction()  # ... and a second transaction is left open, as by a killed worker
    producer.send_offsets_to_transaction(
        member.position(member.assignment()), member.consumer_group_metadata(), 10
    )
    successor = ck.Consumer(settings)
    successor.subscribe(["txn-in"])
    resumed = consume(successor, 100, timeout=20)
    successor.close()
    assert len(resumed) == 100  # a real broker resumes after the first 40
