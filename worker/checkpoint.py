"""The commit protocol, in one place.

A checkpoint covers every input record processed since the previous one. Nothing is committed per
record: outputs are produced asynchronously and offsets move only when a checkpoint commits. Each broker
call of :meth:`Checkpoint.commit` waits one step (``step_seconds``) at most, so a broker outage never stops
the loop: while the broker does not answer the checkpoint is *waiting* (it returns ``WAITING``, the loop
keeps its liveness and metrics up and calls again) and its input partitions are paused, so no new input
is fetched beyond the outputs already in flight (backpressure, never a drop).

At-least-once (default):
    1. Each record is processed and exactly one output (a result or a dead letter) is handed to the
       producer; :meth:`Checkpoint.track_batch` then records, once per partition and batch,
       ``last_offset + 1`` as the partition's next offset.
    2. :meth:`Checkpoint.commit` waits until the broker acknowledged every output produced so far
       (idempotent producer, ``acks=all``). While it has not, the checkpoint is waiting (above); past
       ``outage_budget_seconds`` of waiting it raises :class:`BrokerOutageError`, committing nothing.
    3. If a delivery failed: a time-out (the broker stayed unreachable for ``message.timeout.ms``) rewinds
       the consumer to the last committed offsets, so the records are processed again (``REWOUND``); any
       other failure raises :class:`DeliveryFailedError` and commits nothing (duplicates are possible after
       a restart, losses are not).
    4. It commits the tracked offsets synchronously: an offset is committed only after the outputs of that
       record and of every earlier record of its partition were acknowledged. A commit the group refuses
       as retriable is ``SKIPPED``: the outputs are acknowledged, a later checkpoint commits past them.
    5. It resumes the paused partitions and starts the next checkpoint.

Exactly-once (``PROCESSING_GUARANTEE=exactly_once``):
    1. A transaction is open whenever records are being processed (:meth:`Checkpoint.begin`); outputs are
       produced inside it and :meth:`Checkpoint.track_batch` records offsets as above.
    2. :meth:`Checkpoint.commit` waits for the acknowledgements as in at-least-once step 2 (same pause,
       same budget).
    3. It sends the tracked offsets to the transaction with the consumer group's metadata (so a fenced,
       zombie member cannot commit) ...
    4. ... and commits the transaction: outputs and offsets become visible together, or not at all.
       A step that times out is called again by the next :meth:`commit` (librdkafka resumes it). A
       timed-out delivery or an abortable error aborts the transaction (the abort, too, is retried until
       the broker answers) and rewinds the consumer to the committed offsets, so the records are
       processed again in a new transaction (``REWOUND``).
    5. It resumes the paused partitions; the next records open the next transaction.

    Recovery from a broken producer (a broker crash and restart): a fatal error other than fencing,
    or a step out far longer than a live broker takes while the broker answers (librdkafka can wait
    forever for a restarted group coordinator), replaces the producer with a new one under the same
    transactional id. Registering it fences the old one and makes the coordinator finish the open
    transaction, committed if its commit was already requested, else aborted; so the consumer rewinds
    to the group's committed offsets as the broker now has them (``REWOUND``). A producer fenced by
    another instance with the same transactional id is the one fatal case: it is raised.

On partition revocation the checkpoint finishes (steps 2-5) within ``timeout_seconds`` before the
partitions go, else abandons its work; on partition loss (the member was already thrown out) the open
work is abandoned at once: it is not ours to commit any more. At shutdown :meth:`Checkpoint.finish` tries
steps 2-5 until a deadline; what it cannot commit stays uncommitted and is processed again by the
partitions' next owner.
"""

from __future__ import annotations

import enum
import logging
import time

from confluent_kafka import TopicPartition

from worker.kafka import (
    BrokerOutageError,
    CommitFailedError,
    Consumer,
    DeliveryFailedError,
    Producer,
    TransactionFailedError,
)

log = logging.getLogger(__name__)

_WARN_AFTER_SECONDS = 5.0  # a flush slower than this is an outage worth a WARNING, not a busy broker
_WARN_EVERY_SECONDS = 10.0
_PROBE_SECONDS = 0.5  # a metadata request a live broker answers in milliseconds


