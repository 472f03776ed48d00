"""The worker's one settings object: environment variables with documented defaults."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from schemas.mention import primary_language
from sentiment_model import ModelSettings
from worker.kafka.config import client_properties


class WorkerSettings(ModelSettings):
    """Everything ``python -m worker`` reads. Model source settings come from :class:`ModelSettings`.

    Other ``KAFKA_*`` variables follow the environment rule (:mod:`worker.kafka.config`): one whose derived
    property librdkafka knows is passed on (``KAFKA_SECURITY_PROTOCOL=SASL_SSL`` -> ``security.protocol``),
    any other is skipped with a warning, a near miss of a property stops the start. Every line of
    ``KAFKA_CONFIG_FILE`` is passed on; the variables win over the file.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("localhost:9092", description="Kafka bootstrap servers")
    kafka_config_file: Path | None = Field(None, description="librdkafka properties file (key=value lines)")
    consumer_group: str = Field("sentiment-worker", description="consumer group id")
    input_topic: str = Field("mentions", description="topic of input posts")
    output_topic: str = Field("sentiment", description="topic of results")
    dlq_topic: str = Field("mentions.dlq", description="dead-letter topic (original bytes + reason headers)")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="at_least_once, or exactly_once (transactions)"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new group starts: earliest loses nothing"
    )
    batch_size: int = Field(1000, ge=1, le=100_000, description="most records consumed and scored per batch")
    poll_timeout_seconds: float = Field(
        0.2, gt=0, description="longest wait for input when none is queued (a batch never waits to fill)"
    )
    commit_interval_seconds: float = Field(1.0, gt=0, description="checkpoint at least this often")
    commit_max_records: int = Field(50_000, ge=1, description="... or after this many records")
    client_id: str = Field(
        default_factory=lambda: f"sentiment-worker-{socket.gethostname()}-{os.getpid()}",
        description="Kafka client.id (default: host name and pid)",
    )
    transactional_id: str | None = Field(
        None, description="exactly-once transactional.id (default: the client id); unique per instance"
    )
    brands: str = Field("", description="comma-separated brands with their own metric label; others: other")
    metrics_host: str = Field(
        "127.0.0.1", description="metrics/liveness bind address (0.0.0.0 in containers)"
    )
    metrics_port: int = Field(9108, ge=0, le=65535, description="metrics/liveness port (0: any free port)")
    startup_timeout_seconds: float = Field(15.0, gt=0, description="how long to wait for the broker at start")
    shutdown_timeout_seconds: float = Field(
        20.0, gt=0, description="flush/commit time allowed at shutdown (also within a broker outage)"
    )
    # librdkafka's message.timeout.ms defaults to 300 s: a budget below it would give up on records
    # librdkafka is still retrying.
    broker_outage_budget_seconds: float = Field(
        300.0,
        gt=0,
        description="how long a checkpoint waits for an unreachable broker (inputs paused) before the "
        "worker fails, committing nothing past it (exit 1)",
    )
    model_retry_attempts: int = Field(3, ge=1, description="tries per batch before a model error is fatal")
    model_retry_backoff_seconds: float = Field(0.5, ge=0, description="first retry delay (doubles)")
    liveness_timeout_seconds: float = Field(
        60.0, gt=0, description="/healthz fails when the loop stalls this long"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ...")
    drift_window_records: int = Field(5000, ge=1, description="predictions in the sliding drift window")
    drift_min_records: int = Field(
        500, ge=1, description="drift gauges are set once the window has this many"
    )
    drift_oov_sample: int = Field(
        50,
        ge=1,
        description="measure the OOV rate on every N-th post (a rate: 1 in 50 of a 2,000-post batch is "
        "40 posts; docs/results.md has the cost of denser samples)",
    )
    model_languages: str = Field(
        "en",
        description="comma-separated languages the model scores (primary tags); a post whose `lang` "
        "is another one goes to the dead-letter topic (reason unsupported_language); untagged: scored",
    )
    reputation_partials_topic: str | None = Field(
        None,
        description="per-batch partial aggregates for the reputation stage; default: `reputation.partials` "
        "if it exists; empty: off",
    )
    reputation_window_seconds: int = Field(
        60, ge=1, description="event-time tumbling window of the partials (the same for the stage)"
    )
    reputation_idle_seconds: float | None = Field(
        None,
        gt=0,
        description="an assigned input partition caught up and without posts this long (processing time) "
        "is declared idle to the stage: it stops holding windows open until it has posts again "
        "(default: one window)",
    )
    brand_top_terms: int = Field(
        10, ge=0, le=10, description="terms pulling negative / positive per brand window (0: off)"
    )
    brand_terms_sample_posts: int = Field(
        20,
        ge=1,
        description="negative and positive posts per brand window whose words feed its terms and "
        "examples: those with the smallest hash of their id, the same whatever the batching (the same "
        "for every worker)",
    )

    @field_validator("brands")
    @classmethod
    def _tidy_brands(cls, value: str) -> str:
        return ",".join(b.strip().lower() for b in value.split(",") if b.strip())

    @field_validator("model_languages")
    @classmethod
    def _tidy_languages(cls, value: str) -> str:
        languages = [primary_language(v) for v in value.split(",") if v.strip()]
        if not languages:
            raise ValueError("name at least one language, e.g. en")
        return ",".join(languages)

    @property
    def language_list(self) -> list[str]:
        """The languages the model scores (primary subtags, lower-case)."""
        return self.model_languages.split(",")

    @property
    def brand_list(self) -> list[str]:
        """Configured brands, lower-cased."""
        return [b for b in self.brands.split(",") if b]

    @property
    def exactly_once(self) -> bool:
        """Whether transactions are used."""
        return self.processing_guarantee == "exactly_once"

    def kafka_properties(self) -> dict[str, str]:
        """Passthrough librdkafka properties: the config file, then KAFKA_* variables (the environment
        rule; logs the skipped ones, raises :class:`ClientConfigError` for a near miss)."""
        return client_properties(self.kafka_config_file, os.environ)
