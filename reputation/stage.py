"""The reputation stage: combines the workers' partial aggregates into one judged record per brand and
event-time window, with its state in Kafka.

State protocol (exactly-once always: state, outputs and input offsets move together or not at all):
    1. Partials and the changelog are co-partitioned: partition p of ``REPUTATION_STATE_TOPIC`` holds the
       state of exactly the brands whose partials arrive on partition p of ``REPUTATION_PARTIALS_TOPIC``
       (the stage writes each entry to the partition its input came from). Both topics must have the
       same partition count; the stage refuses to start otherwise.
    2. On assignment of partition p the stage reads changelog partition p from its start to its end,
       ``read_committed``: the last value per key is the state as of the last committed transaction,
       which is also where the group's committed offset of p resumes.
    3. Each batch of partials is applied in log order (:class:`reputation.state.StageState`): counts
       into open windows, progress into the watermark. Windows the watermark passed are judged and
       produced to ``REPUTATION_TOPIC`` inside the open transaction; the checkpoint tracks the input
       offsets.
    4. When the checkpoint is due (``COMMIT_INTERVAL_SECONDS``), at a revocation and at shutdown, every
       state entry changed since the last checkpoint is produced to the changelog, once, in the same
       transaction; then the checkpoint (:class:`worker.checkpoint.Checkpoint`, the worker's own commit
       protocol) sends the input offsets to the transaction and commits it: outputs, changelog and
       offsets together.
    5. If a checkpoint rewinds (an aborted transaction, a replaced producer, a lost partition), the
       in-memory state is ahead of what Kafka holds: it is dropped and every owned partition restored
       again as in step 2, from the same committed point the consumer rewinds to.
    6. On revocation the checkpoint commits first (step 4), then the partitions' state and gauges go.

A crash (kill -9) loses nothing: the open transaction is aborted (when the same ``TRANSACTIONAL_ID``
registers again, or at the transaction time-out), and the next owner restores from step 2.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import confluent_kafka as ck
from confluent_kafka import TopicPartition

from reputation.metrics import StageMetrics
from reputation.settings import StageSettings
from reputation.state import BadRecordError, StageState
from worker.checkpoint import Checkpoint, Outcome
from worker.kafka import Consumer, ConsumerFailedError, Producer, client_config, redact
from worker.metrics import Heartbeat
from worker.signals import stop_on_signals

log = logging.getLogger("reputation")

_RESTORE_TIMEOUT_SECONDS = 120.0
_EXIT_ALLOWANCE_SECONDS = 7.5


class StageConfigError(ValueError):
    """The topics do not fit the protocol (e.g. the changelog is not co-partitioned)."""


class Stage:
    """One member of the stage's consumer group. :meth:`run` returns when asked to stop."""

    def __init__(self, settings: StageSettings, metrics: StageMetrics, heartbeat: Heartbeat) -> None:
        self.settings = settings
        self.metrics = metrics
        self.heartbeat = heartbeat
        self._base = client_config(
            settings.kafka_bootstrap_servers, settings.kafka_properties(), {"client.id": settings.client_id}
        )
        consumer_config = {
            **self._base,
            "group.id": settings.reputation_group,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "allow.auto.create.topics": False,
            "fetch.wait.max.ms": self._base.get("fetch.wait.max.ms", 100),
        }
        log.info("kafka consumer config: %s", redact(consumer_config))
        self.consumer = Consumer(consumer_config)
        self.producer = Producer(
            {**self._base, "linger.ms": self._base.get("linger.ms", 5)},
            transactional_id=settings.transactional_id or settings.client_id,
            buffer_wait_seconds=settings.broker_outage_budget_seconds,
            on_wait=self._keep_alive,
        )
        self.checkpoint = Checkpoint(
            self.consumer,
            self.producer,
            exactly_once=True,
            interval_seconds=settings.commit_interval_seconds,
            max_records=1_000_000,
            timeout_seconds=settings.shutdown_timeout_seconds,
            outage_budget_seconds=settings.broker_outage_budget_seconds,
        )
        self.state = StageState(
            settings.reputation_window_seconds,
            settings.grace_seconds,
            settings.detector,
            settings.brand_top_terms,
        )
        self._owned: set[int] = set()
        self._rewinds = 0
        self._commits_counted = 0
        self._stop_at: float | None = None
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Finish the batch, commit, leave (signal-handler safe)."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.settings.shutdown_timeout_seconds
            log.info("stop requested: committing and leaving the group")

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop)

    def _keep_alive(self) -> bool:
        self.heartbeat.beat()
        self.metrics.loop_heartbeat.set(time.time())
        return self._stop_at is None

    def start(self) -> None:
        """Fail fast: the three topics exist and the changelog is co-partitioned (protocol step 1)."""
        s = self.settings
        topics = [s.reputation_partials_topic, s.reputation_state_topic, s.reputation_topic]
        partitions = self.consumer.check_topics(topics, s.startup_timeout_seconds)
        if partitions[s.reputation_partials_topic] != partitions[s.reputation_state_topic]:
            raise StageConfigError(
                f"{s.reputation_state_topic!r} has {partitions[s.reputation_state_topic]} partitions and "
                f"{s.reputation_partials_topic!r} {partitions[s.reputation_partials_topic]}: the changelog "
                "must have as many (partition p holds the state of partials partition p)"
            )
        log.info(
            "%ds event-time windows, %gs grace: %s -> %s (state: %s, %d partitions)",
            s.reputation_window_seconds,
            s.grace_seconds,
            s.reputation_partials_topic,
            s.reputation_topic,
            s.reputation_state_topic,
            partitions[s.reputation_state_topic],
        )
        self.producer.init_transactions(s.startup_timeout_seconds)
        self.consumer.subscribe(
            [s.reputation_partials_topic], self._on_assign, self._on_revoke, self._on_lost
        )

    def run(self) -> Outcome:
        """Process until stopped; then commit and leave. Returns the last checkpoint's outcome."""
        try:
            while self._keep_alive():
                waiting = self.checkpoint.waiting
                records = self.consumer.consume(self.settings.batch_size, 0.0 if waiting else 0.2)
                if records and self.checkpoint.waiting:
                    self._put_back(records)
                elif records:
                    self.checkpoint.begin()
                    self.process(records)
                self.producer.poll()
                if self.checkpoint.waiting or self.checkpoint.due():
                    self._commit()
            left = (self._stop_at or time.monotonic()) - time.monotonic() - _EXIT_ALLOWANCE_SECONDS
            if not self.checkpoint.waiting:
                self._write_changelog()
            outcome = self.checkpoint.finish(max(0.5, left))
            self._count_commits()
        finally:
            self._closing = True
            if not self.consumer.close(5.0):
                log.warning("leaving the group did not finish in time: the session time-out does the rest")
        return outcome

    def _commit(self) -> None:
        self._write_changelog()
        self.checkpoint.commit()
        self._count_commits()

    def _write_changelog(self) -> None:
        """Protocol step 4: the changed state entries, into the open transaction (none while waiting:
        no input was applied since the last call)."""
        for partition, key, value in self.state.drain():
            self.producer.produce(self.settings.reputation_state_topic, value, key, partition=partition)

    def _count_commits(self) -> None:
        self.metrics.checkpoints.inc(self.checkpoint.commits - self._commits_counted)
        self._commits_counted = self.checkpoint.commits
        if self.checkpoint.rewinds != self._rewinds:  # protocol step 5
            self._rewinds = self.checkpoint.rewinds
            log.warning("checkpoint rewound: restoring partitions %s from the changelog", sorted(self._owned))
            self._restore(sorted(self._owned))

    def _put_back(self, records: list[Any]) -> None:
        first: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic(), record.partition())
            first[key] = min(first.get(key, record.offset()), record.offset())
        self.consumer.seek([TopicPartition(t, p, o) for (t, p), o in first.items()])
        self.consumer.pause()

    # --- protocol step 3 -----------------------------------------------------------------------------------
    def process(self, records: list[Any]) -> None:
        """Apply one batch, publish the windows it closed and the state it changed, track the offsets."""
        s, m = self.settings, self.metrics
        ranges: dict[int, list[int]] = {}
        late = bad = posts = 0
        for record in records:
            partition, offset = record.partition(), record.offset()
            span = ranges.setdefault(partition, [offset, offset, 0])
            span[1], span[2] = offset, span[2] + 1
            try:
                late += self.state.apply(partition, record.value() or b"")
            except (BadRecordError, KeyError, ValueError, TypeError) as exc:
                bad += 1
                log.warning("skipped %s[%d]@%d: %s", record.topic(), partition, offset, exc)
        for partition in sorted(ranges):
            for closed in self.state.close(partition):
                self.producer.produce(s.reputation_topic, closed.value, closed.key)
                m.judged(closed.brand, closed.start + s.reputation_window_seconds, closed.judgement)
                posts += closed.judgement.posts
                if closed.judgement.alert:
                    log.warning(
                        "%s: %d of %d posts negative in the window from %s (baseline %.1f%%, z %+.1f)",
                        closed.brand,
                        closed.judgement.negatives,
                        closed.judgement.posts,
                        closed.key.decode().split("|")[1],
                        100 * closed.judgement.baseline_share,
                        closed.judgement.zscore,
                    )
        for partition, (first, last, count) in ranges.items():
            self.checkpoint.track_batch(s.reputation_partials_topic, partition, first, last, count)
        m.partials.inc(len(records))
        m.posts.inc(posts)
        if late:
            m.late_posts.inc(late)
            log.warning(
                "%d post(s) arrived after their window closed (REPUTATION_GRACE_SECONDS=%g): counted on "
                "reputation_late_posts_total, not in a window (they stay on the sentiment topic)",
                late,
                s.grace_seconds,
            )
        if bad:
            m.bad_records.inc(bad)
        marks = [p.watermark(s.grace_seconds) for p in self.state.partitions.values()]
        finite = [w for w in marks if w != float("-inf")]
        if finite:
            m.watermark.set(max(finite))

    # --- protocol step 2 -----------------------------------------------------------------------------------
    def _restore(self, partitions: list[int]) -> None:
        """Read each changelog partition to its end (read_committed) into the state, all at once."""
        if not partitions:
            return
        for partition in partitions:
            self.state.drop(partition)
        started = time.monotonic()
        topic = self.settings.reputation_state_topic
        reader = ck.Consumer(
            {
                **self._base,
                "group.id": f"{self.settings.reputation_group}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        restored = 0
        pending = set(partitions)
        try:
            reader.assign([TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in partitions])
            deadline = started + _RESTORE_TIMEOUT_SECONDS
            while pending:
                if time.monotonic() > deadline:
                    raise ConsumerFailedError(
                        f"restoring {topic} partitions {sorted(pending)} took over "
                        f"{_RESTORE_TIMEOUT_SECONDS:.0f}s (an open transaction of a stage that died "
                        "under another TRANSACTIONAL_ID ends at its transaction time-out)"
                    )
                self._keep_alive()
                for message in reader.consume(1000, 0.1):
                    error = message.error()
                    if error is not None:
                        if error.code() == ck.KafkaError._PARTITION_EOF:
                            pending.discard(message.partition())
                        elif error.fatal():
                            raise ConsumerFailedError(f"restoring {topic}: {error.str()}")
                        continue
                    key, value, where = message.key(), message.value(), message.partition()
                    if key is not None and where is not None:  # a None value: a tombstone
                        self.state.restore(where, key, value)
                        restored += 1
        finally:
            reader.close()
        self.state.drain()  # restored entries are not changes
        self.metrics.restored_records.inc(restored)
        brands = sum(len(self.state.partitions[p].brands) for p in partitions if p in self.state.partitions)
        log.info(
            "partitions %s: state restored from %d changelog records in %.1fs (%d brands)",
            sorted(partitions),
            restored,
            time.monotonic() - started,
            brands,
        )

    # --- rebalance callbacks (run inside consume) ----------------------------------------------------------
    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))
        self._restore([tp.partition for tp in partitions])
        self._owned.update(tp.partition for tp in partitions)
        self.checkpoint.assigned(partitions)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        if self._closing:
            self.checkpoint.abandon()
        else:
            if not self.checkpoint.waiting:
                self._write_changelog()
            self.checkpoint.revoke(partitions)  # protocol step 6
        self._forget(partitions)
        if not self._closing:
            self._count_commits()

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions %s lost: abandoning uncommitted work", sorted(tp.partition for tp in partitions)
        )
        self.checkpoint.abandon()
        self._forget(partitions)
        self._count_commits()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            part = self.state.partitions.get(tp.partition)
            if part is not None:
                self.metrics.forget(list(part.brands))
            self.state.drop(tp.partition)
            self._owned.discard(tp.partition)