class Outcome(enum.Enum):
    """What one :meth:`Checkpoint.commit` call achieved."""

    COMMITTED = "committed"  # offsets (exactly-once: with the transaction) are durable
    SKIPPED = "skipped"  # outputs acknowledged; the group refused the offset commit as retriable
    REWOUND = "rewound"  # nothing committed: the records are processed again from the committed offsets
    WAITING = "waiting"  # the broker has not answered yet: call commit() again


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
        outage_budget_seconds: float,
        step_seconds: float = 1.0,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self.exactly_once = exactly_once
        self._interval = interval_seconds
        self._max_records = max_records
        self._timeout = timeout_seconds
        self._budget = outage_budget_seconds
        self._step = step_seconds
        self._offsets: dict[tuple[str, int], int] = {}
        # Where each partition would restart from: our last commit, else the first offset we processed.
        self._restart_from: dict[tuple[str, int], int] = {}
        self._records = 0
        self._started = time.monotonic()
        self._in_transaction = False
        self._offsets_sent = False  # exactly-once step 3 done for the open transaction
        self._committing = False  # exactly-once step 4 started (its outcome is in doubt until it returns)
        self._aborting = False
        self._replacing_producer = False  # recovery: a new producer registers, then the rewind
        self._rewinding_to_committed = False  # recovery: the group's committed offsets are read back
        self._unreachable = False  # the last probe of a long wait found no broker answering
        self._attempt_started = 0.0
        self._waiting_since: float | None = None
        self._warned_at = 0.0
        self._paused = False
        self.commits = 0
        self.rewinds = 0
        self.transactions = 0  # numbers the transactions this process opened (for the `txn` header)

    # step 1 -------------------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Open the transaction that the next outputs go into (exactly-once only; idempotent)."""
        if self.waiting:
            raise RuntimeError("no new work while the checkpoint waits for the broker")
        if self.exactly_once and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
            self.transactions += 1

    def track_batch(
        self, topic: str, partition: int, first_offset: int, last_offset: int, records: int
    ) -> None:
        """Record that ``records`` records of ``topic/partition``, ``first_offset`` to ``last_offset``, were
        processed and their outputs produced (the same as :meth:`track` for each of them)."""
        key = (topic, partition)
        self._restart_from.setdefault(key, first_offset)
        if last_offset + 1 > self._offsets.get(key, -1):
            self._offsets[key] = last_offset + 1
        self._records += records

    def track(self, topic: str, partition: int, offset: int) -> None:
        """Record that ``offset`` of ``topic/partition`` was processed and its output produced."""
        self.track_batch(topic, partition, offset, offset, 1)

    def due(self) -> bool:
        """Whether the interval elapsed or enough records were processed since the last commit."""
        if not self._records:
            return False
        return self._records >= self._max_records or time.monotonic() - self._started >= self._interval

    @property
    def waiting(self) -> bool:
        """Whether a commit, an abort or a recovery waits for the broker: process no new input until done."""
        return (
            self._waiting_since is not None
            or self._aborting
            or self._replacing_producer
            or self._rewinding_to_committed
        )

    @property
    def waited_seconds(self) -> float:
        """How long the current commit has waited for the broker (0: not waiting)."""
        return 0.0 if self._waiting_since is None else time.monotonic() - self._waiting_since

    @property
    def unreachable_seconds(self) -> float:
        """How long the current commit has waited for a broker that does not answer (0: it answers)."""
        return self.waited_seconds if self._unreachable else 0.0

    @property
    def uncommitted_records(self) -> int:
        """Input records processed since the last commit."""
        return self._records

    # steps 2-5 ----------------------------------------------------------------------------------------------
    def commit(self) -> Outcome:
        """One step of making everything tracked durable (see the numbered steps in the module docstring).

        Blocks for about ``step_seconds`` at most. Raises :class:`BrokerOutageError` once the broker has
        been unreachable for longer than the outage budget, and the errors of steps 3-4 that are fatal."""
        return self._commit_step(self._step)

    def finish(self, timeout: float) -> Outcome:
        """Commit steps until done or ``timeout`` elapsed (shutdown, revocation); ``WAITING`` if not done."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            outcome = self._commit_step(max(0.0, min(self._step, remaining)))
            if outcome is not Outcome.WAITING or remaining <= 0:
                break
        if outcome is Outcome.WAITING:
            log.warning(
                "gave up committing after %.0fs: %d output(s) unacknowledged, so the last %d input records "
                "stay uncommitted and will be processed again",
                timeout,
                self._producer.outstanding,
                self._records,
            )
        return outcome

    def _commit_step(self, step: float) -> Outcome:
        if self._waiting_since is None:
            self._attempt_started = time.monotonic()
        try:
            outcome = self._next_step(step)
        except TransactionFailedError as exc:
            if not exc.reinitialise:
                raise
            outcome = self._replace_producer(str(exc), step)
        if outcome is Outcome.WAITING and not self._replacing_producer:
            hung = self._producer.hung_call()
            if hung is not None and self._producer.reachable(_PROBE_SECONDS):
                name, seconds = hung
                outcome = self._replace_producer(
                    f"{name} has not returned for {seconds:.0f}s though the broker answers", step
                )
        if outcome is Outcome.WAITING:
            self._wait()
        else:
            self._done(outcome)
        return outcome

    def _next_step(self, step: float) -> Outcome:
        if self._replacing_producer:
            return self._replacing_step(step)
        if self._rewinding_to_committed:
            return self._rewind_to_committed(step)
        if self._aborting:
            return self._abort_step(step)
        return self._attempt(step)

    def _attempt(self, step: float) -> Outcome:
        remaining = self._producer.wait_for_acks(step)  # step 2
        try:
            self._producer.raise_on_failure()  # step 3
        except DeliveryFailedError as exc:
            if not exc.timed_out:
                raise
            if remaining:
                return Outcome.WAITING  # let every output resolve first: the rewind covers them all
            log.warning("%s: the broker was unreachable; reprocessing from the last committed offsets", exc)
            if self.exactly_once:
                self._aborting = True
                return self._abort_step(step)
            return self._rewind()
        if remaining:
            return Outcome.WAITING
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._offsets.items())]
        if self.exactly_once:
            return self._commit_transaction(offsets, step)
        try:
            self._consumer.commit(offsets)  # step 4
        except CommitFailedError as exc:
            if not exc.retriable:
                raise
            log.warning("%s; continuing (at-least-once holds: results are already acknowledged)", exc)
            return Outcome.SKIPPED
        return Outcome.COMMITTED

    def _commit_transaction(self, offsets: list[TopicPartition], step: float) -> Outcome:
        if not self._in_transaction:
            return Outcome.COMMITTED  # nothing was processed
        try:
            if offsets and not self._offsets_sent:  # step 3
                self._producer.send_offsets_to_transaction(offsets, self._consumer.group_metadata(), step)
                self._offsets_sent = True
            if not self._committing:
                # Logged first so a reader of a killed worker's log knows this commit's outcome is in doubt.
                log.debug("transaction %d committing: %d records", self.transactions, self._records)
                self._committing = True
            self._producer.commit_transaction(step)  # step 4
        except TransactionFailedError as exc:
            if exc.retriable:
                return Outcome.WAITING  # the same call resumes the step
            if not exc.abortable:
                raise
            log.warning(
                "transaction %d aborted (%s): reprocessing from the last committed offsets",
                self.transactions,
                exc,
            )
            self._aborting = True
            return self._abort_step(step)
        log.debug("transaction %d committed: %d records", self.transactions, self._records)
        self._in_transaction = False
        return Outcome.COMMITTED

    def _abort_step(self, step: float) -> Outcome:
        if self._in_transaction:
            try:
                self._producer.abort_transaction(step)
            except TransactionFailedError as exc:
                if exc.retriable:
                    return Outcome.WAITING
                raise
            self._in_transaction = False
        self._aborting = False
        return self._rewind()

    def _rewind(self) -> Outcome:
        """Nothing since the last commit counts: fetch those records again (duplicates, never losses)."""
        positions = [TopicPartition(t, p, self._restart_from[(t, p)]) for t, p in sorted(self._offsets)]
        self._resume()  # before the seek, so the resumed fetch starts from the rewound positions
        self._consumer.seek(positions)
        self._producer.forget_failures()
        self.rewinds += 1
        return Outcome.REWOUND

    # recovery (exactly-once) ------------------------------------------------------------------------------
    def _replace_producer(self, reason: str, step: float) -> Outcome:
        log.warning(
            "transaction %d cannot finish (%s): replacing the producer; its open transaction is "
            "resolved by the coordinator and processing resumes from the committed offsets",
            self.transactions,
            reason,
        )
        self._replacing_producer = True
        self._aborting = self._offsets_sent = self._committing = False
        return self._replacing_step(step)

    def _replacing_step(self, step: float) -> Outcome:
        try:
            self._producer.reinitialise(step)
        except TransactionFailedError as exc:
            if exc.retriable:
                return Outcome.WAITING
            raise
        log.info("new producer registered: transaction %d was resolved by the coordinator", self.transactions)
        self._replacing_producer = False
        self._in_transaction = False
        self._rewinding_to_committed = True
        return self._rewind_to_committed(step)

    def _rewind_to_committed(self, step: float) -> Outcome:
        """Rewind to the offsets the group has committed: the transaction in doubt may have committed."""
        keys = sorted(self._offsets)
        try:
            committed = self._consumer.committed_offsets([TopicPartition(t, p) for t, p in keys], step)
        except CommitFailedError as exc:
            if not exc.retriable:
                raise
            return Outcome.WAITING  # the coordinator has not answered yet
        for tp in committed:
            if tp.offset >= 0:
                self._restart_from[(tp.topic, tp.partition)] = tp.offset
        self._rewinding_to_committed = False
        return self._rewind()

    def _wait(self) -> None:
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = self._attempt_started
        # Every call, not once: partitions assigned while waiting are paused too.
        self._consumer.pause()
        self._paused = True
        waited = now - self._waiting_since
        if waited > self._budget:
            self._unreachable = not self._producer.reachable(_PROBE_SECONDS)
            raise BrokerOutageError(
                f"{self._waited_for(waited)}, past the outage budget "
                f"(BROKER_OUTAGE_BUDGET_SECONDS={self._budget:g}): {self._producer.outstanding} output(s) "
                f"unacknowledged, {self._records} input record(s) uncommitted"
            )
        if waited >= _WARN_AFTER_SECONDS and now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._unreachable = not self._producer.reachable(_PROBE_SECONDS)
            log.warning(
                "%s, %d outputs pending (%d input records uncommitted): "
                "waiting, no new input fetched; giving up after %gs (BROKER_OUTAGE_BUDGET_SECONDS)",
                self._waited_for(waited),
                self._producer.outstanding,
                self._records,
                self._budget,
            )
            self._warned_at = now

    def _waited_for(self, waited: float) -> str:
        """What the wait is about, as the last probe found it: a silent broker, or a step that hangs."""
        if self._unreachable:
            return f"broker unreachable for {waited:.0f} s"
        running = self._producer.running_call
        step = "the new producer's registration" if self._replacing_producer else running or "the commit"
        return f"the broker answers, but {step} has waited {waited:.0f} s"

    def _done(self, outcome: Outcome) -> None:
        if outcome is Outcome.COMMITTED:
            self.commits += 1
            if self._offsets:
                log.debug("checkpoint committed %d records: %s", self._records, sorted(self._offsets.items()))
        if outcome in (Outcome.COMMITTED, Outcome.SKIPPED):
            self._restart_from.update(self._offsets)  # acknowledged: restarting there loses nothing
        if self.waited_seconds >= _WARN_AFTER_SECONDS:
            log.warning(
                "broker answering again after %.0fs: checkpoint %s", self.waited_seconds, outcome.value
            )
        self._resume()
        self._waiting_since = None
        self._unreachable = False
        self._offsets_sent = self._committing = False
        self._reset()

    def _resume(self) -> None:
        if self._paused:
            self._consumer.resume()
            self._paused = False

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """New partitions: fetch them, unless the checkpoint waits (then they are paused with the rest)."""
        if self.waiting:
            self._consumer.pause()
            self._paused = True
        else:
            self._consumer.resume(partitions)

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Partitions are being taken away: commit what we hold for them first (abandon it if we cannot)."""
        # Commits every partition: simpler, and correct for the ones we keep too.
        if self.finish(self._timeout) is Outcome.WAITING:
            self.abandon()
        self._forget(partitions)

    def abandon(self) -> None:
        """Partitions were lost: drop the open work without committing (exactly-once: abort it).

        A checkpoint that was waiting goes on waiting (same outage budget) for the outputs it already
        handed to the producer: the broker is no more reachable for having taken the partitions away."""
        self._reset()
        self._restart_from.clear()
        self._offsets_sent = self._committing = False
        if self.exactly_once and self._in_transaction and not self._replacing_producer:
            self._aborting = True  # until the abort went through, no new transaction (waiting is True)
            try:
                self._abort_step(self._step)
            except TransactionFailedError as exc:
                if not exc.reinitialise:
                    raise
                self._replace_producer(str(exc), self._step)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._restart_from.pop((tp.topic, tp.partition), None)

    def _reset(self) -> None:
        self._offsets.clear()
        self._records = 0
        self._started = time.monotonic()
