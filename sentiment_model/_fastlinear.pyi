"""Types of the compiled per-token loop (``_fastlinear.c``, whose header comment is the reference)."""

from collections.abc import Buffer, Sequence

class Kernel:
    def __init__(
        self,
        keys: list[bytes],
        codes: list[int],
        word_ngrams: int,
        bucket: int,
        nwords: int,
        bucket_rows: Buffer | None,
        table: Buffer,
        dim: int,
    ) -> None: ...
    def sum_rows(self, lines: Sequence[str], sums: Buffer, counts: Buffer) -> bool: ...
