"""The work the search hands to a child process (:mod:`training.deadline`): a fit or a soup, scored on
val, or fastText's autotune. Each returns only what is small; a model the parent may publish goes to a
file, projected onto the labels (:func:`training.fasttext_train.project_onto_labels`: the same scores in
3 numbers per row instead of 100, so the file is a fraction of the size)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import Dataset
from training.fasttext_train import (
    TrainingError,
    autotune,
    labelled_lines,
    predict_ids,
    project_onto_labels,
    training_file,
)
from training.metrics import IntArray, macro_recall
from training.soup import train_soup


@dataclass(frozen=True)
class Scored:
    """A trained candidate's val predictions and macro-recall; ``saved``: its model is in the file."""

    val_predictions: IntArray
    val_macro_recall: float
    saved: bool


def train_and_score(
    train: Dataset,
    val: Dataset,
    params: Mapping[str, Any],
    oversample: Mapping[str, float],
    members: int,
    threads: int,
    seed: int,
    out: Path,
    save_above: float,
) -> Scored:
    """Train ``members`` runs (one: a single run; more: a soup), score on val, and save the projected
    model to ``out`` when its val macro-recall is above ``save_above`` (``-inf``: always)."""
    model = train_soup(train, params, oversample, members, threads, seed)
    try:
        predictions = predict_ids(model, val)
    except (RuntimeError, ValueError) as exc:  # seen: weights that went NaN without fastText noticing
        raise TrainingError(f"the trained model cannot score val ({exc})") from exc
    score = macro_recall(val.labels, predictions)
    saved = score > save_above
    if saved:
        project_onto_labels(model, out)
    return Scored(predictions, score, saved)


def autotune_params(train: Dataset, val: Dataset, seconds: int, threads: int) -> dict[str, Any]:
    """fastText's autotune pick (F1 on val) after ``seconds`` of search."""
    with training_file(labelled_lines(train)) as train_file, training_file(labelled_lines(val)) as val_file:
        return autotune(train_file, val_file, seconds, threads)
