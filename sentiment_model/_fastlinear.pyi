"""Types of the compiled tokeniser and scorer (``_fastlinear.c``, whose header comment is the reference).

The C code takes any buffer of the right item type; typed here as the numpy arrays the scorer passes.
"""

from collections.abc import Sequence

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
    def sum_rows(
        self,
        lines: Sequence[str] | Sequence[bytes],
        sums: npt.NDArray[np.float32],
        counts: npt.NDArray[np.int64],
        words: npt.NDArray[np.int64] | None = None,
        tokens: npt.NDArray[np.int64] | None = None,
        /,
    ) -> bool | bytes: ...
    def explain_rows(self, line: str | bytes) -> tuple[list[int], list[int], list[int], list[bytes]]: ...
