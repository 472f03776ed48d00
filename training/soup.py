"""Model soups: one candidate trained several times, weights averaged into one model of the same size.

One fastText run's val macro-recall moves by about +-0.004 with the seed (2,000 val rows): as much as
the gaps between the search's best candidates, so the single best run of a long search is mostly a lucky
seed (docs/results.md, "Model quality"). The search therefore re-trains its shortlist as soups and
chooses among those. Averaging weights is only meaningful between runs that start from the same point,
so the members share everything but the order of the training lines: the oversampling draw (hence the
vocabulary), fastText's seed and thread count (hence the random initialisation) and the pretrained vectors.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from training.data import Dataset
from training.fasttext_train import TrainingError, fit, labelled_lines, training_file


def train_soup(
    train: Dataset,
    params: Mapping[str, Any],
    oversample: Mapping[str, float],
    members: int,
    threads: int,
    seed: int,
) -> Any:
    """Train ``members`` times on differently ordered lines; return the weight average as one model.

    Member 0 sees the lines in the order the search's single run for this seed saw them.
    """
    lines = labelled_lines(train, oversample, seed=seed)
    soup = _Accumulator()
    for member in range(members):
        order = list(lines)
        if member:
            random.Random(seed * 1_000 + member).shuffle(order)
        with training_file(order) as train_file:
            soup.add(fit(train_file, params, threads=threads, seed=seed))
    return soup.average()


class _Accumulator:
    """Running sums of the members' matrices, aligned on the first member's word and label order.

    fastText orders its vocabulary by count and breaks ties by first appearance, so each member's word
    rows must be matched by word; n-gram bucket rows are addressed by hash and already line up.
    """

    def __init__(self) -> None:
        self.host: Any = None
        self.count = 0

    def add(self, model: Any) -> None:
        """Add one member (its matrices are copied; the model itself can then be dropped)."""
        if self.host is None:
            self.host, self.words, self.labels = model, model.get_words(), model.get_labels()
            self.inputs = model.get_input_matrix().astype(np.float32)
            self.outputs = model.get_output_matrix().astype(np.float32)
            self.count = 1
            return
        rows = np.fromiter((model.get_word_id(w) for w in self.words), dtype=np.int64, count=len(self.words))
        same_words = len(model.get_words()) == len(self.words) and rows.min(initial=0) >= 0
        if not same_words or sorted(model.get_labels()) != sorted(self.labels):
            raise TrainingError("soup members have different vocabularies: they cannot be averaged")
        matrix = model.get_input_matrix()
        self.inputs[: len(rows)] += matrix[rows]
        self.inputs[len(rows) :] += matrix[len(rows) :]
        self.outputs += model.get_output_matrix()[[model.get_labels().index(label) for label in self.labels]]
        self.count += 1

    def average(self) -> Any:
        """The first member, its weights replaced by the members' mean."""
        if self.count > 1:
            self.host.set_matrices(self.inputs / self.count, self.outputs / self.count)
        return self.host
