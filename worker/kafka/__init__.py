"""A thin layer over confluent-kafka: config, consumer, producer, explicit errors, an embedded broker."""

from worker.kafka.config import client_config, redact
from worker.kafka.consumer import Consumer
from worker.kafka.errors import (
    BrokerOutageError,
    BrokerUnreachableError,
    ClientConfigError,
    CommitFailedError,
    ConsumerFailedError,
    DeliveryFailedError,
    KafkaLayerError,
    TopicNotFoundError,
    TransactionFailedError,
)
from worker.kafka.producer import Producer

__all__ = [
    "BrokerOutageError",
    "BrokerUnreachableError",
    "ClientConfigError",
    "CommitFailedError",
    "Consumer",
    "ConsumerFailedError",
    "DeliveryFailedError",
    "KafkaLayerError",
    "Producer",
    "TopicNotFoundError",
    "TransactionFailedError",
    "client_config",
    "redact",
]
