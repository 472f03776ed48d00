"""Topic creation for demos and operators: CreateTopics where the cluster supports it, else auto-create."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclOperation
from confluent_kafka.cimpl import NewTopic

from worker.kafka.errors import (
    AuthorizationFailedError,
    BrokerUnreachableError,
    ClientConfigError,
    TopicNotFoundError,
)
from worker.kafka.refusals import ErrorWatch, refusal

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


def check_access(
    config: Mapping[str, object], read: Sequence[str], write: Sequence[str], timeout: float
) -> None:
    """Fail fast on a missing topic ACL: Read on each of ``read``, Write on each of ``write``.

    Asks for the topics' authorized operations (KIP-430, Kafka 2.3+), so a missing Write shows at start,
    not at the first result. Says nothing where the cluster does not tell (no authorizer, an older
    broker, no controller among the brokers, as in librdkafka's mock cluster, where the request waited
    for one until the time-out): the refusal is then named when it happens."""
    watch = ErrorWatch(config)
    settings: dict[str, Any] = {k: v for k, v in config.items() if isinstance(v, str | int | float)}
    settings["error_cb"] = watch
    settings["allow.auto.create.topics"] = False  # asking for a topic by name must never create it
    try:
        admin = AdminClient(settings)
    except KafkaException as exc:
        raise ClientConfigError(f"invalid admin client configuration: {exc.args[0].str()}") from exc
    try:  # one topic's metadata names the controller too, without listing the cluster's every topic
        metadata = admin.list_topics(next(iter([*read, *write]), None), timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachableError(
            f"no Kafka broker answered within {timeout:.0f}s ({exc.args[0]})"
        ) from exc
    if metadata.controller_id not in metadata.brokers:
        return
    needs = {topic: "Read" for topic in read} | {topic: "Write" for topic in write}
    wanted = {"Read": AclOperation.READ, "Write": AclOperation.WRITE}
    futures = admin.describe_topics(
        TopicCollection(list(needs)), request_timeout=timeout, include_authorized_operations=True
    )
    for topic, future in futures.items():
        try:
            allowed = future.result(timeout).authorized_operations
        except KafkaException as exc:
            refused = refusal(exc.args[0], watch.who, operation="Describe", topic=topic)
            if refused is not None:
                raise refused from exc
            log.debug("authorized operations of %s unknown: %s", topic, exc.args[0].str())
            continue
        except TimeoutError:
            continue
        operation = needs[topic]
        if allowed and wanted[operation] not in allowed and AclOperation.ALL not in allowed:
            raise AuthorizationFailedError(
                f"Kafka refused {watch.who}: not authorized to {operation} topic {topic!r} (its ACLs "
                f"allow {', '.join(sorted(op.name for op in allowed))}); grant {operation} on topic "
                f"{topic!r} to {watch.who.principal}",
                resource="topic",
                name=topic,
                operation=operation,
            )
