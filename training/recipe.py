"""The default recipe: the known-good starting candidate and how the final model is quantized.

Measured on TweetEval (see README, "Model quality"): these settings are the search's first candidate,
so even a short budget starts from a model that reaches the quality bar.
"""

from typing import Any, Final

from training.search import Candidate

#: Published model size limit (the .ftz file).
MAX_MODEL_BYTES: Final = 5_000_000

DEFAULT_CANDIDATE: Final = Candidate(
    # Best of a 420 s random search by val macro-recall (93 trials); see README "Model quality".
    params={
        "epoch": 16,
        "lr": 0.0735,
        "dim": 32,
        "wordNgrams": 2,
        "minn": 2,
        "maxn": 4,
        "bucket": 200_000,
        "loss": "softmax",
    },
    oversample={"negative": 2.67, "positive": 1.0},
    origin="default recipe",
)

#: fastText quantize arguments: keep the `cutoff` most useful words/n-grams, retrain after pruning.
DEFAULT_QUANTIZE: Final[dict[str, Any]] = {"cutoff": 100_000, "retrain": True, "qnorm": True, "dsub": 4}
