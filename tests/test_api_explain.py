"""``"explain": true`` on /predict and /predict/batch, with real models trained from TweetEval."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from schemas import LABELS
from tests.api_harness import serving, settings
from training.data import Dataset
from training.fasttext_train import fit, labelled_lines, training_file

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def client(small_model: Path) -> Iterator[TestClient]:
    """The API serving the small quantized word model (scored, and explained, in numpy)."""
    with serving(create_app(settings(model_path=small_model))) as client:
        yield client


def documented_scores(logits: dict[str, float], scoring: str) -> npt.NDArray[np.float64]:
    """The identity written in :class:`schemas.api.Explanation`, implemented independently."""
    x = np.array([logits[label] for label in LABELS], dtype=np.float32)
    if scoring == "sigmoid":
        step = np.floor((x + np.float32(8)) * np.float32(32)).astype(np.float64) / 32 - 8
        p = np.where(x < -8, 0.0, np.where(x > 8, 1.0, 1 / (1 + np.exp(-step))))
    else:
        e = np.exp(x.astype(np.float64) - x.max())
        p = e / e.sum()
    q = np.minimum(p + 1e-5, 1.0)
    return np.asarray(q / q.sum(), dtype=np.float64)


def check(result: dict[str, Any]) -> None:
    explanation = result["explanation"]
    tokens = explanation["tokens"]
    total = {label: sum(t["contributions"][label] for t in tokens) for label in LABELS}
    assert total == pytest.approx(explanation["logits"], abs=TOLERANCE)
    scores = documented_scores(explanation["logits"], explanation["scoring"])
    assert [result["scores"][label] for label in LABELS] == pytest.approx(scores.tolist(), abs=TOLERANCE)
    label = result["label"]
    pushes = [t["contributions"][label] for t in tokens]
    assert pushes == sorted(pushes, reverse=True)  # ordered by influence on the answer


def test_batch_explanations_add_up_to_the_scores(client: TestClient, val_split: Dataset) -> None:
    texts = val_split.texts[:1_000]
    plain = client.post("/predict/batch", json={"texts": texts})
    response = client.post("/predict/batch", json={"texts": texts, "explain": True})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 1_000
    for result, unexplained in zip(results, plain.json()["results"], strict=True):
        check(result)
        assert result["explanation"]["scoring"] == "softmax"  # the small model's loss
        assert {k: v for k, v in result.items() if k != "explanation"} == unexplained
        assert result["explanation"]["tokens"][-1]["token"] != ""  # no empty tokens anywhere
    listed = {t["token"] for result in results for t in result["explanation"]["tokens"]}
    assert "</s>" in listed and "__lexpos__" in listed and any(" " in token for token in listed)


def test_single_prediction_explains_only_when_asked(client: TestClient) -> None:
    plain = client.post("/predict", json={"text": "I love this phone"})
    assert plain.status_code == 200 and "explanation" not in plain.json()
    explained = client.post("/predict", json={"text": "I love this phone", "explain": True})
    assert explained.status_code == 200
    body = explained.json()
    check(body)
    assert {k: v for k, v in body.items() if k != "explanation"} == plain.json()
    assert client.post("/predict", json={"text": "hi", "explain": "yes"}).status_code == 422


def test_a_strong_negative_word_comes_first(client: TestClient) -> None:
    body = client.post("/predict", json={"text": "worst customer service ever", "explain": True}).json()
    assert body["label"] == "negative"
    first = body["explanation"]["tokens"][0]["token"]
    assert "worst" in first or first == "__lexneg__", body["explanation"]["tokens"][:3]


@pytest.fixture(scope="module")
def char_model(tmp_path_factory: pytest.TempPathFactory, train_subset: Dataset) -> Path:
    """A char n-gram model: scored by fastText, which cannot explain."""
    path = tmp_path_factory.mktemp("char-model") / "sentiment_ft.bin"
    with training_file(labelled_lines(train_subset.head(2_000))) as train_file:
        params = {"epoch": 3, "dim": 8, "wordNgrams": 2, "minn": 2, "maxn": 3, "bucket": 50_000}
        fit(train_file, params, threads=1).save_model(str(path))
    return path


def test_a_model_that_cannot_explain_answers_501(char_model: Path) -> None:
    with serving(create_app(settings(model_path=char_model))) as client:
        assert client.post("/predict", json={"text": "I love it"}).status_code == 200
        for path, body in (("/predict", {"text": "I love it"}), ("/predict/batch", {"texts": ["I love it"]})):
            response = client.post(path, json={**body, "explain": True})
            assert response.status_code == 501
            assert "char n-grams" in response.json()["detail"]
