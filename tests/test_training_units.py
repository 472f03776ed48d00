"""fastText training helpers: the settings fasttext-numpy2 cannot train are refused up front."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Any

import fasttext
import numpy as np
import pytest

from sentiment_model import Predictor
from sentiment_model.fasttext_scorer import FastTextScorer
from training import fasttext_train
from training import train as train_cli
from training.data import Dataset
from training.fasttext_train import (
    TrainingError,
    check_params,
    fit,
    labelled_lines,
    project_onto_labels,
    training_file,
)
from training.recipe import DEFAULT_QUANTIZE
from training.search import Candidate
from training.train import quantize_within


@pytest.mark.parametrize("params", [{"wordNgrams": 2, "bucket": 0}, {"minn": 2, "maxn": 3, "bucket": -1}])
def test_untrainable_settings_are_refused(params: dict[str, int]) -> None:
    with pytest.raises(TrainingError, match="bucket"):
        check_params(params)


def test_trainable_settings_pass(train_subset: Dataset) -> None:
    check_params({"wordNgrams": 1, "minn": 2, "maxn": 4})
    check_params({})
    with training_file(labelled_lines(train_subset.head(2_000))) as path:
        model = fit(path, {"wordNgrams": 2, "epoch": 2, "dim": 8}, threads=1)
    assert sorted(model.labels) == ["__label__negative", "__label__neutral", "__label__positive"]


def leave_garbage_in_the_heap(chunks: int = 64, size: int = 64 * 1024) -> None:
    """Free a few MB of heap memory full of 0xFF bytes (NaN floats) for the next allocations to reuse.

    The chunks are below glibc's mmap threshold and a fence keeps them off the top of the heap, so on
    free they merge into one large free chunk instead of going back to the kernel.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(size) for _ in range(chunks)]
    fence = libc.malloc(64)
    for block in blocks:
        ctypes.memset(block, 0xFF, size)
    for block in blocks:
        libc.free(block)
    del fence  # kept allocated on purpose: it holds the freed chunks below the top of the heap


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(
            {"epoch": 3, "dim": 8, "wordNgrams": 2, "minn": 2, "maxn": 3, "bucket": 50_000}, id="char-ngrams"
        ),
        pytest.param({"epoch": 3, "wordNgrams": 1}, id="words-only"),
    ],
)
def test_fits_start_from_zeroed_memory_whatever_the_process_freed_before(
    train_subset: Dataset, params: dict[str, int]
) -> None:
    """fasttext-numpy2 trains from uninitialised memory (see ``zero_filled_allocations``): both fits
    diverged with "Encountered NaN" after the heap held NaN bytes, before that was handled."""
    with training_file(labelled_lines(train_subset.head(2_000))) as path:
        leave_garbage_in_the_heap()
        first = fit(path, params, threads=1, attempts=1)
        leave_garbage_in_the_heap()
        second = fit(path, params, threads=1, attempts=1)
    assert np.isfinite(first.get_input_matrix()).all()
    np.testing.assert_array_equal(first.get_input_matrix(), second.get_input_matrix())
    np.testing.assert_array_equal(first.get_output_matrix(), second.get_output_matrix())


