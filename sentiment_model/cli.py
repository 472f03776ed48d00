"""``sentiment-predict``: score texts from the command line with the configured model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sentiment_model.errors import ModelError
from sentiment_model.predictor import Predictor
from sentiment_model.resolve import resolve_model
from sentiment_model.settings import ModelSettings


def main(argv: list[str] | None = None) -> int:
    """Score each TEXT argument (or each stdin line) and print one line per text."""
    parser = argparse.ArgumentParser(prog="sentiment-predict", description=__doc__)
    parser.add_argument("texts", nargs="*", help="texts to score; read lines from stdin when none")
    parser.add_argument(
        "--model-path", type=Path, help="local model file (default: MODEL_PATH, then the Hub)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--show-model", action="store_true", help="print the resolved model as JSON and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = ModelSettings()
    if args.model_path is not None:
        settings = settings.model_copy(update={"model_path": args.model_path})
    try:
        resolved = resolve_model(settings)
        if args.show_model:
            print(
                json.dumps(
                    {**resolved.ref.model_dump(), "file": resolved.filename, "path": str(resolved.path)}
                )
            )
            return 0
        predictor = Predictor.load(resolved.path)
    except ModelError as exc:
        print(f"sentiment-predict: {exc}", file=sys.stderr)
        return 2
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    batch = predictor.predict(texts)
    for text, label, score, scores in zip(
        texts, batch.labels, batch.scores, batch.score_dicts(), strict=True
    ):
        if args.json:
            print(json.dumps({"text": text, "label": label, "score": score, "scores": scores}))
        else:
            print(f"{label:>8}  {score:.2f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
