"""The worker's main loop: consume many, validate many, predict many, produce many, checkpoint."""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from confluent_kafka import TopicPartition

from sentiment_model import ModelError, Predictor, ResolvedModel, ScoredBatch, normalize_batch
from sentiment_model.shadow import ShadowEvaluation
from sentiment_model.watch import ModelWatcher
from worker.checkpoint import Checkpoint
from worker.drift import DriftMonitor
from worker.kafka import Consumer, Producer, TopicNotFoundError, client_config, redact
from worker.metrics import Heartbeat, WorkerMetrics
from worker.processing import (
    TRANSACTION_HEADER,
    Rejected,
    Valid,
    dead_letter_headers,
    model_headers,
    result_documents,
    result_key,
    split_batch,
)
from worker.reputation import Reputation
from worker.settings import WorkerSettings

log = logging.getLogger("worker")

_LAG_REFRESH_SECONDS = 2.0
_STATS_LOG_SECONDS = 30.0


class Worker:
    """One member of the consumer group. :meth:`run` returns when asked to stop (signal or :meth:`stop`)."""

    def __init__(
        self,
        settings: WorkerSettings,
        predictor: Predictor,
        model: ResolvedModel,
        metrics: WorkerMetrics,
        heartbeat: Heartbeat,
    ) -> None:
        self.settings = settings
        self.predictor = predictor
        self.model = model
        self.metrics = metrics
        self.heartbeat = heartbeat
        self._stopping = False
        self._headers = model_headers(model.ref)
        base = client_config(
            settings.kafka_bootstrap_servers, settings.kafka_properties(), {"client.id": settings.client_id}
        )
        consumer_config = {
            **base,
            "group.id": settings.consumer_group,
            "auto.offset.reset": settings.auto_offset_reset,
            "isolation.level": "read_committed",
            "allow.auto.create.topics": False,
            # librdkafka's 500 ms default made the broker hold fetches that long on a quiet topic: half a
            # second of event-to-result latency for nothing. KAFKA_FETCH_WAIT_MAX_MS still overrides it.
            "fetch.wait.max.ms": base.get("fetch.wait.max.ms", 100),
        }
        producer_config = {**base, "linger.ms": base.get("linger.ms", 5)}
        log.info("kafka consumer config: %s", redact(consumer_config))
        self.consumer = Consumer(consumer_config)
        transactional_id = (
            (settings.transactional_id or settings.client_id) if settings.exactly_once else None
        )
        self.producer = Producer(producer_config, transactional_id=transactional_id)
        self.checkpoint = Checkpoint(
            self.consumer,
            self.producer,
            exactly_once=settings.exactly_once,
            interval_seconds=settings.commit_interval_seconds,
            max_records=settings.commit_max_records,
            timeout_seconds=settings.shutdown_timeout_seconds,
        )
        self._last_timestamp: dict[int, float] = {}
        self._lag_refreshed = 0.0
        self._stats = Counter[str]()
        self._stats_logged = time.monotonic()
        self.drift = DriftMonitor(
            metrics, settings.drift_window_records, settings.drift_min_records, settings.drift_oov_sample
        )
        self.drift.set_model((model.metrics or {}).get("reference"), predictor.vocabulary())
        self.reputation = Reputation(
            metrics, settings.gauge_windows, settings.reputation_window_seconds, settings.client_id
        )
        self.reputation_topic: str | None = None  # decided in start()
        self.watcher: ModelWatcher | None = None
        self.shadow: ShadowEvaluation | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current batch, commit and leave (signal-handler safe)."""
        if not self._stopping:
            log.info("stop requested: finishing the current batch, committing, leaving the group")
        self._stopping = True

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker gracefully."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def start(self) -> None:
        """Fail fast: broker reachable, all three topics exist; then join the group.

        Output topics are checked too: an auto-created output topic gets the broker's default
        partitions and settings, and on some clusters a topic created by two clients at once loses the
        first writes (seen with librdkafka's mock cluster). Create topics before starting workers.
        """
        s = self.settings
        partitions = self.consumer.check_topics(
            [s.input_topic, s.output_topic, s.dlq_topic], s.startup_timeout_seconds
        )
        log.info("topics: %s", ", ".join(f"{t} ({n} partitions)" for t, n in partitions.items()))
        self.reputation_topic = self._reputation_topic()
        if ModelWatcher.enabled(s, s.model_poll_interval_seconds):
            self.watcher = ModelWatcher(
                s, self.model, s.model_poll_interval_seconds, lambda o: self.metrics.reloads.labels(o).inc()
            ).start()
            log.info("hot-reload on: looking for a newer model every %gs", s.model_poll_interval_seconds)
        else:
            log.info("hot-reload off (MODEL_REVISION pinned or MODEL_POLL_INTERVAL_SECONDS=0)")
        if s.exactly_once:
            self.producer.init_transactions(s.startup_timeout_seconds)
        self.consumer.subscribe([s.input_topic], self._on_assign, self._on_revoke, self._on_lost)

    def run(self) -> None:
        """Process until stopped; then commit what is safe and leave the group."""
        self.start()
        try:
            while not self._stopping:
                self.heartbeat.beat()
                self.metrics.loop_heartbeat.set(time.time())
                records = self.consumer.consume(self.settings.batch_size, self.settings.poll_timeout_seconds)
                if records:
                    self.checkpoint.begin()
                    self.process(records)
                self.producer.poll()
                if self.checkpoint.due():
                    self._commit()
                self._refresh_lag()
                self._log_stats()
            self._emit_reputation(time.time(), everything=True)  # nothing more will be added to them
            self._commit()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            self.consumer.close()  # leaves the group: the others get our partitions at once
        log.info("stopped cleanly after %d checkpoints", self.checkpoint.commits)

    def _reputation_topic(self) -> str | None:
        """The explicit REPUTATION_TOPIC (must exist), else ``reputation`` when it exists, else off."""
        configured = self.settings.reputation_topic
        if configured == "":
            return None
        timeout = self.settings.startup_timeout_seconds
        try:
            self.consumer.check_topics([configured or "reputation"], timeout)
        except TopicNotFoundError:
            if configured:
                raise
            log.warning(
                "no topic 'reputation': per-brand window aggregates are off (create it compacted, "
                "or set REPUTATION_TOPIC='' to say so); the per-brand gauges still work"
            )
            return None
        log.info(
            "per-brand %ds window aggregates -> %s",
            self.settings.reputation_window_seconds,
            configured or "reputation",
        )
        return configured or "reputation"

    def _emit_reputation(self, now: float, everything: bool = False) -> None:
        """Produce the closed windows (inside the current checkpoint, like every other output)."""
        if self.reputation_topic is None:
            return
        closed = self.reputation.closed_windows(now, everything)
        if not closed:
            return
        self.checkpoint.begin()
        for key, value in closed:
            self.producer.produce(self.reputation_topic, value, key, self._headers)
        self.metrics.reputation_records.inc(len(closed))

    def _commit(self) -> None:
        self.checkpoint.commit()
        self.metrics.commits.inc()

    # --- the hot path --------------------------------------------------------------------------------------

    def process(self, records: list[Any]) -> None:
        """Validate, score and produce one batch; track every offset in the checkpoint."""
        started = time.perf_counter()
        self._maybe_start_shadow()  # between batches: a batch is scored by one model only
        valid, rejected = split_batch(records)
        lines = normalize_batch([v.mention.text for v in valid])
        scored = self._predict(lines) if valid else None
        now = datetime.now(UTC)
        if scored is not None:
            self._produce_results(valid, scored, now)
            per_label: Counter[tuple[str, str]] = Counter(
                (label, self.metrics.brand_label(item.mention.brand))
                for item, label in zip(valid, scored.labels, strict=True)
            )
            self.reputation.observe(per_label, now.timestamp())
            self._emit_reputation(now.timestamp())
        else:
            per_label = Counter()
        if rejected:
            self._produce_dead_letters(rejected)
        for record in records:
            self.checkpoint.track(record.topic(), record.partition(), record.offset())
        self._observe(records, valid, rejected, per_label, now, time.perf_counter() - started)
        if scored is not None:
            self.drift.observe(scored.label_ids, lines)
            self._shadow_step(lines, scored)

    # --- hot-reload ----------------------------------------------------------------------------------------

    def _maybe_start_shadow(self) -> None:
        if self.watcher is None or self.shadow is not None:
            return
        pending = self.watcher.take()
        if pending is not None:
            predictor, model = pending
            self.shadow = ShadowEvaluation(predictor, model, self.settings.shadow_policy)
            self.metrics.shadow_records.set(0)

    def _shadow_step(self, lines: list[str], scored: ScoredBatch) -> None:
        """Score the batch with the candidate too (its results are not published); decide when done."""
        shadow = self.shadow
        if shadow is None or self.watcher is None:
            return
        try:
            shadow.observe(lines, scored.label_ids)
        except Exception as exc:  # a candidate that fails on live data is rejected, the worker goes on
            log.error(
                "candidate %s failed in shadow: %s; keeping the current model", shadow.model.describe(), exc
            )
            self.watcher.rejected(shadow.model)
            self.shadow = None
            return
        self.metrics.shadow_records.set(shadow.records)
        if not shadow.done:
            return
        verdict = shadow.verdict()
        self.metrics.shadow_agreement.set(verdict.agreement)
        self.metrics.shadow_jsd.set(verdict.label_jsd)
        self.shadow = None
        self.metrics.shadow_records.set(0)
        if not verdict.promote:
            log.warning(
                "candidate %s rejected after %d texts in shadow: %s; keeping %s",
                shadow.model.describe(),
                verdict.records,
                verdict.reason,
                self.model.describe(),
            )
            self.watcher.rejected(shadow.model)
            return
        log.info(
            "promoting %s after %d texts in shadow (%s); it scores from the next batch on",
            shadow.model.describe(),
            verdict.records,
            verdict.reason,
        )
        self.predictor, self.model = shadow.candidate, shadow.model
        self._headers = model_headers(self.model.ref)
        self.metrics.set_model(self.model.repo, self.model.revision, self.model.sha256)
        self.drift.set_model((self.model.metrics or {}).get("reference"), self.predictor.vocabulary())
        self.watcher.promoted(self.model)

    def _predict(self, lines: list[str]) -> ScoredBatch:
        """Score normalised texts; a model error is retried with backoff, then fatal."""
        delay = self.settings.model_retry_backoff_seconds
        for attempt in range(1, self.settings.model_retry_attempts + 1):
            try:
                return self.predictor.predict_normalized(lines)
            except Exception as exc:  # the model is not bad input: retry, then fail loudly
                if attempt == self.settings.model_retry_attempts:
                    raise ModelError(
                        f"model failed on a batch of {len(lines)} texts {attempt} times: {exc}"
                    ) from exc
                log.warning("model error (attempt %d): %s; retrying in %.1fs", attempt, exc, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _produce_results(self, valid: list[Valid], scored: ScoredBatch, now: datetime) -> None:
        topic = self.settings.output_topic
        documents = result_documents(valid, scored, self.model.ref, now)
        headers = self._headers
        if self.checkpoint.exactly_once:
            label = f"{self.settings.client_id}/{self.checkpoint.transactions}"
            headers = [*headers, (TRANSACTION_HEADER, label.encode())]
        for item, document in zip(valid, documents, strict=True):
            self.producer.produce(topic, document, result_key(item.record, item.mention), headers)

    def _produce_dead_letters(self, rejected: list[Rejected]) -> None:
        topic = self.settings.dlq_topic
        for item in rejected:
            self.producer.produce(
                topic,
                item.record.value() or b"",
                item.record.key(),
                dead_letter_headers(item, self.settings.client_id),
            )
        reasons = Counter(r.reason.value for r in rejected)
        first = rejected[0]
        log.warning(
            "dead-lettered %d record(s) to %s (%s); first: %s[%d]@%d: %s",
            len(rejected),
            topic,
            ", ".join(f"{n} {reason}" for reason, n in reasons.items()),
            first.record.topic(),
            first.record.partition(),
            first.record.offset(),
            first.detail,
        )

    def _observe(
        self,
        records: list[Any],
        valid: list[Valid],
        rejected: list[Rejected],
        per_label: Counter[tuple[str, str]],
        now: datetime,
        seconds: float,
    ) -> None:
        m = self.metrics
        m.consumed.inc(len(records))
        m.batch_size.observe(len(records))
        m.batch_seconds.observe(seconds)
        now_ts = now.timestamp()
        m.last_processed.set(now_ts)
        for dead in rejected:
            m.dead_letters.labels(dead.reason.value).inc()
        if valid:
            m.produced.inc(len(valid))
            for (label, brand), count in per_label.items():  # one labelled increment per pair, not per post
                m.predictions.labels(label, brand).inc(count)
            for item in valid:
                created = item.mention.created_at_datetime()
                if created is not None:
                    m.event_to_result.observe(max(0.0, now_ts - created.timestamp()))
                else:
                    m.event_to_result.observe(max(0.0, now_ts - item.record.timestamp()[1] / 1000))
        for record in records:
            self._last_timestamp[record.partition()] = record.timestamp()[1] / 1000
        self._stats["consumed"] += len(records)
        self._stats["results"] += len(valid)
        self._stats["dead_letters"] += len(rejected)

    # --- observability -------------------------------------------------------------------------------------

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_refreshed < _LAG_REFRESH_SECONDS:
            return
        self._lag_refreshed = now
        self.reputation.refresh_gauges(time.time())  # also when idle: windows slide on
        topic = self.settings.input_topic
        for tp in self.consumer.assignment():
            high = self.consumer.high_watermark(tp.topic, tp.partition)
            position = self.checkpoint_position(tp.partition)
            if high is None or position is None:
                continue
            lag = max(0, high - position)
            self.metrics.lag_records.labels(topic, str(tp.partition)).set(lag)
            last = self._last_timestamp.get(tp.partition)
            behind = max(0.0, time.time() - last) if lag and last else 0.0
            self.metrics.lag_seconds.labels(topic, str(tp.partition)).set(behind)

    def checkpoint_position(self, partition: int) -> int | None:
        """The next offset this worker will process on ``partition`` (None before the first record)."""
        positions = self.consumer.raw.position([TopicPartition(self.settings.input_topic, partition)])
        offset = positions[0].offset if positions else -1
        return int(offset) if offset >= 0 else None

    def _log_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_logged < _STATS_LOG_SECONDS:
            return
        elapsed, stats = now - self._stats_logged, self._stats
        if stats["consumed"]:
            log.info(
                "last %.0fs: %d consumed (%.0f/s), %d results, %d dead letters, %d checkpoints",
                elapsed,
                stats["consumed"],
                stats["consumed"] / elapsed,
                stats["results"],
                stats["dead_letters"],
                self.checkpoint.commits,
            )
        self._stats.clear()
        self._stats_logged = now

    # --- rebalance callbacks (run inside consume) ----------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        log.info("partitions %s revoked: committing first", sorted(tp.partition for tp in partitions))
        self.checkpoint.revoke(partitions)
        self.metrics.commits.inc()
        self.metrics.forget_partitions(self.settings.input_topic, (tp.partition for tp in partitions))

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions %s lost (session timed out?): abandoning uncommitted work; "
            "their records will be processed again",
            sorted(tp.partition for tp in partitions),
        )
        self.checkpoint.abandon()
        self.metrics.forget_partitions(self.settings.input_topic, (tp.partition for tp in partitions))
