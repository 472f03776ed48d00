"""Consumer: batch consumption with manual offset commits, start-up checks and lag figures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka as ck
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from worker.kafka.errors import BrokerUnreachableError, CommitFailedError, TopicNotFoundError

log = logging.getLogger(__name__)

PartitionsCallback = Callable[[list[TopicPartition]], None]

# The group moved on while we committed: the new owner restarts from the last successful commit.
_REBALANCE_CODES = frozenset(
    {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}
)


class Consumer:
    """A group member that never commits on its own: offsets move only through :meth:`commit`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._consumer = ck.Consumer(
            {
                **config,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
            }
        )

    @property
    def raw(self) -> ck.Consumer:
        """The confluent-kafka consumer (for group metadata in transactions)."""
        return self._consumer

    def check_topics(self, topics: Sequence[str], timeout: float) -> dict[str, int]:
        """Fail fast: the cluster answers and each topic exists. Returns partitions per topic."""
        try:
            metadata = self._consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnreachableError(
                f"no Kafka broker answered within {timeout:.0f}s ({exc.args[0]}): "
                "check KAFKA_BOOTSTRAP_SERVERS and the network/security settings"
            ) from exc
        partitions: dict[str, int] = {}
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                reason = found.error.str() if found is not None and found.error is not None else "not found"
                raise TopicNotFoundError(f"topic {topic!r} does not exist ({reason}); create it first")
            partitions[topic] = len(found.partitions)
        return partitions

    def subscribe(
        self,
        topics: list[str],
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
        on_lost: PartitionsCallback,
    ) -> None:
        """Join the group; the callbacks run inside :meth:`consume`."""
        self._consumer.subscribe(
            topics,
            on_assign=lambda _c, partitions: on_assign(partitions),
            on_revoke=lambda _c, partitions: on_revoke(partitions),
            on_lost=lambda _c, partitions: on_lost(partitions),
        )

    def consume(self, max_records: int, timeout: float) -> list[Message]:
        """Up to ``max_records`` records; transport errors are logged (librdkafka retries them)."""
        records = self._consumer.consume(max_records, timeout)
        good: list[Message] = []
        for record in records:
            error = record.error()
            if error is None:
                good.append(record)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error.str())
        return good

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Synchronous commit of explicit offsets (called once per checkpoint, never per record)."""
        if not offsets:
            return
        try:
            result = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            retriable = error.retriable() or error.code() in _REBALANCE_CODES
            raise CommitFailedError(f"offset commit failed: {error.str()}", retriable=retriable) from exc
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise CommitFailedError(f"offset commit failed for {failed}")

    def seek(self, positions: list[TopicPartition]) -> None:
        """Move the fetch position of each partition (after an aborted transaction)."""
        for tp in positions:
            self._consumer.seek(tp)

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The partition's end offset as last seen in fetch responses (no request is made)."""
        try:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            return None
        return int(high) if high >= 0 else None

    def assignment(self) -> list[TopicPartition]:
        """Currently assigned partitions."""
        return list(self._consumer.assignment())

    def close(self) -> None:
        """Leave the group now (a clean rebalance for the others instead of a session time-out)."""
        self._consumer.close()
