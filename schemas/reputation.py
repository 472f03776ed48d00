"""Records on the compacted `reputation` topic: one brand's tumbling window as counted by one worker."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class TermPull(BaseModel):
    """A term and how hard it pulled the window's posts to one side."""

    model_config = ConfigDict(frozen=True)

    term: str = Field(min_length=1, description="a normalised word token (lower-case)")
    pull: float = Field(gt=0, description="summed contribution to the side's logit margin, over the posts")
    count: int = Field(ge=1, description="occurrences in the window's posts of that side")


class ReputationWindow(BaseModel):
    """The record value. Key: ``brand|window_start|member``; a brand's window is the sum over members.

    ``top_negative_terms``: terms pulling the posts scored negative towards negative, strongest first;
    ``top_positive_terms``: the same for posts scored positive. At most 10 each (``BRAND_TOP_TERMS``);
    stop words, masked URLs and handles, lexicon tokens, numbers and the brand's own name never appear.
    """

    model_config = ConfigDict(extra="forbid")

    brand: str = Field(description="configured brand, or `other`")
    window_start: datetime
    window_end: datetime
    window_seconds: int = Field(ge=1)
    member: str = Field(description="the worker (client id) that counted these posts")
    negative: int = Field(ge=0)
    neutral: int = Field(ge=0)
    positive: int = Field(ge=0)
    total: int = Field(ge=1)
    net_sentiment: float = Field(ge=-1.0, le=1.0, description="(positive - negative) / total")
    top_negative_terms: list[TermPull] = Field(default_factory=list, max_length=10)
    top_positive_terms: list[TermPull] = Field(default_factory=list, max_length=10)
