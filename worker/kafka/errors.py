"""Explicit exception types of the Kafka layer; each message is meant for the operator reading the log."""


class KafkaLayerError(Exception):
    """Base class of every Kafka problem the worker reports."""


class BrokerUnreachableError(KafkaLayerError):
    """No broker answered within the start-up timeout."""


class TopicNotFoundError(KafkaLayerError):
    """A topic the worker needs does not exist (and the cluster does not auto-create it)."""


class DeliveryFailedError(KafkaLayerError):
    """The broker did not acknowledge an output record, after librdkafka's own retries."""


class CommitFailedError(KafkaLayerError):
    """Committing consumer offsets failed.

    ``retriable``: the group is rebalancing or our generation is stale; the outputs are already
    acknowledged, so skipping this commit costs duplicates after the hand-over, never losses.
    """

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class TransactionFailedError(KafkaLayerError):
    """An exactly-once transaction step failed.

    ``abortable``: abort the transaction and retry from the last committed offsets; ``fatal``: this
    producer is fenced or broken and the process must stop.
    """

    def __init__(self, message: str, *, abortable: bool = False, fatal: bool = False) -> None:
        super().__init__(message)
        self.abortable = abortable
        self.fatal = fatal
