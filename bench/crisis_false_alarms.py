"""False alarms of the per-brand crisis detector on calm streams of real tweets scored by a real model.

``python -m bench.crisis_false_alarms [--model-path FILE] [--posts-per-window 60,240] [--windows 400]``

The posts are TweetEval *train* tweets (never test), scored by the model; each window gives every brand
a Poisson number of posts. Two calm streams:

- ``shuffled``: every brand draws from all tweets (the model's own label mix), brands assigned at random;
- ``wandering``: each brand has its own negative share, which wanders (a bounded random walk of
  +-1 point a window between 10 % and 50 %), as a real brand's mood does without any crisis.

Each brand's windows are judged by the stage's detector (:func:`reputation.detector.judge`, the stage's
default settings) and counted once the brand is warm, per brand-window: ``single`` = the detector's
alert (z over the threshold in a window with enough posts: a pending BrandSentimentDrop), ``fires`` =
two windows in a row (what the rule's ``for`` fires on); the same for BrandNegativeSpike, with its
thresholds (worker/demo/board.py, checked against alerts.yml by tests/test_crisis.py).

Without ``--model-path`` the small test-suite model is trained from the first 6,000 train rows (the
stream then uses the rows after them); for a model trained on all of train, stream ``--split val``
(2,000 tweets, drawn with replacement).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

from reputation.detector import Baseline, DetectorOptions, judge
from sentiment_model import Predictor, normalize
from training.data import load_split
from worker.demo import board

BRANDS = ("acme", "globex", "initech", "umbrella")


def scored_pool(predictor: Predictor, texts: list[str]) -> dict[str, int]:
    """Each text's label id by the model (only the label matters to the detector)."""
    lines = [normalize(t) for t in texts]
    return dict(zip(lines, predictor.predict_normalized(lines).label_ids.tolist(), strict=True))


def run(
    labels_by_line: dict[str, int], mode: str, per_window: int, windows: int, seed: int
) -> dict[str, float]:
    rng = random.Random(seed)
    everything = list(labels_by_line)
    share = {brand: rng.uniform(0.15, 0.45) for brand in (*BRANDS, "other")}
    baselines = {brand: Baseline() for brand in (*BRANDS, "other")}
    options = DetectorOptions()
    counted = Counter[str]()
    previous: dict[str, tuple[bool, bool]] = {}
    for _ in range(windows):
        for brand in (*BRANDS, "other"):
            n = _poisson(rng, per_window)
            if mode == "shuffled":
                negatives = sum(labels_by_line[rng.choice(everything)] == 0 for _ in range(n))
            else:
                share[brand] = min(0.5, max(0.1, share[brand] + rng.uniform(-0.01, 0.01)))
                negatives = sum(rng.random() < share[brand] for _ in range(n))
            j = judge(baselines[brand], negatives, n, options)
            if not j.warm:
                continue
            spike = j.volume_ratio > board.SPIKE_RATIO and j.negatives >= board.SPIKE_MIN_NEGATIVES
            was_drop, was_spike = previous.get(brand, (False, False))
            counted["brand_windows"] += 1
            counted["drop_single"] += j.alert
            counted["drop_fires"] += j.alert and was_drop
            counted["spike_single"] += spike
            counted["spike_fires"] += spike and was_spike
            previous[brand] = (j.alert, spike)
    n = counted["brand_windows"]
    return {"brand_windows": n, **{k: v / n for k, v in counted.items() if k != "brand_windows"}}


def _poisson(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, mean**0.5)))


result_keys = ("brand_windows", "drop_single", "drop_fires", "spike_single", "spike_fires")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--posts-per-window", default="60,240", help="mean posts per brand and window")
    parser.add_argument("--windows", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--split",
        choices=("train", "val"),
        default="train",
        help="calm posts: train rows after the first 6,000 (default; for the small model trained on those "
        "6,000), or val (for a model trained on all of train)",
    )
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("TWEETEVAL_DIR", "../shared/data/tweeteval-sentiment"))
    train = load_split("train", data_dir)
    if args.model_path is None:
        from tests.conftest import train_small_model

        folder = Path(tempfile.mkdtemp(prefix="crisis-bench-"))
        args.model_path = train_small_model(train.head(6_000), folder)
    predictor = Predictor.load(args.model_path)
    texts = train.texts[6_000:] if args.split == "train" else load_split("val", data_dir).texts
    pool = scored_pool(predictor, texts)
    print(
        f"model {args.model_path}; {len(pool)} distinct calm posts; thresholds: z >= {board.DROP_ZSCORE} "
        f"(>= {board.DROP_MIN_POSTS} posts), ratio > {board.SPIKE_RATIO} (>= {board.SPIKE_MIN_NEGATIVES})"
    )
    print(
        f"{'stream':<10} {'posts/window':>12} {'brand-windows':>13} {'drop 1 window':>14} "
        f"{'drop fires':>11} {'spike 1 window':>15} {'spike fires':>12}"
    )
    for mode in ("shuffled", "wandering"):
        for per_window in (int(x) for x in args.posts_per_window.split(",")):
            total: dict[str, float] = dict.fromkeys(result_keys, 0.0)
            for seed in range(args.seeds):
                result = run(pool, mode, per_window, args.windows, seed)
                for key, value in result.items():
                    total[key] += value * (result["brand_windows"] if key != "brand_windows" else 1)
            n = total["brand_windows"]
            rates = [total[k] / n for k in result_keys[1:]]
            print(
                f"{mode:<10} {per_window:>12} {n:>13.0f} {rates[0]:>14.3%} {rates[1]:>11.3%} "
                f"{rates[2]:>15.3%} {rates[3]:>12.3%}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
