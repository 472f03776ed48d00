"""The three sentiment classes, in the order every probability vector uses."""

from typing import Final, Literal

Label = Literal["negative", "neutral", "positive"]

#: Class order of every score vector in the system (matches TweetEval's 0/1/2 label ids).
LABELS: Final[tuple[Label, Label, Label]] = ("negative", "neutral", "positive")
