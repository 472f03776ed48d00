"""The reputation stage's one settings object: environment variables with documented defaults."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reputation.detector import DetectorOptions
from worker.kafka.config import client_properties


class StageSettings(BaseSettings):
    """Everything ``python -m reputation`` reads. ``KAFKA_*`` passthrough as for the worker."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("localhost:9092", description="Kafka bootstrap servers")
    kafka_config_file: Path | None = Field(None, description="librdkafka properties file (key=value lines)")
    reputation_group: str = Field("reputation-stage", description="the stage's consumer group")
    reputation_partials_topic: str = Field(
        "reputation.partials", description="per-batch partial aggregates from the workers (input)"
    )
    reputation_state_topic: str = Field(
        "reputation.state",
        description="compacted changelog of the stage's state; as many partitions as the partials topic",
    )
    reputation_topic: str = Field("reputation", description="compacted topic of judged windows (output)")
    reputation_window_seconds: int = Field(60, ge=1, description="event-time window (= workers)")
    reputation_grace_seconds: float | None = Field(
        None, ge=0, description="how late (event time) a post may be and still count (default: one window)"
    )
    reputation_baseline_half_life_windows: float = Field(
        1440.0, gt=0, description="half-life, in windows with posts, of a brand's pooled baseline"
    )
    reputation_warmup_posts: int = Field(
        300, ge=1, description="posts a brand's baseline learns before it can alert"
    )
    reputation_alert_zscore: float = Field(3.0, gt=0, description="z-score of the negative share that alerts")
    reputation_alert_min_posts: int = Field(30, ge=1, description="fewest posts in a window that can alert")
    reputation_alert_evidence: float = Field(
        8.0,
        ge=0,
        description="evidence (nats) of a sustained rise by REPUTATION_ALERT_SHIFT that alerts (0: off)",
    )
    reputation_alert_shift: float = Field(
        0.15, gt=0, lt=1, description="rise of the negative share the evidence looks for (0.15: 15 points)"
    )
    brand_top_terms: int = Field(10, ge=0, le=10, description="top terms per side in each window record")
    client_id: str = Field(
        default_factory=lambda: f"reputation-stage-{socket.gethostname()}-{os.getpid()}",
        description="Kafka client.id (default: host name and pid)",
    )
    transactional_id: str | None = Field(
        None, description="transactional.id (default: the client id); stable and unique per instance"
    )
    batch_size: int = Field(5000, ge=1, description="most input records per batch")
    commit_interval_seconds: float = Field(1.0, gt=0, description="checkpoint at least this often")
    startup_timeout_seconds: float = Field(15.0, gt=0, description="how long to wait for the broker at start")
    shutdown_timeout_seconds: float = Field(20.0, gt=0, description="commit time allowed at shutdown")
    broker_outage_budget_seconds: float = Field(
        300.0, gt=0, description="how long a checkpoint waits for an unreachable broker before exit 1"
    )
    metrics_host: str = Field("127.0.0.1", description="metrics/liveness bind address")
    metrics_port: int = Field(9110, ge=0, le=65535, description="metrics/liveness port (0: any free port)")
    liveness_timeout_seconds: float = Field(60.0, gt=0, description="/healthz fails after this long a stall")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ...")

    @model_validator(mode="after")
    def _default_grace(self) -> StageSettings:
        if self.reputation_grace_seconds is None:
            self.reputation_grace_seconds = float(self.reputation_window_seconds)
        return self

    @property
    def grace_seconds(self) -> float:
        """The grace period, in seconds of event time."""
        return float(self.reputation_grace_seconds or 0.0)

    @property
    def detector(self) -> DetectorOptions:
        """The detector's options."""
        return DetectorOptions(
            half_life_windows=self.reputation_baseline_half_life_windows,
            warmup_posts=self.reputation_warmup_posts,
            alert_zscore=self.reputation_alert_zscore,
            alert_min_posts=self.reputation_alert_min_posts,
            alert_evidence=self.reputation_alert_evidence,
            alert_shift=self.reputation_alert_shift,
        )

    def kafka_properties(self) -> dict[str, str]:
        """Passthrough librdkafka properties: the config file, then KAFKA_* by the worker's rule."""
        return client_properties(self.kafka_config_file, os.environ)
