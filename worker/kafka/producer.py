"""Producer: asynchronous produce with backpressure, delivery tracking and optional transactions."""

from __future__ import annotations

import logging
from typing import Any

import confluent_kafka as ck
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.kafka.errors import DeliveryFailedError, TransactionFailedError

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class Producer:
    """Idempotent (or transactional) producer that never drops a record.

    When librdkafka's queue is full, :meth:`produce` serves delivery reports and waits rather than
    failing. A failed delivery is remembered and raised by :meth:`raise_on_failure` / :meth:`flush`, so a
    checkpoint never commits past it.
    """

    def __init__(self, config: dict[str, Any], transactional_id: str | None = None) -> None:
        settings = {**config, "enable.idempotence": True, "acks": "all"}
        if transactional_id:
            settings["transactional.id"] = transactional_id
        self.transactional = bool(transactional_id)
        self._producer = ck.Producer(settings)
        self._failure: KafkaError | None = None
        self._failures = 0

    def _on_delivery(self, error: KafkaError | None, _record: Any) -> None:
        if error is not None:
            self._failures += 1
            if self._failure is None:
                self._failure = error

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Headers | None = None) -> None:
        """Queue one record; blocks (serving callbacks) while the local queue is full."""
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)  # backpressure: let deliveries drain, never drop
            except KafkaException as exc:
                raise DeliveryFailedError(f"cannot produce to {topic!r}: {exc.args[0]}") from exc

    def produce_batch(
        self, topic: str, values: list[bytes], keys: list[bytes | None], headers: Headers | None = None
    ) -> None:
        """Queue many records to one topic, in order (the hot path: one Python call per record, not two)."""
        produce, on_delivery = self._producer.produce, self._on_delivery
        for i, (value, key) in enumerate(zip(values, keys, strict=True)):
            try:
                produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            except BufferError:  # the local queue is full: the slow path waits for it to drain
                for rest in range(i, len(values)):
                    self.produce(topic, values[rest], keys[rest], headers)
                return
            except KafkaException as exc:
                raise DeliveryFailedError(f"cannot produce to {topic!r}: {exc.args[0]}") from exc

    def poll(self) -> None:
        """Serve delivery reports without waiting."""
        self._producer.poll(0)

    def raise_on_failure(self) -> None:
        """Raise if any delivery failed since the last reset."""
        if self._failure is not None:
            error, count = self._failure, self._failures
            raise DeliveryFailedError(
                f"{count} output record(s) were not acknowledged by the broker: {error.str()}"
            )

    def flush(self, timeout: float) -> None:
        """Wait until every queued record is acknowledged (or failed); raise on failure or time-out."""
        remaining = self._producer.flush(timeout)
        self.raise_on_failure()
        if remaining:
            raise DeliveryFailedError(
                f"{remaining} output record(s) still unacknowledged after {timeout:.0f}s"
            )

    # --- transactions (exactly-once) ---------------------------------------------------------------------

    def init_transactions(self, timeout: float) -> None:
        """Register the transactional id (fences older instances with the same id)."""
        self._call("init_transactions", timeout)

    def begin_transaction(self) -> None:
        """Open a transaction."""
        self._call("begin_transaction")

    def commit_transaction(self, offsets: list[TopicPartition], group_metadata: Any, timeout: float) -> None:
        """Add the consumer offsets to the transaction and commit both atomically."""
        self.raise_on_failure()
        if offsets:
            self._call("send_offsets_to_transaction", offsets, group_metadata, timeout)
        self._call("commit_transaction", timeout)

    def abort_transaction(self, timeout: float) -> None:
        """Abort: none of the transaction's records become visible to read_committed readers."""
        self._call("abort_transaction", timeout)
        self._failure, self._failures = None, 0

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self._producer, name)(*args)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            raise TransactionFailedError(
                f"{name} failed: {error.str()}", abortable=error.txn_requires_abort(), fatal=error.fatal()
            ) from exc
