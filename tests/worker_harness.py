"""Topics, posts and progress probes shared by the tests that run the worker as a real process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import orjson
from confluent_kafka.admin import AdminClient, NewTopic

from tests.kafka_harness import WorkerProcess, unique
from training.data import Dataset


def create_topics(kafka: str, *topics: str, partitions: int = 4) -> None:
    """Create topics before any worker starts, as an operator would (CreateTopics). The mock cluster
    refuses CreateTopics: there a metadata request from a client that allows auto-creation creates them."""
    admin = AdminClient({"bootstrap.servers": kafka})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics], operation_timeout=30)
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                ck.Producer({"bootstrap.servers": kafka}).list_topics(topic, timeout=10)


def create_worker_topics(kafka: str, env: dict[str, str]) -> None:
    """The worker's input, output and dead-letter topics."""
    create_topics(kafka, env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], env["DLQ_TOPIC"])


def posts(dataset: Dataset, n: int, start: int = 0) -> list[dict[str, object]]:
    brands = ["acme", "globex", "initech", None]
    out: list[dict[str, object]] = []
    for i in range(start, start + n):
        post: dict[str, object] = {"id": f"p{i}", "text": dataset.texts[i % len(dataset)]}
        if brands[i % 4] is not None:
            post["brand"] = brands[i % 4]
        if i % 3 == 0:
            post |= {
                "source": "twitter",
                "created_at": "2026-11-26T10:15:00Z",
                "campaign": {"name": "spring"},
            }
        out.append(post)
    return out


POISON: list[tuple[bytes | None, str]] = [
    (b"\xff\xfe not utf-8 \xc3\x28", "undecodable"),
    (None, "undecodable"),
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b"42", "not_an_object"),
    (b'{"text": "no id"}', "schema_violation"),
    (b'{"id": "", "text": "empty id"}', "schema_violation"),
    (b'{"id": "x1", "text": "   "}', "schema_violation"),
    (b'{"id": "x2"}', "schema_violation"),
    (b'{"id": 12, "text": "id is a number"}', "schema_violation"),
    (b'{"id": "x3", "text": ["a", "list"]}', "schema_violation"),
    (json.dumps({"id": "x4", "text": "x" * 10_001}).encode(), "schema_violation"),
    (b'{"id": "x5", "text": "ok", "created_at": "yesterday"}', "schema_violation"),
]


def progress(kafka: str, topic: str) -> int:
    """Records written to ``topic`` so far (including uncommitted transactional ones)."""
    consumer = ck.Consumer({"bootstrap.servers": kafka, "group.id": unique("probe")})
    try:
        return sum(
            max(0, consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=5)[1])
            for p in range(4)
        )
    except ck.KafkaException:  # the worker has not created the topic yet
        return 0
    finally:
        consumer.close()


def wait_progress(kafka: str, topic: str, at_least: int, worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while progress(kafka, topic) < at_least:
        assert worker.process is not None and worker.process.poll() is None, worker.log
        assert time.monotonic() < deadline, f"no progress to {at_least}:\n{worker.log}"
        time.sleep(0.05)


def result_id(record: Any) -> str:
    return str(orjson.loads(record.value())["id"])


def result_ids(records: list[Any]) -> list[str]:
    return [result_id(r) for r in records]


def run_to_exit(env: dict[str, str], tmp_path: Path, timeout: float = 60) -> tuple[int, str]:
    worker = WorkerProcess(env, tmp_path / unique("w")).start()
    try:
        return worker.wait(timeout), worker.log
    finally:
        worker.stop()
