"""A background thread that follows the compacted ``reputation`` topic into a :class:`BrandBook`.

It reads every partition from its first offset, ``read_committed`` (the stage writes in transactions), as
a plain reader: no group membership, no offset commits, so it needs Describe and Read on the topic and
nothing else, and each API replica holds the whole topic. Every ``probe_seconds`` it asks the broker
for the topic's metadata: that notices an outage, a deleted topic or added partitions while records
flow (librdkafka itself only logs and reconnects).

Its state is what the brand endpoints answer when they cannot answer from the book: connecting,
loading (reading up to the end offsets seen at start; the brands are incomplete until then),
unreachable, topic_missing, refused, failed; or following.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from api.brand_book import BrandBook
from api.settings import ApiSettings
from schemas.brands import FollowerStatus
from worker.kafka import (
    BrokerUnreachableError,
    ClientConfigError,
    Consumer,
    KafkaLayerError,
    KafkaRefusedError,
    TopicNotFoundError,
    client_config,
    redact,
)

log = logging.getLogger(__name__)

#: Caught up without reaching the end offsets: nothing arrived for this long (a transaction left open
#: by a crashed stage holds read_committed readers before its end until the broker aborts it).
IDLE_CAUGHT_UP_SECONDS = 2.0
_RETRY_SECONDS = 5.0
_BATCH = 1000
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class FollowerState:
    """``following``, or why the book cannot be trusted (yet)."""

    status: FollowerStatus | None  # None: following
    detail: str


class ReputationFollower:
    """Owns the reader thread; :meth:`state` says how it is going."""

    def __init__(
        self,
        book: BrandBook,
        bootstrap_servers: str,
        properties: Callable[[], dict[str, str]],
        topic: str,
        timeout_seconds: float,
        probe_seconds: float = 5.0,
    ) -> None:
        self.book = book
        self.bootstrap_servers = bootstrap_servers
        self.properties = properties  # called in the thread: a misspelt KAFKA_* must not stop the API
        self.topic = topic
        self.timeout = timeout_seconds
        self.probe_seconds = probe_seconds
        self._state = FollowerState("connecting", f"connecting to Kafka at {bootstrap_servers}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reputation-follower", daemon=True)

    def config(self) -> dict[str, Any]:
        """The reader's librdkafka configuration."""
        name = f"api-brand-page-{socket.gethostname()}-{os.getpid()}"
        return client_config(
            self.bootstrap_servers,
            self.properties(),
            {
                "client.id": name,
                "group.id": name,  # librdkafka wants one; a reader that assigns never joins or commits
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "allow.auto.create.topics": False,
            },
        )

    def state(self) -> FollowerState:
        return self._state

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to stop and wait ``timeout`` at most (it closes its consumer on the way out)."""
        self._stop.set()
        self._thread.join(timeout)

    def _set(self, status: FollowerStatus | None, detail: str) -> None:
        if self._state != (state := FollowerState(status, detail)):
            (log.info if status in (None, "loading") else log.warning)("reputation topic: %s", detail)
            self._state = state

    # --- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        consumer: Consumer | None = None
        reading = _Progress()
        while not self._stop.is_set():
            pause = _RETRY_SECONDS
            try:
                if consumer is None:
                    config = self.config()
                    log.info("following topic %s with %s", self.topic, redact(config))
                    consumer, reading = Consumer(config, group_member=False), _Progress()
                self._follow(consumer, reading)
                pause = 0.0
            except ClientConfigError as exc:
                self._set("failed", f"the Kafka client configuration is invalid: {exc}")
                return  # the same configuration fails the same way: an operator must fix it
            except BrokerUnreachableError as exc:
                self._set("unreachable", f"the Kafka broker is unreachable: {exc}")
                pause = 0.5  # the probe itself waited; librdkafka keeps reconnecting meanwhile
            except TopicNotFoundError as exc:
                self._set("topic_missing", f"{exc} (REPUTATION_TOPIC names the reputation stage's output)")
                _close(consumer)  # a topic created again starts from scratch
                consumer = None
            except KafkaRefusedError as exc:
                self._set("refused", str(exc))
                _close(consumer)
                consumer = None
            except KafkaLayerError as exc:
                self._set("failed", f"reading topic {self.topic!r} failed: {exc}")
                _close(consumer)
                consumer = None
            except Exception as exc:  # never let the thread die silently: the endpoints would lie
                log.exception("the reputation follower failed")
                self._set("failed", f"reading topic {self.topic!r} failed: {type(exc).__name__}: {exc}")
                _close(consumer)
                consumer = None
            self._stop.wait(pause)
        _close(consumer)

    def _follow(self, consumer: Consumer, reading: _Progress) -> None:
        """Probe the topic, take on new partitions, then read until the next probe is due."""
        partitions = consumer.check_topics([self.topic], self.timeout)[self.topic]
        if partitions > len(reading.ends):
            new = range(len(reading.ends), partitions)
            reading.ends.update(consumer.end_offsets(self.topic, new, self.timeout))
            consumer.assign_from_start(self.topic, new)
            reading.idle_since = time.monotonic()
        probe_at = time.monotonic() + self.probe_seconds
        while not self._stop.is_set():
            self._report(consumer, reading)
            if time.monotonic() >= probe_at:
                return
            records = consumer.consume(_BATCH, _POLL_SECONDS)
            for record in records:
                self.book.apply(record.key(), record.value())
            if records:
                reading.idle_since = time.monotonic()

    def _report(self, consumer: Consumer, reading: _Progress) -> None:
        if not reading.caught_up:
            behind = {
                p: end for p, end in reading.ends.items() if (consumer.position(self.topic, p) or 0) < end
            }
            idle = time.monotonic() - reading.idle_since >= IDLE_CAUGHT_UP_SECONDS
            reading.caught_up = not behind or idle
            if not reading.caught_up:
                where = f"partitions {', '.join(map(str, sorted(behind)))}"
                self._set("loading", f"reading topic {self.topic!r} up to its end ({where} to go)")
                return
        self._set(None, f"following topic {self.topic!r} ({len(reading.ends)} partitions)")


@dataclass
class _Progress:
    """How far one consumer has read: the end offsets seen when each partition was assigned."""

    ends: dict[int, int] = field(default_factory=dict)
    idle_since: float = field(default_factory=time.monotonic)
    caught_up: bool = False


def _close(consumer: Consumer | None) -> None:
    if consumer is not None:
        try:
            consumer.close(5.0)
        except KafkaLayerError as exc:
            log.warning("closing the reputation reader: %s", exc)


def start_follower(settings: ApiSettings, book: BrandBook) -> ReputationFollower | None:
    """A running follower of ``REPUTATION_TOPIC``, or None when Kafka is not configured."""
    if settings.kafka_bootstrap_servers is None:
        return None
    follower = ReputationFollower(
        book,
        settings.kafka_bootstrap_servers,
        settings.kafka_properties,
        settings.reputation_topic,
        settings.brand_page_kafka_timeout_seconds,
    )
    follower.start()
    return follower
