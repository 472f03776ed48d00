"""Where the model comes from: the env vars every process shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REPO = "CrisLap/sentiment-model"
DEFAULT_PATTERN = "sentiment_ft*.ftz"


@dataclass(frozen=True)
class ShadowPolicy:
    """When a hot-reloaded candidate may replace the current model."""

    records: int = 2000  # live texts scored in shadow before deciding
    min_agreement: float = 0.75  # share of texts on which both models pick the same label
    max_label_jsd: float = 0.05  # Jensen-Shannon divergence (bits) of the two label distributions


class ModelSettings(BaseSettings):
    """Model source. ``MODEL_PATH`` wins when set; otherwise the Hub repo is used.

    The worker's and API's settings extend this class, so each process still has one settings object.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    hf_model_repo: str = Field(DEFAULT_REPO, description="Hub model repo id")
    model_revision: str | None = Field(
        None, description="branch, tag or full commit sha to pin; default: the repo's main branch"
    )
    model_path: Path | None = Field(None, description="local .ftz/.bin file; wins over the Hub when set")
    model_file_pattern: str = Field(DEFAULT_PATTERN, description="glob of model files in the Hub repo")
    model_sha256: str | None = Field(None, description="expected sha256 of the model file (optional check)")
    hf_token: str | None = Field(None, repr=False, description="token for private Hub repos")
    hf_endpoint: str | None = Field(None, description="Hub endpoint; default: huggingface_hub's own")
    hf_hub_cache: Path | None = Field(None, description="Hub cache folder; default: huggingface_hub's own")
    model_poll_interval_seconds: float = Field(
        300.0, ge=0, description="look for a newer model this often; 0 or a pinned MODEL_REVISION: never"
    )
    shadow_records: int = Field(2000, ge=1, description="live texts a new model scores in shadow first")
    shadow_min_agreement: float = Field(
        0.75, ge=0, le=1, description="promote only if it agrees with the current model this often"
    )
    shadow_max_label_jsd: float = Field(
        0.05, ge=0, le=1, description="... and its label distribution is this close (Jensen-Shannon, bits)"
    )

    @property
    def shadow_policy(self) -> ShadowPolicy:
        """The promotion bounds for hot-reloaded models."""
        return ShadowPolicy(self.shadow_records, self.shadow_min_agreement, self.shadow_max_label_jsd)
