"""The worker as a real process against a Kafka-protocol broker: results, dead letters, metrics."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import orjson
import pytest

from schemas import DeadLetterHeader, SentimentResult
from sentiment_model import Predictor
from sentiment_model.resolve import file_sha256
from tests.kafka_harness import WorkerProcess, metric_sum, produce, read_all, scrape, unique
from tests.worker_harness import POISON, create_worker_topics, posts
from training.data import Dataset


@pytest.fixture
def topics() -> dict[str, str]:
    return {
        "INPUT_TOPIC": unique("mentions"),
        "OUTPUT_TOPIC": unique("sentiment"),
        "DLQ_TOPIC": unique("dlq"),
        "CONSUMER_GROUP": unique("group"),
    }


@pytest.fixture
def worker_env(kafka: str, small_model: Path, topics: dict[str, str]) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MODEL_PATH": str(small_model),
        "BRANDS": "acme,globex",
        "COMMIT_INTERVAL_SECONDS": "0.5",
        **topics,
    }


def start_worker(workers: list[WorkerProcess], env: dict[str, str], log: Path) -> WorkerProcess:
    worker = WorkerProcess(env, log).start()
    workers.append(worker)
    return worker


def test_end_to_end_results_match_the_model(
    kafka: str,
    worker_env: dict[str, str],
    workers: list[WorkerProcess],
    tmp_path: Path,
    val_split: Dataset,
    small_model: Path,
) -> None:
    items = posts(val_split, 400)
    create_worker_topics(kafka, worker_env)
    # every other record has no key: the result is then keyed by the post id
    produce(
        kafka,
        worker_env["INPUT_TOPIC"],
        [((f"k{p['id']}".encode() if i % 2 == 0 else None), orjson.dumps(p)) for i, p in enumerate(items)],
    )
    worker = start_worker(workers, worker_env, tmp_path / "worker.log")
    results = read_all(kafka, worker_env["OUTPUT_TOPIC"], len(items), timeout=90, settle=1.0)
    assert len(results) == len(items)

    expected = Predictor.load(small_model).predict([str(p["text"]) for p in items])
    by_id = {str(p["id"]): (i, p) for i, p in enumerate(items)}
    sha = file_sha256(small_model)
    for record in results:
        result = SentimentResult.model_validate_json(record.value())
        i, post = by_id[result.id]
        assert record.key() == (f"k{post['id']}".encode() if i % 2 == 0 else str(post["id"]).encode())
        assert result.label == expected.labels[i]
        assert result.scores.model_dump() == pytest.approx(expected.score_dicts()[i])
        assert result.score == pytest.approx(expected.scores[i])
        assert (result.brand, result.source, result.created_at) == (
            post.get("brand"),
            post.get("source"),
            post.get("created_at"),
        )
        assert result.model.sha256 == sha and result.model.repo == "local"
        assert (result.model_extra or {}).get("campaign") == post.get("campaign")
        assert dict(record.headers())["model-sha256"] == sha.encode()

    samples = scrape(worker.metrics_port)
    assert metric_sum(samples, "sentiment_records_consumed_total") == len(items)
    assert metric_sum(samples, "sentiment_results_produced_total") == len(items)
    assert metric_sum(samples, "sentiment_predictions_total") == len(items)
    for label in ("negative", "neutral", "positive"):
        for brand in ("acme", "globex"):
            want = sum(
                1 for i, p in enumerate(items) if p.get("brand") == brand and expected.labels[i] == label
            )
            assert metric_sum(samples, "sentiment_predictions_total", sentiment=label, brand=brand) == want
        other = sum(
            1
            for i, p in enumerate(items)
            if p.get("brand") not in ("acme", "globex") and expected.labels[i] == label
        )
        assert metric_sum(samples, "sentiment_predictions_total", sentiment=label, brand="other") == other
    assert metric_sum(samples, "sentiment_model_info", sha256=sha) == 1
    assert metric_sum(samples, "sentiment_batch_size_records_count") >= 1
    assert metric_sum(samples, "sentiment_event_to_result_seconds_count") == len(items)
    assert metric_sum(samples, "sentiment_last_processed_timestamp_seconds") > 1.7e9
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/healthz", timeout=5) as live:
        assert live.status == 200

    # the worker's own prefetch bound, not librdkafka's 64 MB (see worker/app.py)
    assert "'queued.max.messages.kbytes': 8192" in worker.log
    assert "'fetch.queue.backoff.ms': 10" in worker.log
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "stopped cleanly" in worker.log


#: Valid posts in languages the model does not score (MODEL_LANGUAGES defaults to en), and their label.
FOREIGN = [("es", "es"), ("pt-BR", "pt"), ("de_DE", "de"), ("es", "es"), ("tlh", "other")]


def test_poison_mix_goes_to_the_dead_letter_topic(
    kafka: str, worker_env: dict[str, str], workers: list[WorkerProcess], tmp_path: Path, val_split: Dataset
) -> None:
    good = posts(val_split, 60)
    for i, post in enumerate(good[:6]):  # tagged English (any region) is scored
        post["lang"] = ["en", "EN-us", "en_GB"][i % 3]
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, post in enumerate(good):
        records.append((None, orjson.dumps(post)))
        if i < len(POISON):
            records.append((f"poison{i}".encode(), POISON[i][0]))
        if i < len(FOREIGN):
            foreign = {"id": f"f{i}", "text": "¡Qué servicio tan malo!", "lang": FOREIGN[i][0]}
            records.append((f"foreign{i}".encode(), orjson.dumps(foreign)))
    create_worker_topics(kafka, worker_env)
    produce(kafka, worker_env["INPUT_TOPIC"], records)
    # an operator's KAFKA_* value wins over the worker's own librdkafka default
    worker_env = {**worker_env, "KAFKA_QUEUED_MAX_MESSAGES_KBYTES": "2048"}
    worker = start_worker(workers, worker_env, tmp_path / "worker.log")
    worker.wait_for_log("'queued.max.messages.kbytes': '2048'", 30)

    results = read_all(kafka, worker_env["OUTPUT_TOPIC"], len(good), timeout=90, settle=1.0)
    assert sorted(SentimentResult.model_validate_json(r.value()).id for r in results) == sorted(
        str(p["id"]) for p in good
    )
    everything = read_all(kafka, worker_env["DLQ_TOPIC"], len(POISON) + len(FOREIGN), timeout=60, settle=1.0)
    foreign = [r for r in everything if r.key().startswith(b"foreign")]
    dead = [r for r in everything if r.key().startswith(b"poison")]
    assert len(dead) == len(POISON) and len(foreign) == len(FOREIGN)
    for record in foreign:
        headers = dict(record.headers())
        assert headers[DeadLetterHeader.REASON.value] == b"unsupported_language"
        lang = orjson.loads(record.value())["lang"]
        assert repr(lang).encode() in headers[DeadLetterHeader.ERROR.value], "the detail names the language"
    for record in dead:
        i = int(record.key().decode().removeprefix("poison"))
        original, reason = POISON[i]
        headers = dict(record.headers())
        assert record.value() == (original or b""), "the original bytes travel untouched"
        assert headers[DeadLetterHeader.REASON.value].decode() == reason
        assert headers[DeadLetterHeader.ERROR.value], "a reason a person can read"
        assert headers[DeadLetterHeader.TOPIC.value].decode() == worker_env["INPUT_TOPIC"]
        assert int(headers[DeadLetterHeader.OFFSET.value]) >= 0
    schema_errors = {
        record.key(): dict(record.headers())[DeadLetterHeader.ERROR.value].decode() for record in dead
    }
    assert "'text' is too long" in schema_errors[b"poison13"] and "10,000" in schema_errors[b"poison13"]

    samples = scrape(worker.metrics_port)
    for reason in {r for _, r in POISON}:
        assert metric_sum(samples, "sentiment_dead_letters_total", reason=reason) == sum(
            1 for _, r in POISON if r == reason
        )
    assert metric_sum(samples, "sentiment_dead_letters_total", reason="unsupported_language") == len(FOREIGN)
    for label in {label for _, label in FOREIGN}:
        assert metric_sum(samples, "sentiment_unsupported_language_posts_total", lang=label) == sum(
            1 for _, known in FOREIGN if known == label
        )
    assert not any(  # never scored as if they were English
        SentimentResult.model_validate_json(r.value()).id.startswith("f") for r in results
    )
    assert "dead-lettered" in worker.log
    assert worker.process is not None and worker.process.poll() is None, "bad input never stops the worker"
