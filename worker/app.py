"""The worker's main loop: consume many, validate many, predict many, produce many, checkpoint.

Each turn: a batch through the pipeline (:meth:`Worker.process`: decode, route languages, normalise,
score, encode, produce), its offsets into the checkpoint, then the observers (:mod:`worker.observers`:
partial aggregates, metrics, drift, model operations) take it, each through ``observe(batch)``.
Time-driven work (lag gauges, the stats log, the checkpoint's interval) is called from :meth:`run`."""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import TopicPartition

from schemas.timestamps import utc_rfc3339
from sentiment_model import ModelError, Predictor, ResolvedModel, ScoredBatch, normalize_batch
from sentiment_model.operations import ModelOperations
from worker.batch import (
    Decoded,
    TimestampParser,
    decode,
    encode,
    event_times,
    offset_ranges,
    result_keys,
    route_languages,
)
from worker.checkpoint import Checkpoint, Outcome
from worker.drift import DriftMonitor
from worker.kafka import (
    Consumer,
    KafkaLayerError,
    KafkaRefusedError,
    Producer,
    TopicNotFoundError,
    client_config,
    redact,
)
from worker.kafka.admin import check_access
from worker.metrics import Heartbeat, WorkerMetrics
from worker.observers import BatchMetrics, BatchView, DriftObserver, ModelOpsObserver, PartialAggregates
from worker.partials import Partials
from worker.processing import TRANSACTION_HEADER, Rejected, dead_letter_headers, model_headers
from worker.settings import WorkerSettings
from worker.signals import stop_on_signals

log = logging.getLogger("worker")

_LAG_REFRESH_SECONDS = 2.0
_STATS_LOG_SECONDS = 30.0
# SHUTDOWN_TIMEOUT_SECONDS counts from the stop request (the signal), like a container runtime's grace
# period. Leaving the group waits for the coordinator (librdkafka gives LeaveGroup 5 s), so the final
# commit gets the timeout minus this and minus the exit allowance.
_CLOSE_ALLOWANCE_SECONDS = 5.5
# What the process needs after leaving the group: stopping the metrics server, destroying the clients and
# the interpreter's exit; without it a stop overran its timeout in CI.
_EXIT_ALLOWANCE_SECONDS = 2.0


