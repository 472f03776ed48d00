"""``normalize_batch`` against the frozen per-text code it replaced: same texts, same run, alternating.

``python -m bench.normalize_bench [--split val] [--texts 2000] [--repeats 7] [--data-dir DIR]``

Reports the median wall-clock and CPU time per text of each over the repetitions, and their ratio. The
per-text code is the oracle kept in ``tests/test_normalize.py`` (the one the published models saw).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from sentiment_model.normalize import normalize_batch
from tests.test_normalize import old_normalize
from training.data import SPLITS, load_split

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=SPLITS, default="val")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    default_dir = os.environ.get("TWEETEVAL_DIR") or REPO.parent / "shared/data/tweeteval-sentiment"
    parser.add_argument("--data-dir", type=Path, default=Path(default_dir))
    args = parser.parse_args()
    texts = load_split(args.split, args.data_dir).texts[: args.texts]
    if normalize_batch(texts) != [old_normalize(t) for t in texts]:  # also warms both up
        raise SystemExit("normalize_batch differs from the per-text code on these texts")

    def per_text() -> None:
        for text in texts:
            old_normalize(text)

    def batch() -> None:
        normalize_batch(texts)

    timings: dict[str, list[tuple[float, float]]] = {"per-text": [], "batch": []}
    for _ in range(args.repeats):
        for name, run in (("per-text", per_text), ("batch", batch)):
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            timings[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    medians = {
        name: [statistics.median(t[i] for t in runs) / len(texts) * 1e6 for i in (0, 1)]
        for name, runs in timings.items()
    }
    print(f"{len(texts)} {args.split} texts, {args.repeats} repetitions, median microseconds per text")
    for name, (wall, cpu) in medians.items():
        print(f"  {name:9s} wall {wall:7.2f}  cpu {cpu:7.2f}")
    old, new = medians["per-text"], medians["batch"]
    print(f"  ratio     wall {old[0] / new[0]:6.1f}x  cpu {old[1] / new[1]:6.1f}x")


if __name__ == "__main__":
    main()
