"""The worker beyond scoring, as a real process on a Kafka-protocol broker: hot-reload with shadow
evaluation and drift gauges. (The per-brand partial aggregates: tests/test_crisis.py.)"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from sentiment_model import Predictor
from sentiment_model.resolve import file_sha256
from tests.conftest import publish_model, train_small_model
from tests.kafka_harness import WorkerProcess, metric_sum, produce, read_all, scrape, unique
from tests.worker_harness import create_topics
from training.data import Dataset, load_split


@pytest.fixture(scope="module")
def test_split(data_dir: Path) -> Dataset:
    return load_split("test", data_dir)


def env_for(kafka: str, model: Path, **extra: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "INPUT_TOPIC": unique("mentions"),
        "OUTPUT_TOPIC": unique("sentiment"),
        "DLQ_TOPIC": unique("dlq"),
        "CONSUMER_GROUP": unique("group"),
        "MODEL_PATH": str(model),
        "BRANDS": "acme,globex",
        "COMMIT_INTERVAL_SECONDS": "0.5",
        "BATCH_SIZE": "100",
        **extra,
    }
    create_topics(kafka, env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], env["DLQ_TOPIC"])
    return env


def post_records(texts: list[str], prefix: str, brands: list[str | None]) -> list[tuple[bytes, bytes]]:
    out = []
    for i, text in enumerate(texts):
        post: dict[str, object] = {"id": f"{prefix}{i}", "text": text}
        if brands[i % len(brands)] is not None:
            post["brand"] = brands[i % len(brands)]
        out.append((f"{prefix}{i}".encode(), orjson.dumps(post)))
    return out


class Trickle:
    """Produces records in small chunks on a thread, so batches keep flowing while a test waits."""

    def __init__(
        self,
        kafka: str,
        topic: str,
        records: list[tuple[bytes, bytes]],
        chunk: int = 100,
        pause: float = 0.05,
    ) -> None:
        self.thread = threading.Thread(
            target=self._run, args=(kafka, topic, records, chunk, pause), daemon=True
        )

    def _run(
        self, kafka: str, topic: str, records: list[tuple[bytes, bytes]], chunk: int, pause: float
    ) -> None:
        for start in range(0, len(records), chunk):
            produce(kafka, topic, records[start : start + chunk])
            time.sleep(pause)

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(120)


# Measured on TweetEval val: `other_model` agrees with `small_model` on 0.70 of the texts, with label
# mixes 0.10/0.43/0.48 vs 0.13/0.47/0.40 (JSD ~0.005); a model trained on positives only agrees on 0.48.
SHADOW = {"SHADOW_RECORDS": "400", "SHADOW_MIN_AGREEMENT": "0.6", "SHADOW_MAX_LABEL_JSD": "0.05"}


def test_reload_mid_stream_switches_model_per_batch_with_no_gap(
    tmp_path: Path,
    kafka: str,
    small_model: Path,
    other_model: Path,
    val_split: Dataset,
    test_split: Dataset,
    workers: list[WorkerProcess],
) -> None:
    folder = tmp_path / "model"
    model = publish_model(small_model, folder, val_split)
    old_sha, new_sha = file_sha256(small_model), file_sha256(other_model)
    env = env_for(kafka, model, MODEL_POLL_INTERVAL_SECONDS="0.3", **SHADOW)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    worker.wait_for_log("hot-reload on")
    records = post_records(test_split.texts[:3000], "p", ["acme", "globex", None])
    produce(kafka, env["INPUT_TOPIC"], records[:800])
    read_all(kafka, env["OUTPUT_TOPIC"], 800, timeout=60)

    publish_model(other_model, folder, val_split)
    with Trickle(kafka, env["INPUT_TOPIC"], records[800:]):
        worker.wait_for_log("promoting", timeout=90)
    results = read_all(kafka, env["OUTPUT_TOPIC"], 3000, timeout=90, distinct=lambda r: r.key())

    by_id = {orjson.loads(r.value())["id"]: r for r in results}
    assert len(by_id) == 3000  # no gap: every post scored, before, during and after the switch
    shas = {orjson.loads(r.value())["model"]["sha256"] for r in results}
    assert shas == {old_sha, new_sha}
    # Atomic per batch and for good: along each partition, results go old...old, new...new.
    per_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in results:
        per_partition[r.partition()].append((r.offset(), orjson.loads(r.value())["model"]["sha256"]))
    for rows in per_partition.values():
        sequence = [sha for _, sha in sorted(rows)]
        switched = sequence.index(new_sha) if new_sha in sequence else len(sequence)
        assert set(sequence[:switched]) <= {old_sha} and set(sequence[switched:]) <= {new_sha}
    # Each result's label is what the model it names predicts, and its header names the same model.
    predictors = {old_sha: Predictor.load(small_model), new_sha: Predictor.load(other_model)}
    texts = dict(zip((k.decode() for k, _ in records), test_split.texts[:3000], strict=True))
    for sha, predictor in predictors.items():
        ids = [i for i, r in by_id.items() if orjson.loads(r.value())["model"]["sha256"] == sha]
        expected = predictor.predict([texts[i] for i in ids]).labels
        assert [orjson.loads(by_id[i].value())["label"] for i in ids] == expected
        assert all(dict(by_id[i].headers() or [])["model-sha256"] == sha.encode() for i in ids)
    samples = scrape(worker.metrics_port)
    assert metric_sum(samples, "sentiment_model_reloads_total", outcome="promoted") == 1
    assert metric_sum(samples, "sentiment_model_reloads_total", outcome="rejected") == 0
    assert metric_sum(samples, "sentiment_model_info", sha256=new_sha) == 1
    assert metric_sum(samples, "sentiment_model_info", sha256=old_sha) == 0
    assert 0.6 <= metric_sum(samples, "sentiment_shadow_agreement_ratio") < 1


def test_a_bad_candidate_is_rejected_in_shadow_and_the_old_model_keeps_serving(
    tmp_path: Path,
    kafka: str,
    small_model: Path,
    train_subset: Dataset,
    val_split: Dataset,
    test_split: Dataset,
    workers: list[WorkerProcess],
) -> None:
    # A model that has (almost) only seen positive posts: it calls nearly everything positive.
    keep = [i for i, label in enumerate(train_subset.labels) if label == 2]
    keep += [i for i, label in enumerate(train_subset.labels) if label != 2][:60]
    skewed_rows = Dataset("train", [train_subset.texts[i] for i in keep], train_subset.labels[keep])
    skewed = train_small_model(skewed_rows, tmp_path)
    share_positive = float(np.mean(Predictor.load(skewed).predict(val_split.texts).label_ids == 2))
    assert share_positive > 0.9

    folder = tmp_path / "model"
    model = publish_model(small_model, folder, val_split)
    old_sha = file_sha256(small_model)
    env = env_for(kafka, model, MODEL_POLL_INTERVAL_SECONDS="0.3", **SHADOW)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)
    worker.wait_for_log("hot-reload on")
    publish_model(skewed, folder, val_split)
    records = post_records(test_split.texts[:2000], "q", ["acme", None])
    with Trickle(kafka, env["INPUT_TOPIC"], records):
        worker.wait_for_log("rejected after", timeout=90)
    results = read_all(kafka, env["OUTPUT_TOPIC"], 2000, timeout=60, distinct=lambda r: r.key())
    assert len({r.key() for r in results}) == 2000
    assert {orjson.loads(r.value())["model"]["sha256"] for r in results} == {old_sha}
    time.sleep(1.5)  # several more polls: the rejected file must not enter shadow again
    samples = scrape(worker.metrics_port)
    assert metric_sum(samples, "sentiment_model_reloads_total", outcome="rejected") == 1
    assert metric_sum(samples, "sentiment_model_reloads_total", outcome="candidate") == 1
    assert metric_sum(samples, "sentiment_model_reloads_total", outcome="promoted") == 0
    assert metric_sum(samples, "sentiment_shadow_agreement_ratio") < 0.6
    assert metric_sum(samples, "sentiment_model_info", sha256=old_sha) == 1
    assert "agreement" in worker.log and "keeping" in worker.log


def test_drift_gauges_stay_flat_on_the_reference_mix_and_rise_on_a_skewed_stream(
    tmp_path: Path,
    kafka: str,
    small_model: Path,
    val_split: Dataset,
    test_split: Dataset,
    workers: list[WorkerProcess],
) -> None:
    model = publish_model(small_model, tmp_path / "model", val_split)
    window = {"DRIFT_WINDOW_RECORDS": "1000", "DRIFT_MIN_RECORDS": "500", "DRIFT_OOV_SAMPLE": "1"}
    env = env_for(kafka, model, MODEL_POLL_INTERVAL_SECONDS="0", **window)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    workers.append(worker)

    # The reference mix: the val texts the reference was measured on.
    produce(kafka, env["INPUT_TOPIC"], post_records(val_split.texts[:1000], "v", [None]))
    read_all(kafka, env["OUTPUT_TOPIC"], 1000, timeout=60)
    time.sleep(0.5)
    flat = scrape(worker.metrics_port)
    assert metric_sum(flat, "sentiment_drift_window_records") == 1000
    assert metric_sum(flat, "sentiment_label_drift_jsd") < 0.01
    reference_oov = metric_sum(flat, "sentiment_reference_oov_token_rate")
    assert 0 < reference_oov < 1
    assert abs(metric_sum(flat, "sentiment_oov_token_rate") - reference_oov) < 0.05

    # A skewed stream: only posts people labelled negative, each with two words no model has seen.
    negatives = [t for t, label in zip(test_split.texts, test_split.labels, strict=True) if label == 0][:1000]
    shouted = [f"{t} zorblax quintrofy" for t in negatives]
    produce(kafka, env["INPUT_TOPIC"], post_records(shouted, "n", [None]))
    read_all(kafka, env["OUTPUT_TOPIC"], 2000, timeout=60)
    time.sleep(0.5)
    drifted = scrape(worker.metrics_port)
    assert metric_sum(drifted, "sentiment_drift_window_records") <= 1100  # the window slid
    assert metric_sum(drifted, "sentiment_label_drift_jsd") > 0.05
    assert metric_sum(drifted, "sentiment_label_drift_psi") > 0.25
    assert metric_sum(drifted, "sentiment_live_label_share", sentiment="negative") > 2 * metric_sum(
        drifted, "sentiment_reference_label_share", sentiment="negative"
    )
    assert metric_sum(drifted, "sentiment_oov_token_rate") > reference_oov + 0.03
