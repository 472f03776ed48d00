"""fastText training helpers: the settings fasttext-numpy2 cannot train are refused up front."""

from __future__ import annotations

import pytest

from training.data import Dataset
from training.fasttext_train import TrainingError, check_params, fit, labelled_lines, training_file


@pytest.mark.parametrize(
    "params",
    [{"wordNgrams": 1}, {"wordNgrams": 1, "maxn": 0, "minn": 0}, {"wordNgrams": 2, "bucket": 0}, {}],
)
def test_untrainable_settings_are_refused(params: dict[str, int]) -> None:
    with pytest.raises(TrainingError):
        check_params(params)


def test_trainable_settings_pass(train_subset: Dataset) -> None:
    check_params({"wordNgrams": 1, "minn": 2, "maxn": 4})
    with training_file(labelled_lines(train_subset.head(2_000))) as path:
        model = fit(path, {"wordNgrams": 2, "epoch": 2, "dim": 8}, threads=1)
    assert sorted(model.labels) == ["__label__negative", "__label__neutral", "__label__positive"]


def test_oversampling_repeats_the_minority_class(train_subset: Dataset) -> None:
    data = train_subset.head(3_000)
    plain = labelled_lines(data)
    boosted = labelled_lines(data, oversample={"negative": 2.0})
    negatives = sum(1 for line in plain if line.startswith("__label__negative "))
    assert len(boosted) == len(plain) + negatives
    assert sorted(set(boosted)) == sorted(set(plain))
