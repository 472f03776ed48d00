"""A realistic stream of brand mentions for the demo: real tweets when the TweetEval split is at hand.

Each brand has a mood (its share of negative / neutral / positive posts). A post is a TweetEval test
tweet of the drawn sentiment with the brand mentioned in it, so the model sees real social text; without
the data set, short built-in templates stand in. A small share of records is deliberately bad (invalid
JSON, a missing or blank text, a non-object) to show the dead-letter path.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from schemas import LABELS
from schemas.timestamps import utc_rfc3339

# Share of negative / neutral / positive posts per brand: one loved, one in trouble, one boring.
DEFAULT_MOODS: dict[str, tuple[float, float, float]] = {
    "acme": (0.15, 0.35, 0.50),
    "globex": (0.55, 0.30, 0.15),
    "initech": (0.20, 0.60, 0.20),
    "umbrella": (0.35, 0.35, 0.30),
}
#: The scripted crisis: once started, the crisis brand's posts turn mostly negative and most of its
#: negative posts tell of one incident (an outage), in these words; the rest stays a real tweet.
CRISIS_MOOD: tuple[float, float, float] = (0.75, 0.20, 0.05)
CRISIS_SHARE = 0.8  # of the crisis brand's negative posts that tell of the incident
CRISIS_PHRASES: tuple[str, ...] = (
    "{b} app outage again, still broken",
    "waiting for hours, {b} outage and nobody answers",
    "{b} cancelled my order during the outage. broken service",
    "the {b} app has been broken all day, waiting for a fix",
    "lost my data in the {b} outage",
)
OTHER_BRANDS = ("hooli", "stark")  # not configured: the worker labels them "other"
SOURCES = ("twitter", "reddit", "news", "forum")
BAD_KINDS = ("invalid_json", "missing_text", "blank_text", "not_an_object")

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "negative": (
        "{b} support kept me on hold for an hour and then hung up. never again",
        "my {b} order arrived broken and nobody answers emails. so frustrated",
        "the new {b} update is terrible, everything is slower now",
        "really disappointed with {b}, worst purchase I made this year",
        "{b} charged me twice and refuses to refund. awful",
    ),
    "neutral": (
        "{b} will publish its quarterly results on thursday",
        "anyone know what time the {b} store opens on sundays?",
        "{b} is moving its headquarters to the new business park",
        "reading an article about {b} and the chip market",
        "{b} announced a press conference for next monday",
    ),
    "positive": (
        "just got my {b} headphones and the sound is amazing!",
        "shoutout to {b} support, fixed my problem in five minutes. love it",
        "the new {b} app is so much better, great job",
        "{b} delivered a day early, very happy with the service",
        "best coffee in town at the {b} cafe :)",
    ),
}


@dataclass(frozen=True)
class Post:
    """One record to produce: key, value, and what the demo expects of it."""

    key: bytes
    value: bytes
    brand: str
    bad_kind: str | None  # None for a valid post


class TextPool:
    """Texts by sentiment: TweetEval's test tweets when available, else the templates."""

    def __init__(self, data_dir: Path | None) -> None:
        self.by_label: dict[str, list[str]] = {label: [] for label in LABELS}
        self.from_tweeteval = False
        if data_dir is not None and (data_dir / "test_text.txt").is_file():
            texts = (data_dir / "test_text.txt").read_text(encoding="utf-8").splitlines()
            labels = (data_dir / "test_labels.txt").read_text(encoding="utf-8").split()
            for text, label in zip(texts, labels, strict=False):
                if text.strip():
                    self.by_label[LABELS[int(label)]].append(text.strip())
            self.from_tweeteval = all(self.by_label.values())

    def draw(self, rng: random.Random, label: str, brand: str) -> str:
        """A text of ``label`` that mentions ``brand``."""
        name = brand.capitalize()
        if not self.from_tweeteval:
            return rng.choice(_TEMPLATES[label]).format(b=name)
        text = rng.choice(self.by_label[label])
        return f"{text} #{name}" if rng.random() < 0.5 else f"@{name} {text}"


class PostStream:
    """Endless posts over the configured brands (plus a few unconfigured ones), tagged with ``run_id``."""

    def __init__(
        self,
        brands: Sequence[str],
        run_id: str,
        data_dir: Path | None,
        bad_share: float = 0.01,
        seed: int | None = None,
    ) -> None:
        self.brands = [b.lower() for b in brands]
        self.moods = {b: DEFAULT_MOODS.get(b, (0.3, 0.4, 0.3)) for b in self.brands}
        for other in OTHER_BRANDS:
            self.moods.setdefault(other, (0.3, 0.4, 0.3))
        self.run_id = run_id
        self.bad_share = bad_share
        self.rng = random.Random(seed)
        self.pool = TextPool(data_dir)
        self._count = 0
        self.crisis_brand: str | None = None

    def start_crisis(self, brand: str) -> None:
        """From the next post on, ``brand`` is in the scripted crisis (:data:`CRISIS_PHRASES`)."""
        self.crisis_brand = brand.lower()
        self.moods[self.crisis_brand] = CRISIS_MOOD

    def _text(self, label: str, brand: str) -> str:
        text = self.pool.draw(self.rng, label, brand)
        if brand == self.crisis_brand and label == "negative" and self.rng.random() < CRISIS_SHARE:
            phrase = self.rng.choice(CRISIS_PHRASES).format(b=brand.capitalize())
            return f"{phrase} {text}" if self.rng.random() < 0.5 else f"{text} {phrase}"
        return text

    def __iter__(self) -> Iterator[Post]:
        return self

    def __next__(self) -> Post:
        self._count += 1
        post_id = f"{self.run_id}-{self._count}"
        # Configured brands get most of the traffic; the rest shows up as "other".
        names = list(self.moods)
        weights = [1.0 if name in self.brands else 0.15 for name in names]
        brand = self.rng.choices(names, weights)[0]
        if self.rng.random() < self.bad_share:
            kind = self.rng.choice(BAD_KINDS)
            return Post(post_id.encode(), _bad_value(kind, post_id, brand), brand, kind)
        label = self.rng.choices(LABELS, self.moods[brand])[0]
        document = {
            "id": post_id,
            "text": self._text(label, brand),
            "brand": brand,
            "source": self.rng.choice(SOURCES),
            "created_at": utc_rfc3339(datetime.now(UTC), "milliseconds"),
            "demo_run": self.run_id,
        }
        return Post(post_id.encode(), orjson.dumps(document), brand, None)


def _bad_value(kind: str, post_id: str, brand: str) -> bytes:
    if kind == "invalid_json":
        return b'{"id": "' + post_id.encode() + b'", "text": "unterminated'
    if kind == "missing_text":
        return orjson.dumps({"id": post_id, "brand": brand})
    if kind == "blank_text":
        return orjson.dumps({"id": post_id, "text": "   ", "brand": brand})
    return orjson.dumps([post_id, brand])
