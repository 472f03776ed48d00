"""Shared fixtures: the real TweetEval data beside the repo and real fastText models trained from it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sentiment_model import Predictor, normalize_batch
from tests.kafka_harness import SessionBroker, WorkerProcess, kafka_broker
from training.data import Dataset, load_split
from training.fasttext_train import fit, labelled_lines, quantize, training_file
from training.metrics import label_distribution

REPO = Path(__file__).resolve().parent.parent

#: Small, fast settings: a real model in a few seconds, far better than chance, nowhere near the bar.
QUICK_PARAMS = {"epoch": 8, "lr": 0.5, "wordNgrams": 2, "dim": 20, "minCount": 1, "bucket": 200_000}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """TweetEval sentiment in cardiffnlp layout: ``TWEETEVAL_DIR`` or ``../shared/data/...``."""
    path = Path(os.environ.get("TWEETEVAL_DIR") or REPO.parent / "shared/data/tweeteval-sentiment")
    if not (path / "train_text.txt").is_file():
        pytest.fail(f"TweetEval data not found at {path}: set TWEETEVAL_DIR (tests never skip for this)")
    return path


@pytest.fixture(scope="session")
def train_subset(data_dir: Path) -> Dataset:
    """The first 6,000 train rows."""
    return load_split("train", data_dir).head(6_000)


@pytest.fixture(scope="session")
def val_split(data_dir: Path) -> Dataset:
    """The whole validation split."""
    return load_split("val", data_dir)


def train_small_model(rows: Dataset, folder: Path) -> Path:
    """Train and quantize the small model from ``rows``; returns ``folder/sentiment_ft.ftz``.

    One thread: fastText is then deterministic for a seed, so a fixture that trains here trains the
    same way in CI (two Hogwild threads once diverged there on a tiny skewed subset)."""
    with training_file(labelled_lines(rows)) as train_file:
        model = fit(train_file, QUICK_PARAMS, threads=1)
        quantize(model, train_file, {"retrain": False, "cutoff": 20_000}, threads=1)
    path = folder / "sentiment_ft.ftz"
    model.save_model(str(path))
    return path


def publish_model(source: Path, folder: Path, val: Dataset) -> Path:
    """Install ``source`` as ``folder/sentiment_ft.ftz`` with the metrics.json training would write
    beside it (the drift reference: val label distribution and OOV rate), atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.load(source)
    reference = {
        "val_prediction_distribution": label_distribution(
            predictor.predict(val.texts).label_ids.astype(np.int64)
        ),
        "oov_token_rate": predictor.oov_rate(normalize_batch(val.texts)),
    }
    (folder / "metrics.json").write_text(json.dumps({"reference": reference}))
    staged = folder / ".staged"
    shutil.copyfile(source, staged)
    staged.replace(folder / "sentiment_ft.ftz")  # atomic: the watcher never sees half a file
    return folder / "sentiment_ft.ftz"


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory, train_subset: Dataset) -> Path:
    """A real quantized model trained from real tweets, saved as ``sentiment_ft.ftz``."""
    return train_small_model(train_subset, tmp_path_factory.mktemp("small-model"))


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A second, different real model (other rows, other settings): for revision-pinning tests."""
    folder = tmp_path_factory.mktemp("other-model")
    rows = load_split("train", data_dir)
    subset = Dataset("train", rows.texts[20_000:24_000], rows.labels[20_000:24_000])
    with training_file(labelled_lines(subset, seed=1)) as train_file:
        model = fit(train_file, {**QUICK_PARAMS, "dim": 10, "epoch": 5}, threads=1)
    path = folder / "sentiment_ft.bin"
    model.save_model(str(path))
    return path


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts (append them); killed at teardown if still running."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


#: The session's broker once a test asked for it (reported at the end of the run).
_SESSION_BROKER: list[SessionBroker] = []


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[tuple[str, str]]:
    """``(bootstrap servers, kind)`` of the session's broker (see tests/kafka_harness.py)."""
    with kafka_broker() as broker:
        _SESSION_BROKER.append(broker)
        yield broker.bootstrap, broker.kind


def _broker_lines() -> list[str]:
    return [f"{b.kind} at {b.bootstrap} ({b.why})" for b in _SESSION_BROKER]


#: Lines reported by pytest-xdist's workers, each of which runs its own session broker.
_WORKER_BROKERS: list[str] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, a worker hands its broker line to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["kafka_brokers"] = _broker_lines()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    _WORKER_BROKERS.extend(getattr(node, "workeroutput", {}).get("kafka_brokers", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per broker the run used (one per xdist worker), and why."""
    for line in [*_broker_lines(), *_WORKER_BROKERS]:
        terminalreporter.write_line(f"Kafka broker of this run: {line}")


@pytest.fixture(scope="session")
def kafka(kafka_cluster: tuple[str, str]) -> str:
    """Bootstrap servers of the session's broker."""
    return kafka_cluster[0]
