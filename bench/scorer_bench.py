"""The compiled scorer and fastText's predict: same lines, same process, interleaved.

``python -m bench.scorer_bench [--model-path FILE] [--split val] [--batch 2000] [--rounds 20]``

Without ``--model-path`` it trains a model shaped like the published recipe from the first 6,000 TweetEval
train rows (ova, words + bigrams, 1M buckets, projected to dim 3, quantized with cutoff 20,000, dsub 1).
Scores the first ``--batch`` normalised texts of ``--split`` through ``Predictor.predict_normalized``
of ``Predictor.load`` (the compiled kernel) and of ``Predictor.load_fasttext`` (fastText's predict), in
turn, ``--rounds`` times each, and prints µs/record by wall
clock and by process CPU time (less disturbed by other processes on a shared machine), best and median,
with the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sentiment_model import Predictor, normalize
from training.data import load_split


def _recipe_like_model(data_dir: Path, folder: Path) -> Path:
    from training.fasttext_train import fit, labelled_lines, project_onto_labels, quantize, training_file

    rows = load_split("train", data_dir).head(6_000)
    params = {"epoch": 8, "lr": 0.5, "dim": 20, "wordNgrams": 2, "bucket": 1_000_000, "minn": 0, "maxn": 0}
    with training_file(labelled_lines(rows)) as train_file:
        model = fit(train_file, {**params, "loss": "ova", "minCount": 1}, threads=1)
        projected = project_onto_labels(model, folder / "projected.bin")
        quantize(projected, train_file, {"cutoff": 20_000, "retrain": False, "qnorm": False, "dsub": 1}, 1)
    path = folder / "sentiment_ft.ftz"
    projected.save_model(str(path))
    return path


def _measure(run: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None, help="TweetEval (default: TWEETEVAL_DIR)")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    default = Path(__file__).resolve().parents[2] / "shared/data/tweeteval-sentiment"
    data_dir = args.data_dir or Path(os.environ.get("TWEETEVAL_DIR") or default)
    texts = load_split(args.split, data_dir).texts[: args.batch]
    lines = [normalize(text) for text in texts]
    with tempfile.TemporaryDirectory() as scratch:
        path = args.model_path or _recipe_like_model(data_dir, Path(scratch))
        predictor = Predictor.load(path)
        reference = Predictor.load_fasttext(path)
    if predictor.scorer_name != "c":
        raise SystemExit(f"the compiled scorer declined {path}: {predictor.scorer_reason}")
    runs: dict[str, Callable[[], object]] = {
        "c": lambda: predictor.predict_normalized(lines),
        "fastText": lambda: reference.predict_normalized(lines),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(_measure(run))
    per_record = 1e6 / len(lines)
    for name, samples in times.items():
        wall = [w * per_record for w, _ in samples]
        cpu = [c * per_record for _, c in samples]
        print(
            f"{name:8s} wall best {min(wall):6.2f} median {statistics.median(wall):6.2f} | "
            f"cpu best {min(cpu):6.2f} median {statistics.median(cpu):6.2f}  µs/record ({len(lines)} lines)"
        )
    fasttext = min(c for _, c in times["fastText"])
    for name in runs:
        if name != "fastText":
            print(f"{name} / fastText (best cpu): {min(c for _, c in times[name]) / fasttext:.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cpus)")


if __name__ == "__main__":
    main()
