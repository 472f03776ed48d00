"""The ceiling for the worker benchmark: consume -> produce the raw bytes, no parsing, no model.

Uses the worker's own Kafka layer and checkpoint (same batch size, same commit protocol), so the only
difference from ``python -m worker`` is the work per record. Configured by the worker's env variables.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from worker.checkpoint import Checkpoint
from worker.kafka import Consumer, Producer, client_config
from worker.settings import WorkerSettings


def main() -> int:
    """Run until SIGTERM."""
    s = WorkerSettings()
    base = client_config(s.kafka_bootstrap_servers, s.kafka_properties(), {"client.id": s.client_id})
    consumer = Consumer({**base, "group.id": s.consumer_group, "auto.offset.reset": "earliest"})
    producer = Producer({**base, "linger.ms": base.get("linger.ms", 5)})
    checkpoint = Checkpoint(
        consumer,
        producer,
        exactly_once=False,
        interval_seconds=s.commit_interval_seconds,
        max_records=s.commit_max_records,
        timeout_seconds=s.shutdown_timeout_seconds,
        outage_budget_seconds=s.broker_outage_budget_seconds,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([s.input_topic], lambda _p: None, checkpoint.revoke, lambda _p: checkpoint.abandon())
    while not stopping:
        if checkpoint.waiting:  # the broker has not acknowledged yet: take no new input
            checkpoint.commit()
            continue
        records: list[Any] = consumer.consume(s.batch_size, s.poll_timeout_seconds)
        spans: dict[tuple[str, int], list[int]] = {}  # (topic, partition) -> [first, last, count]
        for record in records:
            producer.produce(s.output_topic, record.value() or b"", record.key())
            span = spans.setdefault((record.topic(), record.partition()), [record.offset(), 0, 0])
            span[1], span[2] = record.offset(), span[2] + 1
        for (topic, partition), (first, last, count) in spans.items():
            checkpoint.track_batch(topic, partition, first, last, count)
        producer.poll()
        if checkpoint.due():
            checkpoint.commit()
    checkpoint.finish(s.shutdown_timeout_seconds)
    consumer.close(s.shutdown_timeout_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
