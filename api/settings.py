"""The API process's one settings object: the shared model settings plus HTTP serving knobs."""

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator

from sentiment_model.settings import ModelSettings
from worker.kafka.config import client_properties

LogLevel = Annotated[
    Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"],
    # People write LOG_LEVEL=info as often as INFO.
    BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
]


class ApiSettings(ModelSettings):
    """Read from the environment (``API_HOST``, ``API_PORT``, ...) on top of :class:`ModelSettings`."""

    api_host: str = Field("127.0.0.1", description="address to bind; default 127.0.0.1 (loopback only)")
    api_port: int = Field(7860, ge=0, le=65_535, description="TCP port to bind; default 7860 (0: any free)")
    api_key: SecretStr | None = Field(
        None,
        repr=False,
        description="when set, /predict and /predict/batch need it in X-API-Key or Authorization: Bearer; "
        "default: unset (no key needed)",
    )
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="largest accepted request body in bytes (413 above); default 1,000,000"
    )
    log_level: LogLevel = Field("INFO", description="root and uvicorn log level; default INFO")
    access_log: bool = Field(
        False, description="log one line per request; default off (GET /metrics counts requests instead)"
    )
    max_texts_per_call: int = Field(
        1_000,
        gt=0,
        description="most texts the micro-batcher joins into one model call (a single request's texts are "
        "never split); default 1,000",
    )
    inline_scoring_chars: int = Field(
        4_000,
        ge=0,
        description="model calls of at most this many characters run on the event loop (about 1 ms), "
        "bigger ones in the model thread; 0: always the thread; default 4,000 (see api/batcher.py)",
    )

    kafka_bootstrap_servers: str | None = Field(
        None,
        description="Kafka bootstrap servers: the brand endpoints and page follow REPUTATION_TOPIC there; "
        "default: unset (they answer 503, scoring works without Kafka). Other KAFKA_* variables pass to "
        "librdkafka by the workers' rule",
    )
    kafka_config_file: Path | None = Field(None, description="librdkafka properties file (key=value lines)")
    reputation_topic: str = Field(
        "reputation", description="the reputation stage's compacted output topic; default reputation"
    )
    brand_page_max_brands: int = Field(
        1_000,
        ge=1,
        description="most brands kept in memory; a new brand beyond it evicts the brand whose latest "
        "window is the oldest; default 1,000",
    )
    brand_page_max_windows: int = Field(
        48, ge=1, le=10_000, description="newest windows kept per brand (GET /brands/{brand}); default 48"
    )
    brand_page_examples: int = Field(
        5, ge=0, le=50, description="example posts per side kept per window and shown per brand; default 5"
    )
    brand_page_kafka_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="how long the broker may not answer before the brand endpoints say so; default 10",
    )
    brand_page_refresh_seconds: float = Field(
        5.0, gt=0, description="how often the brand page polls the brand endpoints; default 5"
    )

    def kafka_properties(self) -> dict[str, str]:
        """Passthrough librdkafka properties: the config file, then KAFKA_* by the workers' rule."""
        return client_properties(self.kafka_config_file, os.environ)

    @field_validator("kafka_bootstrap_servers", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: object) -> object:
        # API_KEY= (set but empty) in an env file means "no key", not "the empty string is the key".
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(text, str) and not text.strip() else value
