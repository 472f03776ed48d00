"""Writing fastText training files and fitting models: the only place training touches fastText."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import random
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fasttext
import numpy as np

from schemas import LABELS
from sentiment_model import Predictor, normalize_batch
from sentiment_model.fasttext_scorer import FastTextScorer
from sentiment_model.predictor import LABEL_PREFIX
from training.data import Dataset
from training.metrics import macro_recall

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """fastText could not train with these settings (e.g. it diverged: "Encountered NaN")."""


def labelled_lines(data: Dataset, oversample: Mapping[str, float] | None = None, seed: int = 0) -> list[str]:
    """``__label__x normalised text`` lines, shuffled, with optional per-class oversampling.

    ``oversample={"negative": 1.5}`` repeats every negative line once and a random half of them twice:
    how we counter class imbalance (TweetEval's train split has 16% negatives, its test split 32%).
    """
    rng = random.Random(seed)
    lines: list[str] = []
    for text, label_id in zip(normalize_batch(data.texts), data.labels.tolist(), strict=True):
        label = LABELS[label_id]
        line = f"{LABEL_PREFIX}{label} {text}"
        factor = (oversample or {}).get(label, 1.0)
        copies = int(factor) + (1 if rng.random() < factor - int(factor) else 0)
        lines.extend([line] * copies)
    rng.shuffle(lines)
    return lines


@contextlib.contextmanager
def training_file(lines: list[str]) -> Iterator[Path]:
    """A temporary fastText input file holding ``lines``."""
    handle, name = tempfile.mkstemp(prefix="fasttext-", suffix=".txt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("\n".join(lines))
            out.write("\n")
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def vectors_dim(vectors: Path) -> int:
    """The dimension a ``.vec`` file declares on its first line (``<words> <dim>``); fastText needs
    ``dim`` to match it."""
    try:
        with vectors.open(encoding="utf-8") as f:
            header = f.readline().split()
    except OSError as exc:
        raise TrainingError(f"cannot read pretrained vectors {vectors}: {exc}") from exc
    if len(header) != 2 or not all(part.isdigit() for part in header):
        raise TrainingError(f"{vectors} is not a fastText .vec file (first line must be '<words> <dim>')")
    return int(header[1])


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse settings fasttext-numpy2 cannot train, with a clear error instead of a crash.

    An explicit ``bucket=0`` with word or char n-grams kills the process (SIGFPE).
    """
    if int(params.get("bucket", 2_000_000)) <= 0:
        raise TrainingError("bucket must be > 0 when word or char n-grams are used (fastText crashes on 0)")


#: glibc's mallopt() parameter number for the perturb byte (malloc.h).
_M_PERTURB = -6
#: With this perturb byte glibc fills every allocation with ``0xFF ^ 0xFF`` = zero bytes (and freed
#: memory with 0xFF).
_ZERO_ON_ALLOCATE = 0xFF


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


@contextlib.contextmanager
def zero_filled_allocations() -> Iterator[bool]:
    """Within the block, glibc hands out zero-filled memory, as fastText's training assumes.

    fasttext-numpy2 0.10.4 stores matrices in an ``AlignedVector`` (``posix_memalign``, never
    initialised) where upstream fastText uses a zero-filled ``std::vector``, and fastText's
    ``DenseMatrix::uniform`` writes only ``thread/10`` of the input matrix (one tenth per thread):
    upstream the other rows start at zero, here at whatever an earlier allocation left in that memory,
    so the same file, seed and settings diverged ("Encountered NaN") or trained depending on what the
    process had freed before. With glibc's perturb byte set for the fit, they train from upstream's
    starting point every time (tests/test_training_units.py). Yields False where there is no glibc
    (nothing to do there). The setting is process-wide while the block runs; other threads' allocations
    are zero-filled too, which is only slower.
    """
    try:
        libc = _libc()
        active = bool(libc.mallopt(_M_PERTURB, _ZERO_ON_ALLOCATE))
    except (OSError, AttributeError):
        active = False
    try:
        yield active
    finally:
        if active:
            libc.mallopt(_M_PERTURB, 0)


def fit(train_file: Path, params: Mapping[str, Any], threads: int, seed: int = 0, attempts: int = 3) -> Any:
    """Train a supervised fastText model.

    fastText now and then aborts with "Encountered NaN" on settings that usually train fine. Much of
    that was recycled heap memory (:func:`zero_filled_allocations`, now around every fit); the rest is
    Hogwild: fastText's threads update shared rows without locks, so on a small vocabulary the outcome
    depends on thread timing. Each retry therefore trains single-threaded, with another seed and a lower
    learning rate; when all ``attempts`` diverge the last error becomes :class:`TrainingError`.
    """
    settings = dict(params)
    check_params(settings)
    for attempt in range(1, attempts + 1):
        try:
            with zero_filled_allocations():
                return fasttext.train_supervised(
                    input=str(train_file),
                    thread=threads if attempt == 1 else 1,
                    seed=seed + attempt - 1,
                    verbose=0,
                    **settings,
                )
        except (RuntimeError, ValueError) as exc:
            if attempt == attempts or "NaN" not in str(exc):
                raise TrainingError(f"fastText failed with {dict(params)}: {exc}") from exc
            log.warning("fastText diverged (%s) with %s; retrying with a lower learning rate", exc, settings)
            settings["lr"] = float(settings.get("lr", 0.1)) * 0.7
    raise AssertionError("unreachable")  # pragma: no cover


#: Rows projected per block in :func:`project_onto_labels`.
_PROJECTION_ROWS = 100_000


def project_onto_labels(model: Any, path: Path) -> Any:
    """The same classifier with ``dim`` = the number of labels, saved to ``path`` and loaded back.

    fastText scores a text as ``output @ mean(input rows)``, and the output matrix has one row per
    label (3), so only each input row's component in the span of those rows reaches a score. Rotating
    every input row into an orthonormal basis of that span (and the output rows likewise) gives exactly
    the same scores with 3 numbers per row instead of 100 (predict gets a little faster too; tokenising
    and hashing, not the dot products, dominate). It also makes quantization keep the right
    rows: fastText keeps the rows with the largest norms, and a projected row's norm is its influence on
    the scores (a 100-d GloVe row's norm is mostly in directions no label reads).
    """
    inputs = model.get_input_matrix()
    outputs = model.get_output_matrix().astype(np.float64)
    basis = np.linalg.svd(outputs, full_matrices=False)[2]  # orthonormal rows spanning the output rows
    projected = np.empty((len(inputs), len(basis)), dtype=np.float32)
    # In float64 but a block at a time: the whole matrix in float64 would be a large temporary.
    for start in range(0, len(inputs), _PROJECTION_ROWS):
        block = inputs[start : start + _PROJECTION_ROWS].astype(np.float64)
        projected[start : start + _PROJECTION_ROWS] = block @ basis.T
    model.set_matrices(projected, (outputs @ basis.T).astype(np.float32))
    model.save_model(str(path))  # the saved header takes the new dim from the matrices
    return load(path)


def autotune(train_file: Path, val_file: Path, seconds: int, threads: int) -> dict[str, Any]:
    """fastText's autotune (its metric: F1 on ``val_file``) for ``seconds``; the settings it picked.

    Its final re-training with those settings has no time limit (it can run far past the budget), so
    callers run this under :func:`training.deadline.run_with_deadline`.
    """
    try:
        with zero_filled_allocations():
            model = fasttext.train_supervised(
                input=str(train_file),
                autotuneValidationFile=str(val_file),
                autotuneDuration=seconds,
                thread=threads,
                verbose=0,
            )
    except (RuntimeError, ValueError) as exc:  # seen: "Encountered NaN" in its final training
        raise TrainingError(f"fastText autotune failed: {exc}") from exc
    args = model.f.getArgs()
    names = ("epoch", "lr", "dim", "wordNgrams", "minn", "maxn", "bucket", "loss")
    params = {name: getattr(args, name) for name in names}
    params["loss"] = str(params["loss"]).rsplit(".", 1)[-1]
    return params


def load(path: Path) -> Any:
    """A fastText model from a ``.bin`` or ``.ftz`` file written by training."""
    return fasttext.load_model(str(path))


def quantize(model: Any, train_file: Path, params: Mapping[str, Any], threads: int) -> None:
    """Quantize in place (-> .ftz); ``params`` are fastText's quantize arguments."""
    try:
        with zero_filled_allocations():  # quantizing allocates fastText matrices too
            model.quantize(input=str(train_file), thread=threads, verbose=0, **dict(params))
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"fastText quantize failed with {dict(params)}: {exc}") from exc


def predict_ids(model: Any, data: Dataset) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Predicted label ids, scored exactly as the worker and API score (the shared Predictor)."""
    batch = Predictor(FastTextScorer(model), Path("<in-memory>")).predict(data.texts)
    return batch.label_ids.astype(np.int64)


def val_macro_recall(model: Any, val: Dataset) -> float:
    """The selection metric."""
    return macro_recall(val.labels, predict_ids(model, val))
