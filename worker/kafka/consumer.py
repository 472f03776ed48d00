"""Consumer: batch consumption with manual offset commits, start-up checks and lag figures."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka as ck
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from worker.kafka.errors import (
    BrokerUnreachableError,
    ClientConfigError,
    CommitFailedError,
    ConsumerFailedError,
    KafkaLayerError,
    TopicNotFoundError,
)
from worker.kafka.refusals import ErrorWatch, refusal

log = logging.getLogger(__name__)

PartitionsCallback = Callable[[list[TopicPartition]], None]

# The group moved on while we committed, or the coordinator did not answer in time: the outputs are
# acknowledged, so a later commit (or the partition's next owner, from the last commit) takes over.
_SKIPPABLE_COMMIT_CODES = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError._TRANSPORT,
    }
)


# How long one start-up request may wait before the error events are served: a refused login shows there
# after about 0.3 s, while the request itself would wait for the whole start-up timeout.
_STEP_SECONDS = 1.0


class Consumer:
    """A group member that never commits on its own: offsets move only through :meth:`commit`."""

    def __init__(self, config: dict[str, Any], *, group_member: bool = True) -> None:
        """``group_member=False``: a reader that only assigns (:meth:`assign_from_start`). librdkafka
        still looks its ``group.id`` up (the Python client requires one), so a missing group ACL is
        reported, but such a reader never uses the group: that error is not a refusal for it."""
        self._commit_failure: KafkaLayerError | None = None
        self._unused = frozenset() if group_member else frozenset({KafkaError.GROUP_AUTHORIZATION_FAILED})
        self._watch = ErrorWatch(config, ignored=self._unused)
        self._group = str(config.get("group.id", ""))
        self._subscribed = False
        try:
            self._consumer = ck.Consumer(
                {
                    **config,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": False,
                    "on_commit": self._on_commit,
                    "error_cb": self._watch,
                }
            )
        except KafkaException as exc:
            raise ClientConfigError(f"invalid consumer configuration: {exc.args[0].str()}") from exc

    @property
    def raw(self) -> ck.Consumer:
        """The confluent-kafka consumer itself (its calls raise confluent-kafka's errors, not ours)."""
        return self._consumer

    def group_metadata(self) -> Any:
        """The group generation and member id, for ``send_offsets_to_transaction`` (fences zombies)."""
        try:
            return self._consumer.consumer_group_metadata()
        except KafkaException as exc:
            raise ConsumerFailedError(f"no consumer group metadata: {exc.args[0].str()}") from exc

    def check_topics(self, topics: Sequence[str], timeout: float) -> dict[str, int]:
        """Fail fast: the cluster answers, lets us in, and each topic exists and may be described.
        Returns partitions per topic."""
        deadline = time.monotonic() + timeout
        partitions: dict[str, int] = {}
        for topic in topics:
            # By name: the full list holds every topic of the cluster (80 ms for 500 topics on a local
            # broker) and leaves out the topics the principal may not describe.
            found = self._topic_metadata(topic, deadline, timeout)
            if found is not None and found.error is not None:
                refused = refusal(found.error, self._watch.who, operation="Describe", topic=topic)
                if refused is not None:
                    raise refused
            if found is None or found.error is not None or not found.partitions:
                reason = found.error.str() if found is not None and found.error is not None else "not found"
                raise TopicNotFoundError(f"topic {topic!r} does not exist ({reason}); create it first")
            partitions[topic] = len(found.partitions)
        return partitions

    def _topic_metadata(self, topic: str, deadline: float, timeout: float) -> Any:
        """``topic``'s metadata, asking again until the cluster answers or ``deadline`` passes."""
        while True:
            try:
                return self._consumer.list_topics(topic, timeout=_STEP_SECONDS).topics.get(topic)
            except KafkaException as exc:
                self._serve_errors()
                self._watch.raise_if_refused(starting=True)
                if time.monotonic() >= deadline:
                    raise BrokerUnreachableError(
                        f"no Kafka broker answered within {timeout:.0f}s ({exc.args[0]}): "
                        "check KAFKA_BOOTSTRAP_SERVERS and the network"
                    ) from exc

    def check_group(self, topic: str, timeout: float) -> None:
        """Fail fast on a group we may not use: fetch its committed offset of ``topic`` partition 0 (finding
        the coordinator needs the group ACL). Other failures are left to the group join."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._consumer.committed([TopicPartition(topic, 0)], timeout=_STEP_SECONDS)
                return
            except KafkaException as exc:
                refused = refusal(exc.args[0], self._watch.who, operation="Read", group=self._group)
                if refused is not None:
                    raise refused from exc
                self._serve_errors()
                if time.monotonic() >= deadline:
                    log.warning("no committed offsets of group %s yet: %s", self._group, exc.args[0].str())
                    return

    def _serve_errors(self) -> None:
        """Before subscribing: serve the error callback and the consumer's error events (a refused login or
        TLS handshake, a group we may not use, which librdkafka reports once) and raise a refusal. Once
        subscribed, :meth:`consume` serves them (polling here would drop records)."""
        while not self._subscribed and (event := self._consumer.poll(0)) is not None:
            error = event.error()
            if error is None or error.code() in self._unused:
                continue
            refused = refusal(
                error, self._watch.who, operation="Read", topic=event.topic(), group=self._group
            )
            if refused is not None:
                raise refused
            log.warning("consumer: %s", error.str())
        self._watch.raise_if_refused()

    def subscribe(
        self,
        topics: list[str],
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
        on_lost: PartitionsCallback,
    ) -> None:
        """Join the group; the callbacks run inside :meth:`consume`."""
        self._subscribed = True
        try:
            self._consumer.subscribe(
                topics,
                on_assign=lambda _c, partitions: on_assign(partitions),
                on_revoke=lambda _c, partitions: on_revoke(partitions),
                on_lost=lambda _c, partitions: on_lost(partitions),
            )
        except KafkaException as exc:
            raise ConsumerFailedError(f"cannot subscribe to {topics}: {exc.args[0].str()}") from exc

    def assign_from_start(self, topic: str, partitions: Sequence[int]) -> None:
        """Read ``partitions`` of ``topic`` from their first offset, outside any group (no join, no
        commits): for a reader that follows a whole compacted topic. Adds to the current assignment."""
        self._subscribed = True  # records flow now: start-up checks must no longer poll them away
        try:
            self._consumer.incremental_assign(
                [TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in partitions]
            )
        except KafkaException as exc:
            where = f"{topic} {list(partitions)}"
            raise ConsumerFailedError(f"cannot assign {where}: {exc.args[0].str()}") from exc

    def end_offsets(self, topic: str, partitions: Sequence[int], timeout: float) -> dict[int, int]:
        """Each partition's end offset as the broker says now (BrokerUnreachableError if it does not)."""
        ends: dict[int, int] = {}
        for partition in partitions:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout, cached=False
                )
            except KafkaException as exc:
                raise BrokerUnreachableError(
                    f"no end offset of {topic}/{partition} within {timeout:.0f}s ({exc.args[0].str()})"
                ) from exc
            ends[partition] = int(high)
        return ends

    def consume(self, max_records: int, timeout: float) -> list[Message]:
        """Up to ``max_records`` records, as soon as there are any; transport errors are logged (librdkafka
        retries them), a fatal one raises :class:`ConsumerFailedError`.

        What is already queued is taken at once; only an empty queue waits, up to ``timeout``, and then
        for the first record, not for a full batch: librdkafka's own ``consume(n, timeout)`` waits for
        ``n`` records or the whole timeout, so at a steady rate a large batch held its first record
        for most of the timeout before scoring began. Under a backlog the queue holds full batches, so
        throughput is unchanged; at a low rate batches shrink to what each fetch brought.
        """
        try:
            records = self._consumer.consume(max_records, 0)
            if not records and timeout > 0:
                records = self._consumer.consume(1, timeout)
                if records and max_records > 1:
                    records += self._consumer.consume(max_records - 1, 0)
        except KafkaException as exc:
            raise ConsumerFailedError(f"consume failed: {exc.args[0].str()}") from exc
        self._watch.raise_if_refused()
        good: list[Message] = []
        for record in records:
            error = record.error()
            if error is None:
                good.append(record)
                continue
            if error.code() in self._unused:
                continue
            refused = refusal(
                error, self._watch.who, operation="Read", topic=record.topic(), group=self._group
            )
            if refused is not None:
                raise refused
            if error.fatal():
                raise ConsumerFailedError(f"fatal consumer error: {error.str()}")
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error.str())
        return good

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit explicit offsets (once per checkpoint, never per record), without waiting for the answer.

        Asynchronous because a synchronous commit has no time-out of its own: with the coordinator
        frozen it blocked the loop for the whole outage (liveness, metrics and SIGTERM with it). The
        answer comes back through ``on_commit`` while consuming (``close`` waits for it): a
        non-retriable failure is raised by the next call, a retriable one is only logged (the outputs
        are acknowledged already; a later commit, or the partition's next owner, takes over)."""
        if self._commit_failure is not None:
            failure, self._commit_failure = self._commit_failure, None
            raise failure
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            raise self._commit_error(exc.args[0]) from exc

    def _commit_error(self, error: KafkaError, topic: str | None = None) -> KafkaLayerError:
        refused = refusal(error, self._watch.who, operation="Read", topic=topic, group=self._group)
        if refused is not None:
            return refused
        retriable = error.retriable() or error.code() in _SKIPPABLE_COMMIT_CODES
        return CommitFailedError(f"offset commit failed: {error.str()}", retriable=retriable)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        errors = (
            [(error, None)] if error is not None else [(tp.error, tp.topic) for tp in partitions if tp.error]
        )
        for problem, topic in errors:
            failure = self._commit_error(problem, topic)
            if isinstance(failure, CommitFailedError) and failure.retriable:
                log.warning("%s; a later checkpoint commits past it (results are acknowledged)", failure)
            elif self._commit_failure is None:
                self._commit_failure = failure

    def committed_offsets(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        """The group's committed offsets of ``partitions`` as the coordinator has them now (stable ones:
        under read_committed the coordinator first settles transactional commits in progress)."""
        if not partitions:
            return []
        try:
            return list(self._consumer.committed(partitions, timeout=timeout))
        except KafkaException as exc:
            raise self._commit_error(exc.args[0]) from exc

    def seek(self, positions: list[TopicPartition]) -> None:
        """Move the fetch position of each partition (to reprocess after an abort or a timed-out delivery)."""
        try:
            for tp in positions:
                self._consumer.seek(tp)
        except KafkaException as exc:
            raise ConsumerFailedError(f"cannot rewind to {positions}: {exc.args[0].str()}") from exc

    def pause(self) -> None:
        """Stop fetching every assigned partition (backpressure); positions are kept."""
        self._flow("pause")

    def resume(self, partitions: list[TopicPartition] | None = None) -> None:
        """Fetch ``partitions`` (default: every assigned one) again, from where the application left off.

        A partition keeps its paused state across a loss and a new assignment in librdkafka: one paused
        during an outage came back paused, and was never fetched again, unless resumed by name."""
        self._flow("resume", partitions)

    def _flow(self, name: str, partitions: list[TopicPartition] | None = None) -> None:
        try:
            chosen = self._consumer.assignment() if partitions is None else partitions
            if chosen:
                getattr(self._consumer, name)(chosen)
        except KafkaException as exc:
            raise ConsumerFailedError(f"{name} failed: {exc.args[0].str()}") from exc

    def position(self, topic: str, partition: int) -> int | None:
        """The next offset the application will read from ``topic/partition`` (None: not known yet)."""
        try:
            positions = self._consumer.position([TopicPartition(topic, partition)])
        except KafkaException:
            return None
        offset = positions[0].offset if positions else -1
        return int(offset) if offset >= 0 else None

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The partition's end offset as last seen in fetch responses (no request is made)."""
        try:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            return None
        return int(high) if high >= 0 else None

    def assignment(self) -> list[TopicPartition]:
        """Currently assigned partitions."""
        try:
            return list(self._consumer.assignment())
        except KafkaException as exc:
            raise ConsumerFailedError(f"assignment unknown: {exc.args[0].str()}") from exc

    def close(self, timeout: float) -> bool:
        """Leave the group now (a clean rebalance for the others instead of a session time-out).

        Waits ``timeout`` at most; False if the close goes on in the background. librdkafka gives the
        LeaveGroup request 5 s, but first waits for offset commits in flight, and with the coordinator
        frozen one of those held the close until the broker answered again. The group
        drops a member that did not leave after its ``session.timeout.ms``."""
        failures: list[KafkaException] = []

        def close() -> None:
            try:
                self._consumer.close()
            except KafkaException as exc:
                failures.append(exc)

        closing = threading.Thread(target=close, name="kafka-close", daemon=True)
        closing.start()
        closing.join(timeout)
        if closing.is_alive():
            return False
        if failures:
            raise ConsumerFailedError(f"closing the consumer failed: {failures[0].args[0].str()}")
        return True
