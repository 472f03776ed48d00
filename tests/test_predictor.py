"""Batch prediction with a real model, and clear errors for anything that is not one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fasttext
import numpy as np
import pytest

import sentiment_model.lexicon
import sentiment_model.normalize_text
from schemas import LABELS
from sentiment_model import ModelLoadError, ModelNotFoundError, Predictor, normalize
from sentiment_model.fasttext_scorer import FastTextScorer
from sentiment_model.model_file import read_model_file
from training.data import Dataset
from training.fasttext_train import fit, labelled_lines, training_file

TEXTS = [
    "I love this phone, best purchase ever!",
    "worst customer service I have ever had, never again",
    "The store opens at 9am on Monday.",
    "http://example.com @someone",
    "!!!",
]


def test_batch_equals_one_by_one(small_model: Path) -> None:
    predictor = Predictor.load(small_model)
    batch = predictor.predict(TEXTS)
    assert len(batch) == len(TEXTS)
    for i, text in enumerate(TEXTS):
        single = predictor.predict([text])
        assert np.allclose(single.probabilities[0], batch.probabilities[i])
    assert set(batch.labels) <= set(LABELS)


def test_probabilities_are_a_clamped_distribution(small_model: Path) -> None:
    batch = Predictor.load(small_model).predict(TEXTS)
    assert (batch.probabilities >= 0).all() and (batch.probabilities <= 1).all()
    assert np.allclose(batch.probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert batch.scores == pytest.approx(batch.probabilities.max(axis=1).tolist())
    assert [set(d) for d in batch.score_dicts()] == [set(LABELS)] * len(TEXTS)


def test_matches_fasttext_directly(small_model: Path) -> None:
    raw = fasttext.load_model(str(small_model))
    ours = Predictor.load(small_model).predict(TEXTS)
    for i, text in enumerate(TEXTS):
        labels, probs = raw.predict(normalize(text), k=-1)
        expected = {
            label.removeprefix("__label__"): min(float(p), 1.0)
            for label, p in zip(labels, probs, strict=True)
        }
        total = sum(expected.values())
        assert ours.score_dicts()[i] == pytest.approx({k: v / total for k, v in expected.items()}, abs=1e-6)
        assert ours.labels[i] == max(expected, key=lambda k: expected[k])


def test_learned_something(small_model: Path, val_split: Dataset) -> None:
    ids = Predictor.load(small_model).predict(val_split.texts).label_ids
    assert (ids == val_split.labels).mean() > 0.5  # chance on val is ~0.43 (majority class)


def test_empty_batch(small_model: Path) -> None:
    assert len(Predictor.load(small_model).predict([])) == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Predictor.load(tmp_path / "nope.ftz")


@pytest.mark.parametrize("content", [b"", b"not a model\n" * 50, bytes(range(256)) * 20])
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.ftz"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="not a fastText model"):
        Predictor.load(path)


@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.98, 0.9999])
def test_truncated_file(tmp_path: Path, small_model: Path, fraction: float) -> None:
    data = small_model.read_bytes()
    path = tmp_path / "truncated.ftz"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelLoadError):
        Predictor.load(path)


def test_wrong_labels(tmp_path: Path, train_subset: Dataset) -> None:
    lines = [
        line.replace("__label__negative", "__label__angry") for line in labelled_lines(train_subset.head(800))
    ]
    with training_file(lines) as train_file:
        model = fit(train_file, {"epoch": 2, "dim": 5, "wordNgrams": 2}, threads=1)
    path = tmp_path / "angry.bin"
    model.save_model(str(path))
    with pytest.raises(ModelLoadError, match="angry"):
        Predictor.load(path)


def test_a_file_that_crashes_fasttext_is_a_clear_error(tmp_path: Path, small_model: Path) -> None:
    # Cut points that crash fastText's loader outright (seen with SIGSEGV): the own reader checks every
    # size first, in this process, and fastText never sees such a file.
    data = small_model.read_bytes()
    for fraction in (0.05, 0.1, 0.2, 0.3, 0.5):
        path = tmp_path / f"cut-{fraction}.ftz"
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ModelLoadError, match="truncated or corrupt"):
            Predictor.load(path)
        with pytest.raises(ModelLoadError, match="truncated or corrupt"):
            Predictor.load_fasttext(path)


def test_loading_builds_every_lazy_table_so_no_post_pays_for_first_use(small_model: Path) -> None:
    """The first batch after a start held its results back 0.4 s while normalisation built its tables."""
    modules = [sentiment_model.lexicon, sentiment_model.normalize_text]
    caches = [value for module in modules for value in vars(module).values() if hasattr(value, "cache_clear")]
    assert len(caches) >= 3
    for cache in caches:
        cache.cache_clear()
    Predictor.load(small_model)
    assert [cache.__name__ for cache in caches if cache.cache_info().currsize == 0] == []


def test_the_default_scorer_is_the_compiled_one_and_fasttext_is_not_loaded(small_model: Path) -> None:
    predictor = Predictor.load(small_model)
    assert predictor.scorer_name == "c" and predictor.scorer_reason == ""
    reference = Predictor.load_fasttext(small_model)
    assert reference.scorer_name == "fasttext"
    lines = [normalize(text) for text in TEXTS]
    assert np.allclose(
        predictor.predict_normalized(lines).probabilities,
        reference.predict_normalized(lines).probabilities,
        atol=1e-5,
    )
    assert isinstance(reference.scorer, FastTextScorer)
    ours = {word.decode() for word in read_model_file(small_model).words}
    assert ours == set(reference.scorer.model.get_words())
    assert predictor.oov_counts(lines) == reference.oov_counts(lines)


def test_a_file_the_compiled_scorer_reads_never_loads_fasttext(small_model: Path) -> None:
    """The model is read once, in-process, by the project's reader: no child process, no fastText."""
    probe = (
        "import sys; from sentiment_model import Predictor; "
        f"p = Predictor.load({str(small_model)!r}); "
        "print(p.scorer_name, 'fasttext' in sys.modules, 'huggingface_hub' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["c", "False", "False"]
