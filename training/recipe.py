"""The default recipe: the known-good starting candidate and how the final model is quantized.

Measured on TweetEval (see README, "Model quality"): these settings are the search's first candidate,
so even a short budget starts from a model that reaches the quality bar.
"""

from typing import Any, Final

from training.search import Candidate

#: Published model size limit (the .ftz file).
MAX_MODEL_BYTES: Final = 5_000_000

DEFAULT_CANDIDATE: Final = Candidate(
    params={
        "epoch": 11,
        "lr": 0.33,
        "dim": 50,
        "wordNgrams": 3,
        "minn": 3,
        "maxn": 5,
        "bucket": 500_000,
        "loss": "ova",
    },
    oversample={"negative": 2.46, "positive": 1.0},
    origin="default recipe",
)

#: fastText quantize arguments: keep the `cutoff` most useful words/n-grams, retrain after pruning.
DEFAULT_QUANTIZE: Final[dict[str, Any]] = {"cutoff": 100_000, "retrain": True, "qnorm": True, "dsub": 2}
