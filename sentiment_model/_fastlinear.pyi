"""Types of the compiled per-token loop (``_fastlinear.c``, whose header comment is the reference).

The C code takes any buffer of the right item type; typed here as the numpy arrays the scorer passes.
"""

from collections.abc import Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

class Kernel:
    def __init__(
        self,
        keys: list[bytes],
        codes: list[int],
        word_ngrams: int,
        bucket: int,
        nwords: int,
        bucket_rows: npt.NDArray[np.int32] | None,
        table: npt.NDArray[np.float32],
        dim: int,
    ) -> None: ...
    @overload
    def sum_rows(
        self, lines: Sequence[str], sums: npt.NDArray[np.float32], counts: npt.NDArray[np.int64]
    ) -> bool: ...
    @overload
    def sum_rows(
        self,
        lines: Sequence[str],
        sums: npt.NDArray[np.float32],
        counts: npt.NDArray[np.int64],
        words: npt.NDArray[np.int64],
    ) -> bytes | bool: ...
