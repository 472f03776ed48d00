"""Types of the compiled batch stages (``_fastbatch.c``, whose header comment is the reference)."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

def decode(
    values: list[bytes | None],
    loads: Callable[[bytes], Any],
    decode_errors: tuple[type[Exception], ...],
    required: tuple[tuple[str, int], ...],
    optional_strings: tuple[str, ...],
    timestamps: tuple[str, ...],
    seen_timestamps: dict[str, float],
    seconds: Callable[[str], float | None],
    /,
) -> tuple[list[int], list[dict[str, Any]], list[int]]: ...
def encode(
    documents: list[dict[str, Any]],
    scores_json: bytes,
    label_ids: npt.NDArray[np.int64],
    labels: tuple[str, str, str],
    model_json: bytes,
    processed_at_json: bytes,
    known: frozenset[str],
    /,
) -> list[bytes | None]: ...
