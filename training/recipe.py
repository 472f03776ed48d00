"""The default recipes: the known-good starting candidates and how the final model is quantized.

Measured on TweetEval (docs/results.md, "Model quality"): these settings are the search's first candidate,
so even a short budget starts from a good model. With pretrained vectors (the default) the model reads
whole words only: a word's GloVe vector would otherwise be averaged with a dozen randomly initialised
character n-gram rows, and without n-grams scoring is cheaper too.
"""

from pathlib import Path
from typing import Any, Final

from training.fasttext_train import vectors_dim
from training.search import Candidate

#: Published model size limit (the .ftz file).
MAX_MODEL_BYTES: Final = 5_000_000

#: Best by val macro-recall of a 40-trial random search of word-only models on GloVe vectors (seed 0).
VECTORS_CANDIDATE: Final = Candidate(
    params={
        "epoch": 8,
        "lr": 0.0444,
        "dim": 100,
        "wordNgrams": 2,
        "minn": 0,
        "maxn": 0,
        "bucket": 1_000_000,
        "loss": "ova",
    },
    oversample={"negative": 3.12, "positive": 1.23},
    origin="default recipe",
)

#: Without pretrained vectors (``--pretrained-vectors none``): char n-grams stand in for unseen words.
#: Best of a random search by val macro-recall with lexicon tokens on.
NO_VECTORS_CANDIDATE: Final = Candidate(
    params={
        "epoch": 16,
        "lr": 0.0711,
        "dim": 16,
        "wordNgrams": 3,
        "minn": 2,
        "maxn": 4,
        "bucket": 1_000_000,
        "loss": "ova",
    },
    oversample={"negative": 2.86, "positive": 1.0},
    origin="default recipe",
)

#: fastText quantize arguments, applied after the model is projected onto its labels (dim 3, exact:
#: training.fasttext_train.project_onto_labels). fastText keeps the `cutoff` rows with the largest norms
#: and, with dsub=1, codes each of the 3 numbers of a row in one byte. Without projection (100 dims,
#: dsub 2) too few rows fit 5 MB and the norm ranking favoured GloVe rows over trained ones, which cost a
#: soup (its trained rows are shorter). Projected, 300,000 rows fit and the ranking is by influence on the
#: scores. No retraining and no norm quantization: both lost quality (docs/results.md).
DEFAULT_QUANTIZE: Final[dict[str, Any]] = {"cutoff": 300_000, "retrain": False, "qnorm": False, "dsub": 1}


def default_candidate(vectors: Path | None) -> Candidate:
    """The recipe for training with ``vectors`` (a fastText ``.vec`` file) or without any."""
    if vectors is None:
        return NO_VECTORS_CANDIDATE
    params = {**VECTORS_CANDIDATE.params, "dim": vectors_dim(vectors), "pretrainedVectors": str(vectors)}
    return Candidate(params, VECTORS_CANDIDATE.oversample, VECTORS_CANDIDATE.origin)