def test_a_diverged_fit_is_retried_single_threaded_with_a_lower_rate(
    train_subset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fastText's NaN is not reproducible on demand: the first call fails as it does, then the real
    fastText trains with the retry's settings."""
    calls: list[dict[str, Any]] = []
    real_train = fasttext.train_supervised

    def diverge_once(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("Encountered NaN.")
        return real_train(**kwargs)

    monkeypatch.setattr(fasttext_train.fasttext, "train_supervised", diverge_once)
    with training_file(labelled_lines(train_subset.head(2_000))) as path:
        model = fit(path, {"wordNgrams": 2, "epoch": 2, "dim": 8, "lr": 0.5}, threads=2, seed=7)
    assert len(model.labels) == 3
    first, retry = calls
    assert (first["thread"], first["seed"], first["lr"]) == (2, 7, 0.5)
    assert retry["thread"] == 1 and retry["seed"] == 8 and retry["lr"] < 0.5


def test_other_fasttext_errors_and_repeated_divergence_become_training_errors(
    train_subset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = iter([RuntimeError("bad input file"), *[RuntimeError("Encountered NaN.")] * 3])

    def fail(**kwargs: Any) -> Any:
        raise next(errors)

    monkeypatch.setattr(fasttext_train.fasttext, "train_supervised", fail)
    with training_file(labelled_lines(train_subset.head(100))) as path:
        with pytest.raises(TrainingError, match="bad input file"):
            fit(path, {"wordNgrams": 2}, threads=2)
        with pytest.raises(TrainingError, match="NaN"):
            fit(path, {"wordNgrams": 2}, threads=2, attempts=3)
    assert next(errors, None) is None, "a non-NaN error is not retried; a NaN is retried up to attempts"


def test_oversampling_repeats_the_minority_class(train_subset: Dataset) -> None:
    data = train_subset.head(3_000)
    plain = labelled_lines(data)
    boosted = labelled_lines(data, oversample={"negative": 2.0})
    negatives = sum(1 for line in plain if line.startswith("__label__negative "))
    assert len(boosted) == len(plain) + negatives
    assert sorted(set(boosted)) == sorted(set(plain))


def test_a_model_too_big_for_the_limit_is_requantized_from_full_precision(
    train_subset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fastText crashes when asked to quantize a quantized model: the retry must start afresh."""
    data = train_subset.head(3_000)
    candidate = Candidate({"wordNgrams": 2, "epoch": 3, "dim": 16, "bucket": 200_000, "lr": 0.1})
    with training_file(labelled_lines(data)) as path:
        model = fit(path, candidate.params, threads=1)
    out = tmp_path / "model.ftz"
    first = quantize_within(model, data, candidate, out, threads=1)
    assert first["cutoff"] == DEFAULT_QUANTIZE["cutoff"]
    monkeypatch.setattr(train_cli, "MAX_MODEL_BYTES", first["size_bytes"] // 2)
    with training_file(labelled_lines(data)) as path:
        model = fit(path, candidate.params, threads=1)
    smaller = quantize_within(model, data, candidate, out, threads=1)
    assert smaller["cutoff"] < first["cutoff"]
    assert smaller["size_bytes"] == out.stat().st_size <= first["size_bytes"] // 2
    assert len(Predictor.load(out).predict(["what a great day", "awful service"]).label_ids) == 2


def test_repeated_single_threaded_fits_in_one_process_are_identical(train_subset: Dataset) -> None:
    """Without fresh pages for large buffers, the same fit in this process drifted or diverged after a
    few runs (fasttext-numpy2 reads recycled heap memory); with them every run is the same model."""
    params = {"wordNgrams": 2, "epoch": 5, "dim": 16, "lr": 0.1, "bucket": 200_000}
    with training_file(labelled_lines(train_subset, {"negative": 1.5}, seed=3)) as path:
        outputs = [fit(path, params, threads=1, seed=3, attempts=1).get_output_matrix() for _ in range(10)]
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


@pytest.mark.parametrize("loss", ["softmax", "ova"])
def test_projecting_onto_the_labels_keeps_every_score(
    train_subset: Dataset, tmp_path: Path, loss: str
) -> None:
    params = {"wordNgrams": 2, "epoch": 5, "dim": 16, "lr": 0.1, "bucket": 200_000, "loss": loss}
    with training_file(labelled_lines(train_subset.head(3_000))) as path:
        model = fit(path, params, threads=1)
    texts = train_subset.texts[3_000:3_500]
    before = Predictor(FastTextScorer(model), Path("<full>")).predict(texts)
    projected = project_onto_labels(model, tmp_path / "projected.bin")
    assert projected.get_dimension() == 3 and projected.get_words() == model.get_words()
    after = Predictor(FastTextScorer(projected), Path("<projected>")).predict(texts)
    np.testing.assert_allclose(after.probabilities, before.probabilities, atol=1e-4)
    assert (after.label_ids == before.label_ids).all()
