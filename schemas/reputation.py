"""The reputation stage's records: its input on `reputation.partials` (written by the workers) and its
output on the compacted `reputation` topic (one judged window per brand).

The stage validates every input record through :data:`STAGE_INPUT` (a record that does not fit is
refused with the reason and counted, never applied); tests validate its output through
:class:`ReputationWindow`.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Count = Annotated[int, Field(ge=0)]


class TermPull(BaseModel):
    """A term and how hard it pulled the window's posts to one side."""

    model_config = ConfigDict(frozen=True)

    term: str = Field(min_length=1, description="a normalised word token (lower-case)")
    pull: float = Field(gt=0, description="summed contribution to the side's logit margin, over the posts")
    count: int = Field(ge=1, description="occurrences in the window's posts of that side")


# --- input: reputation.partials --------------------------------------------------------------------------


class SampledPost(BaseModel):
    """One explained post of a window's sample (a bottom-k sample by ``rank``: worker/partials.py)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=0, lt=2**32, description="crc32 of the id: the sample keeps the smallest")
    id: str = Field(description="the post's id")
    text: str = Field(max_length=280, description="the text as received (not normalised), cut at 280")
    terms: list[tuple[str, float, int]] = Field(
        max_length=16,
        description="[term, pull towards the post's side, occurrences], strongest first (at most 16)",
    )


class Partial(BaseModel):
    """What one worker batch counted for one brand and event-time window. Key: the brand label."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["partial"]
    brand: str = Field(min_length=1, description="configured brand, or `other`")
    window_start: int = Field(description="unix seconds, a multiple of window_seconds")
    window_seconds: int = Field(ge=1, description="REPUTATION_WINDOW_SECONDS of the worker")
    counts: tuple[Count, Count, Count] = Field(description="posts scored negative, neutral, positive")
    sample_posts: int = Field(
        20, ge=1, description="BRAND_TERMS_SAMPLE_POSTS of the worker: the size of each window side's sample"
    )
    negative_sample: list[SampledPost] = Field(
        default_factory=list, description="posts scored negative that may be in the window's sample"
    )
    positive_sample: list[SampledPost] = Field(
        default_factory=list, description="the same for posts scored positive"
    )


class Progress(BaseModel):
    """How far in event time one input partition was scored (to every partials partition). Key:
    ``\\x00progress``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["progress"]
    source: str = Field(min_length=1, description="the input partition, `topic/partition`")
    event_time: float | None = Field(
        description="largest event time scored on it (unix seconds); null only in an idle declaration "
        "of a partition that never had a post"
    )
    sources: int = Field(ge=1, description="how many input partitions exist")
    idle: bool = Field(
        False,
        description="the partition is caught up and had no posts for REPUTATION_IDLE_SECONDS: it stops "
        "holding windows open until its next ordinary progress record",
    )


#: One record of `reputation.partials`, told apart by ``type``.
STAGE_INPUT: TypeAdapter[Partial | Progress] = TypeAdapter(
    Annotated[Partial | Progress, Field(discriminator="type")]
)


# --- output: reputation ------------------------------------------------------------------------------------


class ExamplePost(BaseModel):
    """A post that shows the window's mood on one side: among the window's sample, one of the three
    whose terms pull hardest that way (ties: the smaller rank)."""

    model_config = ConfigDict(extra="ignore")  # the API reads it too: a later field is no error

    id: str = Field(description="the post's id (as in `mentions` and `sentiment`)")
    text: str = Field(max_length=280, description="the text as received, cut at 280 characters")
    terms: list[str] = Field(
        default_factory=list, max_length=5, description="its telling words: its strongest terms that way"
    )


class WindowFigures(BaseModel):
    """The figures of one brand's judged window: counts, share against the baseline, z, evidence, volume.
    Readers such as the API ignore fields they do not know (a newer stage may add some)."""

    model_config = ConfigDict(extra="ignore")

    window_start: datetime
    window_end: datetime
    window_seconds: int = Field(ge=1)
    negative: int = Field(ge=0)
    neutral: int = Field(ge=0)
    positive: int = Field(ge=0)
    total: int = Field(ge=0, description="posts in the window (negative + neutral + positive)")
    net_sentiment: float = Field(ge=-1.0, le=1.0, description="(positive - negative) / total, 0 if none")
    negative_share: float = Field(ge=0.0, le=1.0, description="negative / total, 0 if none")
    baseline_share: float = Field(
        ge=0.0, le=1.0, description="the brand's pooled negative share learned before this window"
    )
    dispersion: float = Field(ge=1.0, description="over-dispersion factor phi of the brand's windows")
    zscore: float = Field(description="(negatives - expected) / sd against the baseline; 0 while warming up")
    evidence: float = Field(
        ge=0.0,
        description="log-likelihood (nats) that the share rose by REPUTATION_ALERT_SHIFT, summed over the "
        "last windows (CUSUM): alerts at REPUTATION_ALERT_EVIDENCE",
    )
    baseline_volume: float = Field(ge=0.0, description="decayed mean negatives per window")
    volume_ratio: float = Field(ge=0.0, description="negatives / max(baseline_volume, 1); 1 while warming up")
    warm: bool = Field(description="the baseline has learned enough (REPUTATION_WARMUP_POSTS) to judge")
    alert: bool = Field(
        description="zscore >= REPUTATION_ALERT_ZSCORE or evidence >= REPUTATION_ALERT_EVIDENCE, in a window "
        "of >= REPUTATION_ALERT_MIN_POSTS posts"
    )


class ReputationWindow(WindowFigures):
    """The record value: one brand's event-time window judged once for the whole worker group. Key:
    ``brand|window_start`` (RFC 3339), so the compacted topic keeps one record per brand window.

    ``top_negative_terms``: terms pulling the posts scored negative towards negative, strongest first
    (ties: alphabetical); ``top_positive_terms``: the same for posts scored positive. At most 10 each
    (``BRAND_TOP_TERMS``); stop words, masked URLs and handles, lexicon tokens, numbers and the brand's
    own name never appear. Terms and examples come from the window's sample of ``BRAND_TERMS_SAMPLE_POSTS``
    posts per side (the same whatever the batching), so pulls and counts are over that sample.
    """

    model_config = ConfigDict(extra="forbid")

    brand: str = Field(description="configured brand, or `other`")
    top_negative_terms: list[TermPull] = Field(default_factory=list, max_length=10)
    top_positive_terms: list[TermPull] = Field(default_factory=list, max_length=10)
    negative_examples: list[ExamplePost] = Field(default_factory=list, max_length=3)
    positive_examples: list[ExamplePost] = Field(default_factory=list, max_length=3)
