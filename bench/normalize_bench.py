"""``normalize_batch`` with and without the compiled normaliser, against the frozen per-text code it
replaced: same texts, same run, alternating.

``python -m bench.normalize_bench [--split val] [--texts 2000] [--repeats 7] [--data-dir DIR]``

Reports the median wall-clock and CPU time per text of each over the repetitions, and the ratios. The
per-text code is the oracle kept in ``tests/test_normalize.py`` (the one the published models saw);
"python" is ``normalize_batch`` with ``sentiment_model._fastnormalize`` switched off (as where it is not
built), "compiled" the same call with it on (the texts it leaves go through the Python code, included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sentiment_model import normalize_text as normalize_text_module
from sentiment_model.normalize import normalize_batch
from tests.test_normalize import old_normalize
from training.data import SPLITS, load_split

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def _without_compiled() -> Iterator[None]:
    saved = getattr(normalize_text_module, "_fastnormalize")  # noqa: B009 - the attribute it swaps
    setattr(normalize_text_module, "_fastnormalize", None)  # noqa: B010 - what an unbuilt package does
    try:
        yield
    finally:
        setattr(normalize_text_module, "_fastnormalize", saved)  # noqa: B010


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=SPLITS, default="val")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    default_dir = os.environ.get("TWEETEVAL_DIR") or REPO.parent / "shared/data/tweeteval-sentiment"
    parser.add_argument("--data-dir", type=Path, default=Path(default_dir))
    args = parser.parse_args()
    texts = load_split(args.split, args.data_dir).texts[: args.texts]
    compiled = normalize_text_module.compiled_normalizer()
    if compiled is None:
        raise SystemExit("sentiment_model._fastnormalize is not built")
    handled = sum(text is not None for text in compiled.normalize(texts))
    expected = [old_normalize(t) for t in texts]  # also warms all three up
    with _without_compiled():
        if normalize_batch(texts) != expected:
            raise SystemExit("normalize_batch (Python) differs from the per-text code on these texts")
    if normalize_batch(texts) != expected:
        raise SystemExit("normalize_batch (compiled) differs from the per-text code on these texts")

    def per_text() -> None:
        for text in texts:
            old_normalize(text)

    def python() -> None:
        with _without_compiled():
            normalize_batch(texts)

    def with_compiled() -> None:
        normalize_batch(texts)

    runs: dict[str, Callable[[], None]] = {"per-text": per_text, "python": python, "compiled": with_compiled}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            timings[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    medians = {
        name: [statistics.median(t[i] for t in runs) / len(texts) * 1e6 for i in (0, 1)]
        for name, runs in timings.items()
    }
    print(
        f"{len(texts)} {args.split} texts ({handled} taken by the compiled code), {args.repeats} repetitions,"
    )
    print("median microseconds per text")
    for name, (wall, cpu) in medians.items():
        print(f"  {name:9s} wall {wall:7.2f}  cpu {cpu:7.2f}")
    new = medians["compiled"]
    for name in ("per-text", "python"):
        old = medians[name]
        print(f"  {name} / compiled  wall {old[0] / new[0]:6.1f}x  cpu {old[1] / new[1]:6.1f}x")


if __name__ == "__main__":
    main()
