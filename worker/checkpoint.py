"""The commit protocol, in one place.

A checkpoint covers every input record consumed since the previous one. Nothing is committed per
record: outputs are produced asynchronously, and offsets move only when a checkpoint commits.

At-least-once (default):
    1. Each consumed record is processed and exactly one output (a result or a dead letter) is handed to
       the producer; :meth:`Checkpoint.track` then records ``offset + 1`` as the partition's next offset.
    2. :meth:`Checkpoint.commit` flushes the producer: it waits until the broker acknowledged every
       output produced so far (idempotent producer, ``acks=all``).
    3. If any delivery failed, it raises :class:`DeliveryFailedError` and commits nothing: the records are
       consumed again after the restart (duplicates are possible, losses are not).
    4. It commits the tracked offsets synchronously: an offset is committed only after the outputs of that
       record and of every earlier record of its partition were acknowledged.
    5. It starts the next checkpoint.

Exactly-once (``PROCESSING_GUARANTEE=exactly_once``):
    1. A transaction is open whenever records are being processed (:meth:`Checkpoint.begin`).
    2. Outputs are produced inside it; :meth:`Checkpoint.track` records offsets as above.
    3. :meth:`Checkpoint.commit` sends the tracked offsets to the transaction with the consumer group's
       metadata (so a fenced, zombie member cannot commit) ...
    4. ... and commits the transaction: outputs and offsets become visible together, or not at all.
       An abortable failure aborts the transaction and rewinds the consumer to the committed offsets, so
       the records are processed again in a new transaction; a fatal one (fenced) is raised.
    5. It begins the next transaction.

On partition revocation the checkpoint commits before the partitions go (steps 2-4); on partition
loss (the member was already thrown out) the open work is abandoned: it is not ours to commit any more.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import TopicPartition

from worker.kafka import CommitFailedError, Consumer, Producer, TransactionFailedError

log = logging.getLogger(__name__)


class Checkpoint:
    """Tracks the next offset to commit per partition and commits them safely (see module docstring)."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        *,
        exactly_once: bool,
        interval_seconds: float,
        max_records: int,
        timeout_seconds: float,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self.exactly_once = exactly_once
        self._interval = interval_seconds
        self._max_records = max_records
        self._timeout = timeout_seconds
        self._offsets: dict[tuple[str, int], int] = {}
        # Where each partition would restart from: our last commit, else the first offset we processed.
        self._restart_from: dict[tuple[str, int], int] = {}
        self._records = 0
        self._started = time.monotonic()
        self._in_transaction = False
        self.commits = 0
        self.transactions = 0  # numbers the transactions this process opened (for the `txn` header)

    # step 1 -------------------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Open the transaction that the next outputs go into (exactly-once only; idempotent)."""
        if self.exactly_once and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
            self.transactions += 1

    def track(self, topic: str, partition: int, offset: int) -> None:
        """Record that ``offset`` of ``topic/partition`` was processed and its output produced."""
        key = (topic, partition)
        self._restart_from.setdefault(key, offset)
        if offset + 1 > self._offsets.get(key, -1):
            self._offsets[key] = offset + 1
        self._records += 1

    def track_batch(
        self, topic: str, partition: int, first_offset: int, last_offset: int, records: int
    ) -> None:
        """:meth:`track` for ``records`` records of one partition whose offsets span first..last."""
        key = (topic, partition)
        self._restart_from.setdefault(key, first_offset)
        if last_offset + 1 > self._offsets.get(key, -1):
            self._offsets[key] = last_offset + 1
        self._records += records

    def due(self) -> bool:
        """Whether the interval elapsed or enough records were processed since the last commit."""
        if not self._records:
            return False
        return self._records >= self._max_records or time.monotonic() - self._started >= self._interval

    @property
    def pending_records(self) -> int:
        """Records processed since the last commit."""
        return self._records

    # steps 2-5 ----------------------------------------------------------------------------------------------
    def commit(self) -> None:
        """Make everything tracked so far durable (see the numbered steps in the module docstring)."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._offsets.items())]
        if self.exactly_once:
            self._commit_transaction(offsets)
        else:
            self._producer.flush(self._timeout)  # steps 2-3: raises, committing nothing, on failure
            try:
                self._consumer.commit(offsets)  # step 4
            except CommitFailedError as exc:
                if not exc.retriable:
                    raise
                # Outputs are acknowledged: a later checkpoint commits higher offsets, or the partition's
                # next owner reprocesses from the previous commit (duplicates, never losses).
                log.warning("%s; continuing (at-least-once holds: results are already acknowledged)", exc)
        if offsets:
            log.debug("checkpoint committed %d records: %s", self._records, offsets)
            self._restart_from.update(self._offsets)
        self.commits += 1
        self._reset()

    def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        if not self._in_transaction:
            return
        try:
            # Logged first so a reader of a killed worker's log knows this commit's outcome is in doubt.
            log.debug("transaction %d committing: %d records", self.transactions, self._records)
            self._producer.commit_transaction(
                offsets, self._consumer.raw.consumer_group_metadata(), self._timeout
            )
            log.debug("transaction %d committed: %d records", self.transactions, self._records)
        except TransactionFailedError as exc:
            if not exc.abortable:
                raise
            log.warning("transaction aborted (%s): reprocessing from the last committed offsets", exc)
            self._producer.abort_transaction(self._timeout)
            self._consumer.seek([TopicPartition(t, p, self._restart_from[(t, p)]) for t, p in self._offsets])
            self._offsets.clear()  # nothing of the aborted transaction counts as processed
        finally:
            self._in_transaction = False

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Partitions are being taken away: commit what we hold for them first."""
        self.commit()  # commits every partition: simpler, and correct for the ones we keep too
        self._forget(partitions)

    def abandon(self) -> None:
        """Partitions were lost: drop the open work (abort the transaction) without committing."""
        if self.exactly_once and self._in_transaction:
            try:
                self._producer.abort_transaction(self._timeout)
            except TransactionFailedError as exc:
                log.warning("abort after partition loss failed: %s", exc)
            self._in_transaction = False
        self._reset()
        self._restart_from.clear()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._restart_from.pop((tp.topic, tp.partition), None)

    def _reset(self) -> None:
        self._offsets.clear()
        self._records = 0
        self._started = time.monotonic()

    def tracked_offsets(self) -> dict[tuple[str, int], int]:
        """Next offsets held by this checkpoint (for tests and logs)."""
        return dict(self._offsets)
