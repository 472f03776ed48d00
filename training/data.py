"""TweetEval sentiment splits, from a local cardiffnlp-layout folder or from `datasets` online."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
HF_DATASET = ("cardiffnlp/tweet_eval", "sentiment")
_HF_SPLIT = {"train": "train", "val": "validation", "test": "test"}


class DataError(Exception):
    """The data set is missing or malformed."""


@dataclass(frozen=True)
class Dataset:
    """One split: stripped texts and integer labels (0 negative, 1 neutral, 2 positive)."""

    name: Split
    texts: list[str]
    labels: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` rows (all of them when ``n`` is None): for quick runs and tests."""
        if n is None or n >= len(self):
            return self
        return Dataset(self.name, self.texts[:n], self.labels[:n])

    def fingerprint(self) -> str:
        """sha256 over texts and labels: identifies exactly what a model saw."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels.tolist(), strict=True):
            digest.update(f"{label}\t{text}\n".encode())
        return digest.hexdigest()


def default_data_dir() -> Path | None:
    """``TWEETEVAL_DIR`` when set."""
    value = os.environ.get("TWEETEVAL_DIR")
    return Path(value) if value else None


def load_split(split: Split, data_dir: Path | None) -> Dataset:
    """Load one split from ``data_dir`` (cardiffnlp layout) or, when None, from the Hugging Face Hub."""
    if data_dir is None:
        return _load_from_hub(split)
    text_path, label_path = data_dir / f"{split}_text.txt", data_dir / f"{split}_labels.txt"
    for path in (text_path, label_path):
        if not path.is_file():
            raise DataError(f"{path} is missing: --data-dir must hold the cardiffnlp sentiment layout")
    # Split on "\n" only: str.splitlines would also break on U+2028 and friends inside a tweet.
    texts = [line.strip() for line in text_path.read_text(encoding="utf-8").split("\n")]
    labels = [line.strip() for line in label_path.read_text(encoding="utf-8").split("\n")]
    if texts and texts[-1] == "" and labels and labels[-1] == "":
        texts, labels = texts[:-1], labels[:-1]
    if len(texts) != len(labels):
        raise DataError(f"{text_path} has {len(texts)} lines but {label_path} has {len(labels)}")
    try:
        label_ids = np.array([int(x) for x in labels], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{label_path} holds a non-integer label: {exc}") from exc
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 2):
        raise DataError(f"{label_path} holds labels outside 0..2")
    return Dataset(split, texts, label_ids)


def _load_from_hub(split: Split) -> Dataset:  # pragma: no cover - needs the network
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            "no --data-dir/TWEETEVAL_DIR given and the `datasets` package is missing: "
            "pip install 'online-reputation[online-data]' or point --data-dir at a local copy"
        ) from exc
    rows = datasets.load_dataset(*HF_DATASET, split=_HF_SPLIT[split])
    return Dataset(
        split,
        [str(t).strip() for t in rows["text"]],
        np.asarray(rows["label"], dtype=np.int64),
    )
