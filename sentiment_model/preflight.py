"""Load-check a model file in a child process.

fastText's loader trusts the file: a truncated or corrupt file can crash the whole process with a
segmentation fault, or load "successfully" with garbage at the end. The child takes that risk so the
worker or API never does, and proves the file complete: it loads it, scores a probe, saves it again and
compares the sizes. A complete file re-saves to exactly its own size; a truncated or padded one does
not, because the loader sizes every matrix from the (intact) header. Bytes are not compared: a quantized
model with a pruned vocabulary writes its prune index in hash-map order, which changes between saves.
Run as ``python -m sentiment_model.preflight FILE``: exit 0 when the file passes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sentiment_model.errors import ModelLoadError

_TIMEOUT_SECONDS = 60.0
# A corrupt header can ask for absurd matrix sizes; with a cap the child fails fast instead of swapping.
_BASE_MEMORY_BYTES = 512 << 20
_MEMORY_PER_MODEL_BYTE = 4


def check_in_child(path: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``path`` loads and predicts in a separate process."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sentiment_model.preflight", str(path), str(_memory_cap(path))],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(f"model file {path} did not load within {_TIMEOUT_SECONDS:.0f}s") from exc
    if done.returncode == 0:
        return
    detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if done.returncode < 0:
        raise ModelLoadError(
            f"model file {path} is corrupt or truncated: "
            f"loading it crashed fastText (signal {-done.returncode})"
        )
    raise ModelLoadError(detail or f"model file {path} failed its load check (exit {done.returncode})")


def _memory_cap(path: Path) -> int:
    return _BASE_MEMORY_BYTES + _MEMORY_PER_MODEL_BYTE * path.stat().st_size


def _main(argv: list[str]) -> int:
    import resource
    import tempfile

    cap = int(argv[1]) if len(argv) > 1 else _BASE_MEMORY_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    from sentiment_model.errors import ModelError
    from sentiment_model.predictor import Predictor

    path = Path(argv[0])
    try:
        predictor = Predictor.load_unchecked(path)
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / path.name
            predictor.save(copy)
            saved, original = copy.stat().st_size, path.stat().st_size
            if saved != original:
                raise ModelLoadError(
                    f"model file {path} is truncated or corrupt: it holds {original} bytes, "
                    f"its header describes {saved}"
                )
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return 3
    except MemoryError:
        print(
            f"model file {path} is corrupt: loading it asked for more than {cap >> 20} MiB", file=sys.stderr
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
