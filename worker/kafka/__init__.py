"""A thin layer over confluent-kafka: config, consumer, producer, explicit errors, an embedded broker."""

from worker.kafka.config import client_config, redact
from worker.kafka.consumer import Consumer
from worker.kafka.errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
    BrokerOutageError,
    BrokerUnreachableError,
    ClientConfigError,
    CommitFailedError,
    ConsumerFailedError,
    DeliveryFailedError,
    KafkaLayerError,
    KafkaRefusedError,
    TlsFailedError,
    TopicNotFoundError,
    TransactionFailedError,
)
from worker.kafka.producer import Producer

__all__ = [
    "AuthenticationFailedError",
    "AuthorizationFailedError",
    "BrokerOutageError",
    "BrokerUnreachableError",
    "ClientConfigError",
    "CommitFailedError",
    "Consumer",
    "ConsumerFailedError",
    "DeliveryFailedError",
    "KafkaLayerError",
    "KafkaRefusedError",
    "Producer",
    "TlsFailedError",
    "TopicNotFoundError",
    "TransactionFailedError",
    "client_config",
    "redact",
]
