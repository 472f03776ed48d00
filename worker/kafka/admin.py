"""Topic creation for demos and operators: CreateTopics where the cluster supports it, else auto-create."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from worker.kafka.errors import BrokerUnreachableError, ClientConfigError, TopicNotFoundError

log = logging.getLogger("worker.kafka")


def ensure_topics(
    config: Mapping[str, object],
    topics: Sequence[str],
    partitions: int,
    timeout: float = 15.0,
    create_topics_api: bool = True,
) -> dict[str, int]:
    """Make sure ``topics`` exist; returns partitions per topic.

    A real cluster gets a CreateTopics request (an existing topic is fine). librdkafka's mock cluster
    never answers CreateTopics (pass ``create_topics_api=False``) but auto-creates a topic on its first
    metadata request, which is also the fallback when CreateTopics fails; a cluster that allows
    neither fails with :class:`TopicNotFoundError`.
    """
    try:
        admin = AdminClient({k: v for k, v in config.items() if isinstance(v, str | int | float)})
    except KafkaException as exc:
        raise ClientConfigError(f"invalid admin client configuration: {exc.args[0].str()}") from exc
    try:
        return _ensure(admin, topics, partitions, timeout, create_topics_api)
    except KafkaException as exc:
        raise BrokerUnreachableError(
            f"no Kafka broker answered within {timeout:.0f}s ({exc.args[0]})"
        ) from exc


def _ensure(
    admin: AdminClient, topics: Sequence[str], partitions: int, timeout: float, create_topics_api: bool
) -> dict[str, int]:
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t not in existing]
    if missing and not create_topics_api:
        for topic in missing:
            admin.list_topics(topic, timeout=timeout)  # the metadata request auto-creates it
    elif missing:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=-1) for t in missing],
            request_timeout=timeout,
        )
        for topic, future in futures.items():
            try:
                future.result(timeout)
                log.info("created topic %s (%d partitions)", topic, partitions)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    log.info("CreateTopics %s: %s; relying on auto-creation", topic, error.str())
                    admin.list_topics(topic, timeout=timeout)
            except TimeoutError:
                log.info("CreateTopics %s: no answer; relying on auto-creation", topic)
                admin.list_topics(topic, timeout=timeout)
    metadata = admin.list_topics(timeout=timeout).topics
    found: dict[str, int] = {}
    for topic in topics:
        meta = metadata.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise TopicNotFoundError(f"topic {topic!r} could not be created; create it with your Kafka tools")
        found[topic] = len(meta.partitions)
    return found