class Worker:
    """One member of the consumer group. :meth:`run` returns when asked to stop (signal or :meth:`stop`)."""

    def __init__(
        self,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
        heartbeat: Heartbeat,
    ) -> None:
        self.settings = settings
        self.predictor: Predictor  # both set by start(), from the model it is given
        self.model: ResolvedModel
        self.metrics = metrics
        self.heartbeat = heartbeat
        self._started = False
        self._closing = False
        self._shutdown_deadline: float | None = None  # set by stop(): stopping is "a deadline exists"
        self._commits_counted = 0
        self._headers: list[tuple[str, str | bytes | None]] = []  # the model's, from start()
        base = client_config(
            settings.kafka_bootstrap_servers, settings.kafka_properties(), {"client.id": settings.client_id}
        )
        self._client_config = base
        consumer_config = {
            **base,
            "group.id": settings.consumer_group,
            "auto.offset.reset": settings.auto_offset_reset,
            "isolation.level": "read_committed",
            "allow.auto.create.topics": False,
            # librdkafka's 500 ms default makes the broker hold fetches that long on a quiet topic: latency
            # for nothing. KAFKA_FETCH_WAIT_MAX_MS still overrides it.
            "fetch.wait.max.ms": base.get("fetch.wait.max.ms", 100),
            # librdkafka prefetches up to 64 MB per consumer by default, RSS that buys no throughput: 8 MB
            # still holds about 20 batches, provided a full queue is re-checked after 10 ms rather than
            # librdkafka's 1 s. Figures in docs/results.md; KAFKA_* override both.
            "queued.max.messages.kbytes": base.get("queued.max.messages.kbytes", 8192),
            "fetch.queue.backoff.ms": base.get("fetch.queue.backoff.ms", 10),
        }
        producer_config = {**base, "linger.ms": base.get("linger.ms", 5)}
        log.info("kafka consumer config: %s", redact(consumer_config))
        self.consumer = Consumer(consumer_config)
        transactional_id = (
            (settings.transactional_id or settings.client_id) if settings.exactly_once else None
        )
        self.producer = Producer(
            producer_config,
            transactional_id=transactional_id,
            buffer_wait_seconds=settings.broker_outage_budget_seconds,
            on_wait=self._keep_alive,
        )
        self.checkpoint = Checkpoint(
            self.consumer,
            self.producer,
            exactly_once=settings.exactly_once,
            interval_seconds=settings.commit_interval_seconds,
            max_records=settings.commit_max_records,
            timeout_seconds=settings.shutdown_timeout_seconds,
            outage_budget_seconds=settings.broker_outage_budget_seconds,
        )
        self._timestamps = TimestampParser()
        self._languages = frozenset(settings.language_list)
        self._lag_refreshed = 0.0
        self._stats_logged = time.monotonic()
        # The observers of each batch (worker/observers.py), called by name in process().
        self.partials = Partials(
            metrics.brand_names,
            settings.reputation_window_seconds,
            settings.brand_top_terms,
            settings.input_topic,
            sample_posts=settings.brand_terms_sample_posts,
        )
        self.partial_aggregates = PartialAggregates(self.partials, self.producer)
        self.batch_metrics = BatchMetrics(metrics)
        monitor = DriftMonitor(
            settings.drift_window_records, settings.drift_min_records, settings.drift_oov_sample
        )
        self.drift = DriftObserver(monitor, metrics)
        self.model_ops = ModelOpsObserver(
            ModelOperations(settings, metrics.model_ops, self._use_model, scored_by="batch")
        )

    # --- lifecycle -----------------------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current batch, commit and leave (signal-handler safe)."""
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
            log.info("stop requested: finishing the current batch, committing, leaving the group")

    @property
    def _stopping(self) -> bool:
        return self._shutdown_deadline is not None

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker gracefully."""
        stop_on_signals(self.stop)

    def start(self, model: Future[tuple[Predictor, ResolvedModel]]) -> None:
        """Fail fast: broker reachable, all three topics exist, ``model`` loads; then join the group.

        The model loads on another thread meanwhile (the checks mostly wait on the broker): start to
        first result is about the longer of the two rather than their sum. Its :class:`ModelError`
        propagates from here.

        Output topics are checked too: an auto-created output topic gets the broker's default
        partitions and settings, and on some clusters a topic created by two clients at once loses the
        first writes (seen with librdkafka's mock cluster). Create topics before starting workers.
        """
        s = self.settings
        partitions = self.consumer.check_topics(
            [s.input_topic, s.output_topic, s.dlq_topic], s.startup_timeout_seconds
        )
        log.info("topics: %s", ", ".join(f"{t} ({n} partitions)" for t, n in partitions.items()))
        partials_topic = self.partial_aggregates.topic = self._partials_topic()
        self.partials.input_partitions = partitions[s.input_topic]
        check_access(
            self._client_config,
            [s.input_topic],
            [s.output_topic, s.dlq_topic, *([partials_topic] if partials_topic else [])],
            s.startup_timeout_seconds,
        )
        self.consumer.check_group(s.input_topic, s.startup_timeout_seconds)
        self._use_model(*model.result())
        log.info("model: %s", self.model.describe())
        if ModelOperations.enabled(s):
            self.model_ops.operations.start(self.model)
        if s.exactly_once:
            self.producer.init_transactions(s.startup_timeout_seconds)
        self.consumer.subscribe([s.input_topic], self._on_assign, self._on_revoke, self._on_lost)
        self._started = True

    def run(self) -> None:
        """Process until stopped; then commit what is safe and leave the group.

        While a checkpoint waits for an unreachable broker the loop goes on turning (liveness, metrics,
        stop requests) but takes no new input; see worker/checkpoint.py."""
        if not self._started:
            raise RuntimeError("Worker.run() before Worker.start()")
        try:
            while not self._stopping:
                self._keep_alive()
                waiting = self.checkpoint.waiting
                records = self.consumer.consume(
                    self.settings.batch_size, 0.0 if waiting else self.settings.poll_timeout_seconds
                )
                if records and self.checkpoint.waiting:
                    self._put_back(records)
                elif records:
                    self.checkpoint.begin()
                    self.process(records)
                self.producer.poll()
                if self.checkpoint.waiting or self.checkpoint.due():
                    self._commit()
                self._report_outage()
                self._declare_idle_inputs()
                self._refresh_lag()
                self._log_stats()
            final = self._finish()
        finally:
            self.model_ops.operations.stop()
            self._close_consumer()
        if final is Outcome.WAITING:
            log.warning("stopped after %d checkpoints, the last one uncommitted", self.checkpoint.commits)
        else:
            log.info("stopped cleanly after %d checkpoints", self.checkpoint.commits)

    def _keep_alive(self) -> bool:
        """Beat liveness; whether to keep going (False once a stop was requested)."""
        self.heartbeat.beat()
        self.metrics.loop_heartbeat.set(time.time())
        return not self._stopping

    def _put_back(self, records: list[Any]) -> None:
        """Records fetched while the checkpoint waits (a partition assigned meanwhile): unread them."""
        first: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic(), record.partition())
            first[key] = min(first.get(key, record.offset()), record.offset())
        self.consumer.seek([TopicPartition(t, p, o) for (t, p), o in first.items()])
        self.consumer.pause()

    def _report_outage(self) -> None:
        self.metrics.broker_unreachable.set(self.checkpoint.unreachable_seconds)
        self.metrics.outputs_unacknowledged.set(self.producer.outstanding)

    def _finish(self) -> Outcome:
        """Stop requested: commit what the broker acknowledges within the shutdown timeout, nothing else."""
        deadline = self._shutdown_deadline or time.monotonic()  # set: the loop ends only through stop()
        left = deadline - time.monotonic()
        budget = max(0.5, left - _CLOSE_ALLOWANCE_SECONDS - _EXIT_ALLOWANCE_SECONDS)
        outcome = self.checkpoint.finish(budget)
        self._count_commits()
        self._report_outage()
        return outcome

    def _close_consumer(self) -> None:
        """Leave the group (the others get our partitions at once), within the shutdown timeout."""
        self._closing = True
        deadline = self._shutdown_deadline
        if deadline is None:  # a failure, not a stop request: leave within the usual allowance
            timeout = _CLOSE_ALLOWANCE_SECONDS
        else:
            timeout = deadline - time.monotonic() - _EXIT_ALLOWANCE_SECONDS
        try:
            left = self.consumer.close(max(0.5, timeout))
        except KafkaLayerError as exc:  # we are leaving anyway: the session time-out does the rest
            log.warning("%s", exc)
            return
        if not left:
            log.warning(
                "leaving the group did not finish in time (broker unreachable): the group drops this "
                "member after its session time-out"
            )

    def _declare_idle_inputs(self) -> None:
        """Input partitions caught up and quiet for REPUTATION_IDLE_SECONDS stop holding the stage's
        windows open (worker/partials.py); declared inside a checkpoint like every other output."""
        if self.checkpoint.waiting:
            return

        def caught_up() -> dict[int, bool]:  # position None: nothing fetched since the assignment
            out = {}
            for tp in self.consumer.assignment():
                high = self.consumer.high_watermark(tp.topic, tp.partition)
                position = self.checkpoint_position(tp.partition)
                out[tp.partition] = high is not None and (position is None or position >= high)
            return out

        timeout = self.settings.reputation_idle_seconds or float(self.settings.reputation_window_seconds)
        self.partial_aggregates.declare_idle(caught_up, timeout, self.checkpoint.begin)

    def _partials_topic(self) -> str | None:
        """REPUTATION_PARTIALS_TOPIC (must exist), else ``reputation.partials`` when it exists, else off."""
        configured = self.settings.reputation_partials_topic
        if configured == "":
            return None
        topic = configured or "reputation.partials"
        try:
            partitions = self.consumer.check_topics([topic], self.settings.startup_timeout_seconds)
        except (TopicNotFoundError, KafkaRefusedError) as exc:
            if configured:
                raise
            log.warning(
                "no topic 'reputation.partials' (%s): the reputation stage gets nothing from this worker "
                "(create it, or set REPUTATION_PARTIALS_TOPIC='' to say so)",
                "not found" if isinstance(exc, TopicNotFoundError) else "not authorized to Describe it",
            )
            return None
        self.partials.output_partitions = partitions[topic]
        log.info(
            "partial aggregates per brand and %ds event-time window -> %s",
            self.settings.reputation_window_seconds,
            topic,
        )
        return topic

    def _commit(self) -> Outcome:
        outcome = self.checkpoint.commit()
        self._count_commits()
        return outcome

    def _count_commits(self) -> None:
        """``sentiment_checkpoints_total`` follows the checkpoint's own count (aborts are not commits)."""
        self.metrics.commits.inc(self.checkpoint.commits - self._commits_counted)
        self._commits_counted = self.checkpoint.commits

    # --- the hot path --------------------------------------------------------------------------------------

    def process(self, records: list[Any]) -> None:
        """One batch through the pipeline, its offsets into the checkpoint, then the observers."""
        batch = self._pipeline(records, time.perf_counter())
        topic = self.settings.input_topic  # the only topic subscribed to
        for partition, (first, last, count) in offset_ranges(
            batch.partitions, [r.offset() for r in records]
        ).items():
            self.checkpoint.track_batch(topic, partition, first, last, count)
        self.partial_aggregates.observe(batch)  # inside the checkpoint, like the batch's results
        self.batch_metrics.observe(batch)
        self.drift.observe(batch)
        self.model_ops.observe(batch)  # last: may promote a new model, from the next batch on

    def _pipeline(self, records: list[Any], started: float) -> BatchView:
        """decode -> route languages -> normalise -> score -> encode -> produce (results, dead letters)."""
        decoded = decode(records, [r.value() for r in records], self._timestamps)
        routed = route_languages(decoded, records, self._languages)
        now = time.time()
        lines: list[str] = []
        label_ids = brand_ids = np.empty(0, np.intp)
        events = np.empty(0, np.float64)
        predictor = self.predictor
        if decoded.documents:
            lines = normalize_batch(decoded.texts())
            scored = self._predict(lines)
            label_ids = scored.label_ids
            self._produce_results(records, decoded, scored, label_ids, now)
            brand_ids = self.metrics.brand_indices(decoded.column("brand"))
            events = event_times(records, decoded, self._timestamps)
        if decoded.rejected:
            self._produce_dead_letters(decoded.rejected)
        return BatchView(
            records,
            [r.partition() for r in records],
            decoded,
            [language for _, language in routed],
            lines,
            label_ids,
            brand_ids,
            events,
            predictor,
            now,
            started,
        )

    # --- hot-reload ----------------------------------------------------------------------------------------

    def _use_model(self, predictor: Predictor, model: ResolvedModel) -> None:
        """Score with ``predictor`` from the next batch on: at start, and on promotion (called by
        :meth:`ModelOperations.after_batch`, between two batches: a batch is scored by one model only)."""
        self.predictor, self.model = predictor, model
        self._headers = model_headers(model.ref)
        self.metrics.set_model(model.repo, model.revision, model.sha256)
        self.drift.set_model((model.metrics or {}).get("reference"), predictor.oov_counts)

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

    def _produce_results(
        self,
        records: list[Any],
        decoded: Decoded,
        scored: ScoredBatch,
        label_ids: npt.NDArray[np.intp],
        now: float,
    ) -> None:
        model = self.model.ref
        model_doc = {"repo": model.repo, "revision": model.revision, "sha256": model.sha256}
        documents = encode(decoded.documents, scored.probabilities, label_ids, model_doc, utc_rfc3339(now))
        headers = self._headers
        if self.checkpoint.exactly_once:
            label = f"{self.settings.client_id}/{self.checkpoint.transactions}"
            headers = [*headers, (TRANSACTION_HEADER, label.encode())]
        self.producer.produce_batch(
            self.settings.output_topic, documents, result_keys(records, decoded), headers
        )

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

    # --- observability -------------------------------------------------------------------------------------

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_refreshed < _LAG_REFRESH_SECONDS:
            return
        self._lag_refreshed = now
        topic = self.settings.input_topic
        for tp in self.consumer.assignment():
            high = self.consumer.high_watermark(tp.topic, tp.partition)
            position = self.checkpoint_position(tp.partition)
            if high is None or position is None:
                continue
            lag = max(0, high - position)
            self.metrics.lag_records.labels(topic, str(tp.partition)).set(lag)
            last = self.batch_metrics.last_record_time.get(tp.partition)
            behind = max(0.0, time.time() - last) if lag and last else 0.0
            self.metrics.lag_seconds.labels(topic, str(tp.partition)).set(behind)

    def checkpoint_position(self, partition: int) -> int | None:
        """The next offset this worker will process on ``partition`` (None before the first record)."""
        return self.consumer.position(self.settings.input_topic, partition)

    def _log_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_logged < _STATS_LOG_SECONDS:
            return
        elapsed, stats = now - self._stats_logged, self.batch_metrics.stats
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
        stats.clear()
        self._stats_logged = now

    # --- rebalance callbacks (run inside consume) ----------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))
        self.checkpoint.assigned(partitions)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        if self._closing:  # the final commit was tried already (or failed): do not wait a second time
            log.info("partitions %s revoked: leaving the group", sorted(tp.partition for tp in partitions))
            self.checkpoint.abandon()
            self.metrics.forget_partitions(self.settings.input_topic, (tp.partition for tp in partitions))
            return
        log.info("partitions %s revoked: committing first", sorted(tp.partition for tp in partitions))
        self.checkpoint.revoke(partitions)
        self._count_commits()
        self.metrics.forget_partitions(self.settings.input_topic, (tp.partition for tp in partitions))

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions %s lost (session timed out?): abandoning uncommitted work; "
            "their records will be processed again",
            sorted(tp.partition for tp in partitions),
        )
        self.checkpoint.abandon()
        self.metrics.forget_partitions(self.settings.input_topic, (tp.partition for tp in partitions))
