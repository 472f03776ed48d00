"""Explicit exception types of the Kafka layer; each message is meant for the operator reading the log.

Every ``KafkaException`` raised by confluent-kafka inside ``worker/kafka`` leaves it as one of these.
"""


class KafkaLayerError(Exception):
    """Base class of every Kafka problem the worker reports."""


class ClientConfigError(KafkaLayerError):
    """librdkafka rejected the client configuration (an unknown or invalid property)."""


class BrokerUnreachableError(KafkaLayerError):
    """No broker answered within the start-up timeout."""


class TopicNotFoundError(KafkaLayerError):
    """A topic the worker needs does not exist (and the cluster does not auto-create it)."""


class ConsumerFailedError(KafkaLayerError):
    """The consumer hit an error librdkafka cannot recover from (fatal, or a call on a broken client)."""


class DeliveryFailedError(KafkaLayerError):
    """The broker did not acknowledge an output record, after librdkafka's own retries.

    ``timed_out``: the record expired waiting for the broker (``message.timeout.ms``): the broker was
    unreachable rather than refusing it, so reprocessing the input is the cure, not stopping.
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class BrokerOutageError(DeliveryFailedError):
    """Outputs stayed unacknowledged for longer than the outage budget (``BROKER_OUTAGE_BUDGET_SECONDS``)."""


class CommitFailedError(KafkaLayerError):
    """Committing consumer offsets failed.

    ``retriable``: the group is rebalancing, our generation is stale or the coordinator did not answer in
    time; the outputs are already acknowledged, so skipping this commit costs duplicates after the
    hand-over, never losses.
    """

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class TransactionFailedError(KafkaLayerError):
    """An exactly-once transaction step failed.

    ``retriable``: the step did not finish in time (broker unreachable); calling the same step again
    resumes it. ``abortable``: abort the transaction and reprocess from the last committed offsets.
    ``reinitialise``: this client is broken (a fatal error other than fencing): replace it, then
    reprocess from the committed offsets. None of these: the producer was fenced by another instance
    with the same transactional id, and the process must stop.
    """

    def __init__(
        self, message: str, *, retriable: bool = False, abortable: bool = False, reinitialise: bool = False
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.abortable = abortable
        self.reinitialise = reinitialise


class KafkaRefusedError(KafkaLayerError):
    """The cluster refused this client: its login, a permission or the TLS handshake. Waiting or retrying
    does not help (librdkafka would retry forever); an operator must change credentials, ACLs or TLS
    settings. The same message whether it happens at start or while running (a rotated password, a
    revoked ACL)."""


class AuthenticationFailedError(KafkaRefusedError):
    """The broker rejected the client's login (SASL)."""


class AuthorizationFailedError(KafkaRefusedError):
    """The client's principal lacks an ACL: ``operation`` on the ``resource`` named ``name``."""

    def __init__(self, message: str, *, resource: str, name: str, operation: str) -> None:
        super().__init__(message)
        self.resource, self.name, self.operation = resource, name, operation


class TlsFailedError(KafkaRefusedError):
    """The TLS handshake with a broker failed (certificate, CA, protocol)."""
