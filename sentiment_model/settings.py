"""Where the model comes from: the env vars every process shares."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REPO = "CrisLap/sentiment-model"
DEFAULT_PATTERN = "sentiment_ft*.ftz"


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
