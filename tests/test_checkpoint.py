"""The commit protocol's branches, each on its own: the checkpoint against a scripted consumer and producer.

The end-to-end tests (test_worker_resilience.py, test_worker_outage.py) drive the same object against a
real broker, but cannot choose which failure comes when: these fakes can. They record what the
checkpoint asked of them and fail when told to, with the errors our Kafka layer raises.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, cast

import pytest
from confluent_kafka import TopicPartition

from worker.checkpoint import Checkpoint, Outcome
from worker.kafka import (
    BrokerOutageError,
    CommitFailedError,
    Consumer,
    DeliveryFailedError,
    Producer,
    TransactionFailedError,
)

T = "mentions"


class FakeConsumer:
    def __init__(self) -> None:
        self.committed: list[list[tuple[str, int, int]]] = []
        self.seeks: list[list[tuple[str, int, int]]] = []
        self.paused = False
        self.commit_errors: list[Exception] = []

    def commit(self, offsets: list[TopicPartition]) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        if offsets:
            self.committed.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def seek(self, positions: list[TopicPartition]) -> None:
        self.seeks.append([(tp.topic, tp.partition, tp.offset) for tp in positions])

    def pause(self) -> None:
        self.paused = True

    def resume(self, partitions: list[TopicPartition] | None = None) -> None:
        self.paused = False

    def group_metadata(self) -> object:
        return "group-metadata"

    #: What the group has committed, as the broker would answer an OffsetFetch now.
    broker_offsets: dict[tuple[str, int], int] = {}
    offset_fetch_errors: list[Exception] = []

    def committed_offsets(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.offset_fetch_errors:
            raise self.offset_fetch_errors.pop(0)
        return [
            TopicPartition(tp.topic, tp.partition, self.broker_offsets.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]


class FakeProducer:
    """``outstanding`` outputs stay unacknowledged until the test sets it to 0; ``failure`` is what
    :meth:`raise_on_failure` raises; ``errors[step]`` are raised by the transactional steps in turn."""

    def __init__(self) -> None:
        self.outstanding = 0
        self.failure: DeliveryFailedError | None = None
        self.errors: dict[str, list[TransactionFailedError]] = {}
        self.calls: list[str] = []
        self.sent_offsets: list[list[tuple[str, int, int]]] = []
        self.hung: tuple[str, float] | None = None  # what hung_call() reports
        self.answers = True  # what reachable() reports
        self.running_call: str | None = None

    def hung_call(self) -> tuple[str, float] | None:
        return self.hung

    def reachable(self, timeout: float) -> bool:
        return self.answers

    def reinitialise(self, timeout: float) -> None:
        self.hung = None  # the new client has no call out
        self._step("reinitialise")

    def wait_for_acks(self, timeout: float) -> int:
        return self.outstanding

    def raise_on_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def forget_failures(self) -> None:
        self.failure = None
        self.calls.append("forget_failures")

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.errors.get(name):
            raise self.errors[name].pop(0)

    def begin_transaction(self) -> None:
        self._step("begin_transaction")

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: Any, timeout: float
    ) -> None:
        assert metadata == "group-metadata"
        self._step("send_offsets_to_transaction")
        self.sent_offsets.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def commit_transaction(self, timeout: float) -> None:
        self._step("commit_transaction")

    def abort_transaction(self, timeout: float) -> None:
        self._step("abort_transaction")


def checkpoint(
    exactly_once: bool = False, budget: float = 60.0
) -> tuple[Checkpoint, FakeConsumer, FakeProducer]:
    consumer, producer = FakeConsumer(), FakeProducer()
    made = Checkpoint(
        cast(Consumer, consumer),
        cast(Producer, producer),
        exactly_once=exactly_once,
        interval_seconds=60.0,
        max_records=1000,
        timeout_seconds=0.2,
        outage_budget_seconds=budget,
        step_seconds=0.01,
    )
    return made, consumer, producer


def retriable(step: str) -> TransactionFailedError:
    return TransactionFailedError(f"{step} failed: Local: Timed out", retriable=True)


def abortable(step: str) -> TransactionFailedError:
    return TransactionFailedError(f"{step} failed: Broker: Producer fenced by epoch bump", abortable=True)


def test_track_batch_is_track_for_each_record_of_the_batch() -> None:
    one_by_one, by_record, _ = checkpoint()
    batched, by_batch, _ = checkpoint()
    for offset in range(10, 15):
        one_by_one.track(T, 0, offset)
    for offset in (3, 4):
        one_by_one.track(T, 2, offset)
    batched.track_batch(T, 0, 10, 14, 5)
    batched.track_batch(T, 2, 3, 4, 2)
    assert one_by_one.uncommitted_records == batched.uncommitted_records == 7
    assert one_by_one.commit() is batched.commit() is Outcome.COMMITTED
    assert by_record.committed == by_batch.committed == [[(T, 0, 15), (T, 2, 5)]]


def test_nothing_is_committed_until_every_output_is_acknowledged_and_input_waits_meanwhile() -> None:
    made, consumer, producer = checkpoint()
    made.track_batch(T, 1, 0, 99, 100)
    producer.outstanding = 40
    assert made.commit() is Outcome.WAITING
    assert made.commit() is Outcome.WAITING
    assert made.waiting and consumer.paused and consumer.committed == []
    with pytest.raises(RuntimeError):
        made.begin()  # no new work while waiting
    producer.outstanding = 0
    assert made.commit() is Outcome.COMMITTED
    assert consumer.committed == [[(T, 1, 100)]] and not consumer.paused and not made.waiting
    assert made.commits == 1 and made.waited_seconds == 0.0


def test_waiting_past_the_outage_budget_fails_loudly_without_committing() -> None:
    made, consumer, producer = checkpoint(budget=0.05)
    made.track_batch(T, 0, 0, 9, 10)
    producer.outstanding = 10
    assert made.commit() is Outcome.WAITING
    time.sleep(0.1)
    with pytest.raises(BrokerOutageError, match=re.escape("BROKER_OUTAGE_BUDGET_SECONDS=0.05")):
        made.commit()
    assert consumer.committed == [] and made.commits == 0


def test_a_retriable_commit_failure_is_skipped_and_the_next_checkpoint_commits_past_it() -> None:
    made, consumer, _ = checkpoint()
    consumer.commit_errors = [CommitFailedError("offset commit failed: Broker: Rebalance", retriable=True)]
    made.track_batch(T, 0, 0, 9, 10)
    assert made.commit() is Outcome.SKIPPED
    assert made.commits == 0 and consumer.committed == []
    made.track_batch(T, 0, 10, 19, 10)
    assert made.commit() is Outcome.COMMITTED
    assert consumer.committed == [[(T, 0, 20)]] and made.commits == 1


def test_a_non_retriable_commit_failure_is_raised() -> None:
    made, consumer, _ = checkpoint()
    consumer.commit_errors = [CommitFailedError("offset commit failed: Broker: Group authorization failed")]
    made.track_batch(T, 0, 0, 9, 10)
    with pytest.raises(CommitFailedError):
        made.commit()


def test_a_timed_out_delivery_rewinds_to_the_last_commit_at_least_once() -> None:
    made, consumer, producer = checkpoint()
    made.track_batch(T, 0, 0, 9, 10)
    assert made.commit() is Outcome.COMMITTED  # partition 0 restarts from 10 now
    made.track_batch(T, 0, 10, 19, 10)
    made.track_batch(T, 3, 7, 8, 2)  # first seen: restarts from its first processed offset
    producer.failure = DeliveryFailedError("3 output record(s) were not acknowledged", timed_out=True)
    producer.outstanding = 2
    assert made.commit() is Outcome.WAITING  # every output resolves before the rewind
    producer.outstanding = 0
    assert made.commit() is Outcome.REWOUND
    assert consumer.seeks == [[(T, 0, 10), (T, 3, 7)]] and not consumer.paused
    assert consumer.committed == [[(T, 0, 10)]] and made.commits == 1 and made.rewinds == 1
    assert "forget_failures" in producer.calls and made.uncommitted_records == 0


def test_a_delivery_failure_that_is_not_a_time_out_is_raised() -> None:
    made, consumer, producer = checkpoint()
    made.track_batch(T, 0, 0, 9, 10)
    producer.failure = DeliveryFailedError(
        "1 output record(s) were not acknowledged: Broker: Message too large"
    )
    with pytest.raises(DeliveryFailedError, match="too large"):
        made.commit()
    assert consumer.committed == [] and consumer.seeks == []


def test_an_aborted_transaction_rewinds_is_not_a_commit_and_the_next_one_starts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made, consumer, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 49, 50)
    assert made.commit() is Outcome.COMMITTED  # transaction 1: partition 0 restarts from 50
    made.begin()
    made.track_batch(T, 0, 50, 99, 50)
    producer.errors["commit_transaction"] = [abortable("commit_transaction")]
    with caplog.at_level(logging.DEBUG, logger="worker.checkpoint"):
        assert made.commit() is Outcome.REWOUND
    assert producer.calls[-3:] == ["commit_transaction", "abort_transaction", "forget_failures"]
    assert consumer.seeks == [[(T, 0, 50)]]
    assert made.commits == 1 and made.rewinds == 1
    messages = [r.getMessage() for r in caplog.records]
    assert not any("transaction 2 committed" in m or "checkpoint committed" in m for m in messages)
    assert any("transaction 2 aborted" in m for m in messages)
    made.begin()  # the records come again, in a new transaction
    made.track_batch(T, 0, 50, 99, 50)
    assert made.commit() is Outcome.COMMITTED
    assert made.transactions == 3 and producer.sent_offsets[-1] == [(T, 0, 100)]


def test_a_timed_out_delivery_aborts_the_transaction_and_the_abort_waits_for_the_broker() -> None:
    made, consumer, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 2, 5, 14, 10)
    producer.failure = DeliveryFailedError("10 output record(s) were not acknowledged", timed_out=True)
    producer.errors["abort_transaction"] = [retriable("abort_transaction"), retriable("abort_transaction")]
    assert made.commit() is Outcome.WAITING
    assert made.commit() is Outcome.WAITING
    assert made.waiting and consumer.paused and consumer.seeks == []
    assert made.commit() is Outcome.REWOUND
    assert producer.calls.count("abort_transaction") == 3 and "commit_transaction" not in producer.calls
    assert consumer.seeks == [[(T, 2, 5)]] and not made.waiting and made.commits == 0


def test_a_timed_out_transaction_step_is_resumed_not_restarted(caplog: pytest.LogCaptureFixture) -> None:
    made, _, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 9, 10)
    producer.errors["send_offsets_to_transaction"] = [retriable("send_offsets_to_transaction")]
    producer.errors["commit_transaction"] = [retriable("commit_transaction"), retriable("commit_transaction")]
    with caplog.at_level(logging.DEBUG, logger="worker.checkpoint"):
        outcomes = [made.commit() for _ in range(4)]
    assert outcomes == [Outcome.WAITING, Outcome.WAITING, Outcome.WAITING, Outcome.COMMITTED]
    assert producer.calls.count("send_offsets_to_transaction") == 2  # the first attempt timed out
    assert len(producer.sent_offsets) == 1 and producer.calls.count("commit_transaction") == 3
    assert "abort_transaction" not in producer.calls
    committing = [r for r in caplog.records if "transaction 1 committing" in r.getMessage()]
    assert len(committing) == 1, "in doubt from the first attempt on, logged once"


def test_a_fenced_producer_is_fatal_and_nothing_is_rewound() -> None:
    made, consumer, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 9, 10)
    producer.errors["send_offsets_to_transaction"] = [
        TransactionFailedError("send_offsets_to_transaction failed: Broker: Producer fenced")
    ]
    with pytest.raises(TransactionFailedError, match="fenced"):
        made.commit()
    assert "abort_transaction" not in producer.calls and consumer.seeks == [] and made.commits == 0


def test_abandon_after_partition_loss_aborts_and_commits_nothing_of_the_lost_work() -> None:
    made, consumer, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 9, 10)
    made.abandon()
    assert producer.calls == ["begin_transaction", "abort_transaction", "forget_failures"]
    assert not made.waiting and made.uncommitted_records == 0 and consumer.seeks == [[]]
    made.begin()  # reassigned: the next owner's records (here ours again) in a new transaction
    made.track_batch(T, 1, 30, 39, 10)
    assert made.commit() is Outcome.COMMITTED
    assert producer.sent_offsets == [[(T, 1, 40)]]


def test_abandon_during_an_outage_keeps_waiting_for_the_abort() -> None:
    made, _, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 9, 10)
    producer.errors["abort_transaction"] = [retriable("abort_transaction")]
    made.abandon()
    assert made.waiting, "no new transaction before the old one is aborted"
    assert made.commit() is Outcome.REWOUND
    assert not made.waiting and producer.calls.count("abort_transaction") == 2


def test_abandon_at_least_once_drops_the_offsets() -> None:
    made, consumer, _ = checkpoint()
    made.track_batch(T, 0, 0, 9, 10)
    made.abandon()
    assert made.commit() is Outcome.COMMITTED
    assert consumer.committed == []


def test_revocation_commits_first_or_abandons_when_the_broker_does_not_answer() -> None:
    made, consumer, producer = checkpoint()
    made.track_batch(T, 0, 0, 9, 10)
    made.revoke([TopicPartition(T, 0)])
    assert consumer.committed == [[(T, 0, 10)]]
    made.track_batch(T, 1, 0, 9, 10)
    producer.outstanding = 5
    started = time.monotonic()
    made.revoke([TopicPartition(T, 1)])  # within timeout_seconds (0.2 s), then gives the work up
    assert time.monotonic() - started < 2
    assert consumer.committed == [[(T, 0, 10)]] and made.uncommitted_records == 0


def test_finish_gives_up_at_its_deadline_and_commits_nothing_unacknowledged() -> None:
    made, consumer, producer = checkpoint()
    made.track_batch(T, 0, 0, 9, 10)
    producer.outstanding = 3
    started = time.monotonic()
    assert made.finish(0.2) is Outcome.WAITING
    assert 0.15 < time.monotonic() - started < 2
    assert consumer.committed == []


# --- recovery from a broken producer (a broker crash and restart) -----------------------------------------


def test_a_call_that_hangs_while_the_broker_answers_replaces_the_producer_and_rewinds_to_the_committed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made, consumer, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 9, 10)
    assert made.commit() is Outcome.COMMITTED  # partition 0 restarts from 10
    made.begin()
    made.track_batch(T, 0, 10, 29, 20)
    producer.errors["send_offsets_to_transaction"] = [retriable("send_offsets_to_transaction")] * 2
    assert made.commit() is Outcome.WAITING
    producer.hung = ("send_offsets_to_transaction", 11.0)
    consumer.broker_offsets = {(T, 0): 10}
    with caplog.at_level(logging.INFO, logger="worker.checkpoint"):
        assert made.commit() is Outcome.REWOUND
    assert producer.calls[-2:] == ["reinitialise", "forget_failures"]
    assert "abort_transaction" not in producer.calls, "the new producer's registration ends the old one"
    assert consumer.seeks == [[(T, 0, 10)]] and not made.waiting and not consumer.paused
    assert any("send_offsets_to_transaction has not returned" in r.getMessage() for r in caplog.records)
    made.begin()  # the records come again, in a new transaction of the new producer
    made.track_batch(T, 0, 10, 29, 20)
    assert made.commit() is Outcome.COMMITTED and producer.sent_offsets[-1] == [(T, 0, 30)]


def test_a_hung_commit_whose_transaction_did_commit_rewinds_to_where_the_broker_says() -> None:
    made, consumer, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 1, 100, 199, 100)
    producer.errors["commit_transaction"] = [retriable("commit_transaction")] * 2
    assert made.commit() is Outcome.WAITING  # the commit was requested: its outcome is in doubt
    producer.hung = ("commit_transaction", 12.0)
    consumer.broker_offsets = {(T, 1): 200}  # the coordinator completed it
    assert made.commit() is Outcome.REWOUND
    assert consumer.seeks == [[(T, 1, 200)]], "nothing committed is processed twice"


def test_a_crash_between_transactions_that_breaks_the_producer_replaces_it() -> None:
    made, consumer, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 2, 0, 9, 10)
    producer.errors["send_offsets_to_transaction"] = [
        TransactionFailedError(
            "send_offsets_to_transaction failed: Local: Fatal idempotent producer error", reinitialise=True
        )
    ]
    producer.errors["reinitialise"] = [retriable("init_transactions"), retriable("init_transactions")]
    consumer.offset_fetch_errors = [CommitFailedError("offset fetch timed out", retriable=True)]
    outcomes = [made.commit() for _ in range(4)]
    assert outcomes == [Outcome.WAITING, Outcome.WAITING, Outcome.WAITING, Outcome.REWOUND]
    assert producer.calls.count("reinitialise") == 3 and consumer.seeks == [[(T, 2, 0)]]


def test_a_hung_call_while_the_broker_is_silent_is_an_outage_not_a_broken_producer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made, _, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 9, 10)
    producer.errors["commit_transaction"] = [retriable("commit_transaction")] * 3
    producer.hung, producer.answers = ("commit_transaction", 40.0), False
    assert [made.commit() for _ in range(3)] == [Outcome.WAITING] * 3
    assert "reinitialise" not in producer.calls and made.waiting


def test_the_outage_warning_says_unreachable_only_when_the_broker_does_not_answer(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.checkpoint._WARN_AFTER_SECONDS", 0.0)
    for answers, expected in ((False, "broker unreachable for"), (True, "the broker answers, but")):
        made, _, producer = checkpoint(exactly_once=True)
        made.begin()
        made.track_batch(T, 0, 0, 9, 10)
        producer.outstanding, producer.answers = 5, answers
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="worker.checkpoint"):
            assert made.commit() is Outcome.WAITING
        assert any(expected in r.getMessage() for r in caplog.records), caplog.text
        assert (made.unreachable_seconds > 0) is (not answers)


def test_abandon_with_a_broken_producer_replaces_it_instead_of_giving_up() -> None:
    made, _, producer = checkpoint(exactly_once=True)
    made.begin()
    made.track_batch(T, 0, 0, 9, 10)
    producer.errors["abort_transaction"] = [
        TransactionFailedError("abort_transaction failed: Local: Fatal error", reinitialise=True)
    ]
    made.abandon()
    assert producer.calls[-2:] == ["reinitialise", "forget_failures"] and not made.waiting
    made.begin()
    assert producer.calls[-1] == "begin_transaction"
