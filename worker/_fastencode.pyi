"""Types of the compiled result encoder (``_fastencode.c``, whose header comment is the reference)."""

from typing import Any

import numpy as np
import numpy.typing as npt

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
