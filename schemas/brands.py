"""HTTP bodies of the API's brand endpoints (``GET /brands``, ``GET /brands/{brand}``).

The figures are the reputation stage's, as it publishes them on the compacted ``reputation`` topic (one
record per brand and closed event-time window, built in ``reputation/state.py``); the API only keeps the
latest windows of each brand and answers from them.
"""

from typing import Literal

from pydantic import BaseModel, Field

from schemas.reputation import ExamplePost, TermPull, WindowFigures


class BrandLatest(WindowFigures):
    """``GET /brands`` item: a brand's latest window and what its posts complained about and praised."""

    brand: str
    top_negative_terms: list[TermPull] = Field(default_factory=list, description="strongest first")
    top_positive_terms: list[TermPull] = Field(default_factory=list, description="strongest first")


class BrandList(BaseModel):
    """``GET /brands``: every brand the API has seen on the reputation topic, by name."""

    brands: list[BrandLatest]


class BrandWindow(BrandLatest):
    """A window as the stage publishes it (also the form the API keeps): figures, terms and examples.

    ``negative_examples`` / ``positive_examples``: a few of the window's posts with their telling words,
    when the stage publishes them (empty otherwise)."""

    negative_examples: list[ExamplePost] = Field(default_factory=list)
    positive_examples: list[ExamplePost] = Field(default_factory=list)


class BrandDetail(BaseModel):
    """``GET /brands/{brand}``: the brand's recent windows, what people complain about and praise in the
    latest ones, and example posts with their telling words."""

    brand: str
    alert: bool = Field(description="the latest window alerts")
    latest: WindowFigures
    windows: list[WindowFigures] = Field(description="the recent windows kept, oldest first")
    top_negative_terms: list[TermPull] = Field(
        description="complaints: terms pulling posts negative over the latest windows, strongest first"
    )
    top_positive_terms: list[TermPull] = Field(
        description="praise: terms pulling posts positive over the latest windows, strongest first"
    )
    negative_examples: list[ExamplePost] = Field(description="negative posts of the latest windows")
    positive_examples: list[ExamplePost] = Field(description="positive posts of the latest windows")


FollowerStatus = Literal[
    "not_configured", "connecting", "loading", "unreachable", "topic_missing", "refused", "failed"
]


class BrandsUnavailable(BaseModel):
    """A 503 of the brand endpoints: the API cannot (yet) tell what the reputation topic says."""

    status: FollowerStatus = Field(
        description="not_configured (no KAFKA_BOOTSTRAP_SERVERS), connecting, loading (reading the topic "
        "up to its end), unreachable (no broker answers), topic_missing, refused (login, ACL or TLS), "
        "failed (any other Kafka error)"
    )
    detail: str = Field(description="what is wrong, for a person")
    topic: str = Field(description="the reputation topic the API follows")
