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
    """Reject settings that fasttext-numpy2 0.10 cannot train, before it aborts or crashes.

    Measured here: with ``wordNgrams=1`` and no char n-grams fastText sets ``bucket=0`` and training
    always ends in "Encountered NaN"; an explicit ``bucket=0`` with n-grams kills the process (SIGFPE).
    """
    word_ngrams, maxn = int(params.get("wordNgrams", 1)), int(params.get("maxn", 0))
    if word_ngrams <= 1 and maxn == 0:
        raise TrainingError(
            "wordNgrams=1 without char n-grams (maxn=0) always diverges in fasttext-numpy2: "
            "use wordNgrams >= 2 or minn/maxn > 0"
        )
    if int(params.get("bucket", 2_000_000)) <= 0:
        raise TrainingError("bucket must be > 0 when word or char n-grams are used (fastText crashes on 0)")


#: glibc's mallopt() parameter number for the mmap threshold (malloc.h).
_M_MMAP_THRESHOLD = -3


@functools.cache
def use_fresh_memory_for_large_buffers() -> bool:
    """Make glibc serve every allocation of 1 MiB or more from fresh, zero-filled pages.

    fasttext-numpy2 0.10 reads some buffer before writing it: in one process, the same file, seed and
    settings on one thread trained fine five times, then gave NaN or different weights, depending on
    what earlier trainings left in recycled heap memory (models whose matrices exceed glibc's 32 MB
    mmap ceiling always got fresh pages and never showed it). With this set, 30 trainings in a row were
    identical and none diverged. Returns False where there is no glibc (nothing to do there).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20))
    except (OSError, AttributeError):
        return False


def fit(train_file: Path, params: Mapping[str, Any], threads: int, seed: int = 0, attempts: int = 3) -> Any:
    """Train a supervised fastText model.

    fastText now and then aborts with "Encountered NaN" on settings that usually train fine (seen here
    even on TweetEval subsets at lr 0.5, and once three times in a row on a 2,000-row skewed subset
    under CI load that trains cleanly 80 times out of 80 otherwise). Much of that was recycled heap
    memory (:func:`use_fresh_memory_for_large_buffers`, now set before every fit); the rest is Hogwild:
    fastText's threads update shared rows without locks, so on a small vocabulary the outcome depends on
    thread timing. Each retry therefore trains single-threaded, with another seed and a lower learning
    rate; when all ``attempts`` diverge the last error becomes :class:`TrainingError`.
    """
    settings = dict(params)
    check_params(settings)
    use_fresh_memory_for_large_buffers()
    for attempt in range(1, attempts + 1):
        try:
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
    the same scores with 3 numbers per row instead of 100 (predict measured 1.2x faster: tokenising and
    hashing, not the dot products, dominate). It also makes quantization keep the right
    rows: fastText keeps the rows with the largest norms, and a projected row's norm is its influence on
    the scores (a 100-d GloVe row's norm is mostly in directions no label reads).
    """
    inputs = model.get_input_matrix()
    outputs = model.get_output_matrix().astype(np.float64)
    basis = np.linalg.svd(outputs, full_matrices=False)[2]  # orthonormal rows spanning the output rows
    projected = np.empty((len(inputs), len(basis)), dtype=np.float32)
    # In float64 but a block at a time: the whole 1.05M x 100 matrix in float64 would be 840 MB more.
    for start in range(0, len(inputs), _PROJECTION_ROWS):
        block = inputs[start : start + _PROJECTION_ROWS].astype(np.float64)
        projected[start : start + _PROJECTION_ROWS] = block @ basis.T
    model.set_matrices(projected, (outputs @ basis.T).astype(np.float32))
    model.save_model(str(path))  # the saved header takes the new dim from the matrices
    return load(path)


def autotune(train_file: Path, val_file: Path, seconds: int, threads: int) -> dict[str, Any]:
    """fastText's autotune (its metric: F1 on ``val_file``) for ``seconds``; the settings it picked.

    Its final re-training with those settings has no time limit (measured: still running 19 minutes after
    a 225 s budget), so callers run this under :func:`training.deadline.run_with_deadline`.
    """
    use_fresh_memory_for_large_buffers()
    try:
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
        model.quantize(input=str(train_file), thread=threads, verbose=0, **dict(params))
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"fastText quantize failed with {dict(params)}: {exc}") from exc


def predict_ids(model: Any, data: Dataset) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Predicted label ids, scored exactly as the worker and API score (the shared Predictor)."""
    batch = Predictor(model, Path("<in-memory>")).predict(data.texts)
    return batch.label_ids.astype(np.int64)


def val_macro_recall(model: Any, val: Dataset) -> float:
    """The selection metric."""
    return macro_recall(val.labels, predict_ids(model, val))
