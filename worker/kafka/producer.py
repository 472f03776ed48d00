"""Producer: asynchronous produce with bounded backpressure, delivery tracking and optional transactions."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka as ck
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.kafka.errors import (
    ClientConfigError,
    DeliveryFailedError,
    KafkaLayerError,
    KafkaRefusedError,
    TransactionFailedError,
)
from worker.kafka.refusals import ErrorWatch, refusal

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]

# The record expired waiting for the broker: an outage, not a refusal.
_TIMED_OUT = frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT})
# Records purged by our own abort_transaction: the abort already makes us reprocess them.
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
_QUEUE_FULL_POLL_SECONDS = 0.05
# librdkafka's own limit for one transactional call; the caller waits in shorter steps (see _Call).
_TXN_CALL_SECONDS = 30.0
# A transactional call takes milliseconds when the broker answers: this long is hung (see hung_call).
_HUNG_AFTER_SECONDS = 10.0
# Fenced by a newer instance with our transactional id: the one error that must stop the process.
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


@dataclass
class _Call:
    """A transactional call running on a daemon thread.

    librdkafka's send_offsets_to_transaction does not honour its timeout with the broker frozen: a 1 s
    call blocked for the whole freeze, and the worker's loop, liveness and SIGTERM with it. On a thread,
    the caller waits in steps of its own and the call goes on; the next call of the same step waits for
    it instead of issuing it again.
    """

    name: str
    done: threading.Event = field(default_factory=threading.Event)
    error: KafkaException | None = None
    started: float = field(default_factory=time.monotonic)

    def start(self, function: Callable[..., Any], *args: Any) -> _Call:
        def run() -> None:
            try:
                function(*args)
            except KafkaException as exc:
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, name=f"kafka-{self.name}", daemon=True).start()
        return self


class Producer:
    """Idempotent (or transactional) producer that never drops a record.

    When librdkafka's queue is full, :meth:`produce` serves delivery reports and waits, for at most
    ``buffer_wait_seconds`` (then it fails loudly), calling ``on_wait`` about every 50 ms: it keeps the
    caller's liveness up and returns False to give up (a stop was requested). A failed delivery is
    remembered and raised by :meth:`raise_on_failure`, so a checkpoint never commits past it.
    """

    def __init__(
        self,
        config: dict[str, Any],
        transactional_id: str | None = None,
        *,
        buffer_wait_seconds: float = 300.0,
        on_wait: Callable[[], bool] | None = None,
    ) -> None:
        # Success reports are never read (failures are, and flush() counts what is unacknowledged):
        # serving one callback per record was a fifth of the producer's time.
        self._watch = ErrorWatch(config)
        settings = {
            "delivery.report.only.error": True,
            **config,
            "enable.idempotence": True,
            "acks": "all",
            "error_cb": self._watch,
        }
        if transactional_id:
            settings["transactional.id"] = transactional_id
        self.transactional = bool(transactional_id)
        self._settings = settings
        self._transactional_id = transactional_id
        self._buffer_wait = buffer_wait_seconds
        self._on_wait = on_wait or (lambda: True)
        self._producer = self._client()
        self._failure: KafkaError | None = None
        self._failures = 0
        self._running: _Call | None = None
        self._replaced = False  # reinitialise() made a new client that has not registered yet

    def _client(self) -> ck.Producer:
        try:
            return ck.Producer(self._settings)
        except KafkaException as exc:
            raise ClientConfigError(f"invalid producer configuration: {exc.args[0].str()}") from exc

    def _on_delivery(self, error: KafkaError | None, record: Any) -> None:
        if error is not None and error.code() not in _PURGED:
            self._failures += 1
            if self._failure is None:
                self._failure = error
                self._watch.refused = self._watch.refused or refusal(
                    error, self._watch.who, operation="Write", topic=record.topic()
                )

    def _produce_error(self, topic: str, exc: KafkaException) -> KafkaLayerError:
        """A refusal (a revoked Write ACL is refused at produce time) by its name, else a failed delivery."""
        error: KafkaError = exc.args[0]
        refused = refusal(error, self._watch.who, operation="Write", topic=topic)
        return refused or DeliveryFailedError(f"cannot produce to {topic!r}: {error}")

    def _raise_if_refused(self) -> None:
        """A refusal seen by the error callback or in a delivery report (the same wording either way)."""
        self._watch.raise_if_refused()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record (to ``partition``, else the key's; value None: a tombstone); while the
        local queue is full, serve deliveries and wait (bounded)."""
        waiting_since: float | None = None
        # confluent-kafka's partition=-1 is "by key" (RD_KAFKA_PARTITION_UA)
        where = -1 if partition is None else partition
        while True:
            try:
                self._producer.produce(
                    topic, value, key, where, headers=headers, on_delivery=self._on_delivery
                )
                return
            except BufferError:
                now = time.monotonic()
                waiting_since = waiting_since or now
                if now - waiting_since > self._buffer_wait or not self._on_wait():
                    raise DeliveryFailedError(
                        f"the producer queue stayed full for {now - waiting_since:.0f}s with "
                        f"{len(self._producer)} output record(s) unacknowledged: the broker is unreachable "
                        "or too slow (the wait is bounded by BROKER_OUTAGE_BUDGET_SECONDS)"
                    ) from None
                self._producer.poll(_QUEUE_FULL_POLL_SECONDS)  # backpressure: let deliveries drain
            except KafkaException as exc:
                raise self._produce_error(topic, exc) from exc

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
                raise self._produce_error(topic, exc) from exc

    def poll(self) -> None:
        """Serve delivery reports without waiting; raise a refusal they or the error callback brought."""
        try:
            self._producer.poll(0)
        except KafkaException as exc:  # a fatal error (a fenced or refused transactional producer)
            raise self._fatal(exc) from exc
        self._raise_if_refused()

    def _fatal(self, exc: KafkaException) -> KafkaRefusedError | TransactionFailedError:
        refused = refusal(
            exc.args[0], self._watch.who, operation="Write", transactional_id=self._transactional_id
        )
        return (
            refused
            if refused is not None
            else TransactionFailedError(f"producer failed: {exc.args[0].str()}")
        )

    @property
    def outstanding(self) -> int:
        """Records queued or in flight, not yet acknowledged (nor failed)."""
        return len(self._producer)

    def wait_for_acks(self, timeout: float) -> int:
        """Wait up to ``timeout`` for every queued record to be acknowledged or failed; returns how many
        are still outstanding (0: all resolved; then check :meth:`raise_on_failure`)."""
        return int(self._producer.flush(timeout))

    def raise_on_failure(self) -> None:
        """Raise :class:`DeliveryFailedError` if a delivery failed since the last :meth:`forget_failures`
        (:class:`KafkaRefusedError` if the broker refused it)."""
        self._raise_if_refused()
        if self._failure is not None:
            error, count = self._failure, self._failures
            raise DeliveryFailedError(
                f"{count} output record(s) were not acknowledged by the broker: {error.str()}",
                timed_out=error.code() in _TIMED_OUT,
            )

    def forget_failures(self) -> None:
        """The failed records' inputs will be processed again: start counting afresh."""
        self._failure, self._failures = None, 0

    def reachable(self, timeout: float) -> bool:
        """Whether a broker answers a metadata request within ``timeout`` (a probe, not a guarantee)."""
        try:
            self._producer.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    # --- transactions (exactly-once) ---------------------------------------------------------------------
    # The last three steps wait at most ``timeout`` and then raise a retriable TransactionFailedError while
    # the call goes on in the background; calling the same step again waits for it (or resumes it).

    def init_transactions(self, timeout: float) -> None:
        """Register the transactional id (fences older instances with the same id)."""
        self._call("init_transactions", timeout)

    def begin_transaction(self) -> None:
        """Open a transaction."""
        self._call("begin_transaction")

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout: float
    ) -> None:
        """Add the consumer offsets to the open transaction (committed with its outputs, or not at all)."""
        self._step("send_offsets_to_transaction", timeout, offsets, group_metadata, _TXN_CALL_SECONDS)

    def commit_transaction(self, timeout: float) -> None:
        """Commit the open transaction: its outputs and offsets become visible together."""
        self._step("commit_transaction", timeout, _TXN_CALL_SECONDS)

    def abort_transaction(self, timeout: float) -> None:
        """Abort: none of the transaction's records become visible to read_committed readers."""
        self._step("abort_transaction", timeout, _TXN_CALL_SECONDS)
        self.forget_failures()

    @property
    def running_call(self) -> str | None:
        """The transactional call out right now, if any."""
        running = self._running
        return None if running is None or running.done.is_set() else running.name

    def hung_call(self) -> tuple[str, float] | None:
        """The transactional call out for longer than a live broker ever takes, and for how long.

        librdkafka 2.x can leave send_offsets_to_transaction waiting forever for a group coordinator
        that restarted (librdkafka issues #5456, #5511): such a producer never finishes the call."""
        running = self._running
        if running is None or running.done.is_set():
            return None
        age = time.monotonic() - running.started
        return (running.name, age) if age > _HUNG_AFTER_SECONDS else None

    def reinitialise(self, timeout: float) -> None:
        """Replace the client with a new one under the same transactional id and register it.

        Registering fences the old client and makes the coordinator finish its open transaction (a
        commit already requested completes, anything else is aborted), so afterwards the group's
        committed offsets say exactly which inputs have their outputs. Raises a retriable
        :class:`TransactionFailedError` while the coordinator has not answered; call again."""
        if not self._replaced:
            abandoned = self._producer
            self._producer = self._client()
            self._running = None  # a hung call belongs to the abandoned client
            self._replaced = True
            self.forget_failures()
            # Its queues are empty or purged by the fencing; destroying it can block, so not here.
            threading.Thread(target=abandoned.purge, name="kafka-abandoned", daemon=True).start()
        self._step("init_transactions", timeout, _TXN_CALL_SECONDS)
        self._replaced = False

    def _step(self, name: str, timeout: float, *args: Any) -> None:
        running = self._running
        if running is not None and running.name != name:  # another step is still out: let it end first
            if not running.done.wait(timeout):
                raise TransactionFailedError(f"{running.name} still waiting for the broker", retriable=True)
            log.warning("%s ended (%s) before %s", running.name, running.error or "ok", name)
            running = self._running = None
        if running is None:
            running = self._running = _Call(name).start(getattr(self._producer, name), *args)
        if not running.done.wait(timeout):
            raise TransactionFailedError(f"{name} still waiting for the broker", retriable=True)
        self._running = None
        if running.error is not None:
            raise self._transaction_error(name, running.error) from running.error

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self._producer, name)(*args)
        except KafkaException as exc:
            raise self._transaction_error(name, exc) from exc

    def _transaction_error(
        self, name: str, exc: KafkaException
    ) -> TransactionFailedError | KafkaRefusedError:
        """A refusal (ours, or one the deliveries brought) stops the worker; aborting would only repeat it."""
        with contextlib.suppress(KafkaException):  # a fatal error is raised by poll too: it is exc itself
            self._producer.poll(0)
        refused = self._watch.refused or refusal(
            exc.args[0], self._watch.who, operation="Write", transactional_id=self._transactional_id
        )
        return refused if refused is not None else _transaction_error(name, exc)


def _transaction_error(name: str, exc: KafkaException) -> TransactionFailedError:
    error: KafkaError = exc.args[0]
    abortable = error.txn_requires_abort()
    fenced = error.code() in _FENCED
    return TransactionFailedError(
        f"{name} failed: {error.str()}",
        retriable=error.retriable() and not abortable and not error.fatal(),
        abortable=abortable,
        # Fatal for this client but not for the process: a new client under the same id goes on.
        reinitialise=error.fatal() and not fenced,
    )
