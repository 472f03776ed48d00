"""The demo's model (``get_model``, used by ``make demo`` in :mod:`worker.demo`), and
``python -m training.demo``: score a few brand mentions from the command line.

The model comes from the Hub (or its local cache) when reachable; otherwise one is trained once from the
local TweetEval copy with the no-vectors recipe and no search (quick: nothing to download) and reused.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from sentiment_model import ModelError, ModelSettings, Predictor, ResolvedModel, resolve_model
from training import train

log = logging.getLogger("demo")

DEMO_DIR = Path(os.environ.get("DEMO_MODEL_DIR", "models/demo"))
SAMPLES = [
    ("acme", "Just got my new Acme headphones and the sound is amazing! Best purchase this year"),
    ("acme", "@AcmeSupport three weeks and still no refund. Worst customer service ever."),
    ("acme", "Acme announces quarterly results on Thursday at 9am"),
    ("globex", "Globex app crashed again during checkout... so annoying"),
    ("globex", "Loving the new Globex store downtown, staff were super friendly :)"),
    ("globex", "Globex is opening a new office in Berlin next month"),
]


def get_model() -> ResolvedModel:
    """The configured model if it resolves, else the demo model (trained on first use)."""
    settings = ModelSettings()
    try:
        return resolve_model(settings)
    except ModelError as exc:
        log.warning("no model from %s (%s)", settings.model_path or settings.hf_model_repo, exc)
    local = DEMO_DIR / train.MODEL_FILE
    if not local.is_file():
        data_dir = os.environ.get("TWEETEVAL_DIR")
        if not data_dir:
            raise SystemExit("demo: no model reachable and TWEETEVAL_DIR is not set: cannot train one")
        log.warning("training a demo model from %s into %s (about a minute)", data_dir, DEMO_DIR)
        code = train.main(
            [
                "--data-dir",
                data_dir,
                "--output-dir",
                str(DEMO_DIR),
                "--autotune-duration",
                "0",
                # offline and quick: the demo model does not fetch the 118 MB of GloVe vectors
                "--pretrained-vectors",
                "none",
                # one run, not a soup of four: the demo model is for showing the stream, not for quality
                "--soup-members",
                "1",
                "--mlflow-dir",
                str(DEMO_DIR / "mlruns"),
            ]
        )
        if code not in (0,):
            raise SystemExit(f"demo: training failed (exit {code})")
    return resolve_model(ModelSettings(model_path=local))


def main() -> int:
    """Print a small table of scored posts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    resolved = get_model()
    predictor = Predictor.load(resolved.path)
    batch = predictor.predict([text for _, text in SAMPLES])
    print(f"\nmodel: {resolved.describe()}\n")
    print(f"{'brand':<8} {'label':<9} {'score':>5}  text")
    for (brand, text), label, score in zip(SAMPLES, batch.labels, batch.scores, strict=True):
        print(f"{brand:<8} {label:<9} {score:5.2f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
