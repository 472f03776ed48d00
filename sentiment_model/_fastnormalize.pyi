"""Types of the compiled normaliser (``_fastnormalize.c``, whose header comment is the reference)."""

from collections.abc import Sequence

class Normalizer:
    def __init__(
        self,
        token_codes: dict[str, int],
        *,
        padded: str,
        entities: dict[str, str],
        folds: dict[int, str],
        positive: str,
        negative: str,
        negation_reach: int,
        positive_bit: int,
        negative_bit: int,
        negation_bit: int,
        clause_bit: int,
    ) -> None: ...
    def normalize(self, texts: Sequence[str]) -> list[str | None]: ...
