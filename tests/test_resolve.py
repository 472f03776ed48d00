"""Model resolution: local file, Hub (fake at the HTTP boundary), offline cache, revision pins, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sentiment_model import ModelLoadError, ModelNotFoundError, ModelSettings, Predictor, resolve_model
from sentiment_model.resolve import file_sha256
from tests.fakehub import FakeHub

REPO = "acme/sentiment-model"


@dataclass
class HubSetup:
    hub: FakeHub
    first: str  # commit with sentiment_ft.ftz = small model, tagged v1
    second: str  # later commit adding sentiment_ft_v2.ftz = other model
    first_sha256: str
    second_sha256: str


@pytest.fixture
def hub(small_model: Path, other_model: Path) -> Iterator[HubSetup]:
    with FakeHub(token="hf_secret") as fake:
        first = fake.add_commit(
            REPO,
            {"sentiment_ft.ftz": small_model.read_bytes(), "metrics.json": b'{"test": {"macro_f1": 0.61}}'},
            date=datetime(2026, 1, 1, tzinfo=UTC),
        )
        fake.create_tag(REPO, "v1", first)
        second = fake.add_commit(
            REPO,
            {"sentiment_ft_v2.ftz": other_model.read_bytes(), "README.md": b"card"},
            date=datetime(2026, 2, 1, tzinfo=UTC),
        )
        fake.add_commit("acme/private-model", {"sentiment_ft.ftz": small_model.read_bytes()}, private=True)
        yield HubSetup(fake, first, second, file_sha256(small_model), file_sha256(other_model))


def settings(hub: HubSetup, cache: Path, **overrides: object) -> ModelSettings:
    values: dict[str, object] = {
        "hf_model_repo": REPO,
        "hf_endpoint": hub.hub.endpoint,
        "hf_hub_cache": cache,
        "hf_token": None,
        **overrides,
    }
    return ModelSettings.model_validate(values)


def test_local_path_wins_and_reads_metrics_beside_it(tmp_path: Path, small_model: Path) -> None:
    model = tmp_path / "sentiment_ft.ftz"
    model.write_bytes(small_model.read_bytes())
    (tmp_path / "metrics.json").write_text('{"test": {"macro_recall": 0.5}}')
    resolved = resolve_model(ModelSettings(model_path=model, hf_model_repo="nobody/nothing"))
    assert (resolved.repo, resolved.revision, resolved.filename) == ("local", None, "sentiment_ft.ftz")
    assert resolved.sha256 == file_sha256(small_model)
    assert resolved.metrics == {"test": {"macro_recall": 0.5}}


def test_local_path_errors(tmp_path: Path, small_model: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="MODEL_PATH"):
        resolve_model(ModelSettings(model_path=tmp_path / "missing.ftz"))
    with pytest.raises(ModelLoadError, match="expected"):
        resolve_model(ModelSettings(model_path=small_model, model_sha256="0" * 64))


def test_hub_picks_the_newest_matching_file(hub: HubSetup, tmp_path: Path) -> None:
    resolved = resolve_model(settings(hub, tmp_path))
    assert (resolved.repo, resolved.revision, resolved.filename) == (REPO, hub.second, "sentiment_ft_v2.ftz")
    assert resolved.sha256 == hub.second_sha256 == file_sha256(resolved.path)
    assert resolved.metrics == {"test": {"macro_f1": 0.61}}  # metrics.json from the same commit tree
    assert resolved.path.is_relative_to(tmp_path)
    Predictor.load(resolved.path)  # the downloaded file is a working model


@pytest.mark.parametrize("pin", ["v1", "first-sha"])
def test_revision_pin(hub: HubSetup, tmp_path: Path, pin: str) -> None:
    revision = hub.first if pin == "first-sha" else pin
    resolved = resolve_model(settings(hub, tmp_path, model_revision=revision))
    assert (resolved.revision, resolved.filename, resolved.sha256) == (
        hub.first,
        "sentiment_ft.ftz",
        hub.first_sha256,
    )


def test_hub_errors_are_clear(hub: HubSetup, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found or not accessible"):
        resolve_model(settings(hub, tmp_path, hf_model_repo="acme/nope"))
    with pytest.raises(ModelNotFoundError, match="revision 'v9' does not exist"):
        resolve_model(settings(hub, tmp_path, model_revision="v9"))
    with pytest.raises(ModelNotFoundError, match="no file matching"):
        resolve_model(settings(hub, tmp_path, model_file_pattern="*.onnx"))


def test_private_repo_needs_the_token(hub: HubSetup, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="HF_TOKEN"):
        resolve_model(settings(hub, tmp_path, hf_model_repo="acme/private-model", hf_token="hf_wrong"))
    resolved = resolve_model(
        settings(hub, tmp_path, hf_model_repo="acme/private-model", hf_token="hf_secret")
    )
    assert resolved.sha256 == hub.first_sha256


def test_unreachable_hub_falls_back_to_the_cache(hub: HubSetup, tmp_path: Path) -> None:
    online = resolve_model(settings(hub, tmp_path))
    dead = settings(hub, tmp_path, hf_endpoint="http://127.0.0.1:9")  # discard port: nothing listens
    offline = resolve_model(dead)
    assert (offline.revision, offline.filename, offline.sha256) == (
        online.revision,
        online.filename,
        online.sha256,
    )
    with pytest.raises(ModelNotFoundError, match="unreachable"):
        resolve_model(settings(hub, tmp_path / "empty-cache", hf_endpoint="http://127.0.0.1:9"))


def _offline_cli(
    hub: HubSetup, cache: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``sentiment-predict`` in a fresh interpreter with HF_HUB_OFFLINE=1 (read by the client at import)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_ENDPOINT": hub.hub.endpoint,  # a request that slipped out would show in the fake's log
        "HF_MODEL_REPO": REPO,
        **(extra_env or {}),
    }
    env.pop("MODEL_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "sentiment_model.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_offline_mode_uses_the_prepopulated_cache(hub: HubSetup, tmp_path: Path) -> None:
    resolve_model(settings(hub, tmp_path))  # populate the cache for main
    resolve_model(settings(hub, tmp_path, model_revision="v1"))  # ... and for the tag
    before = len(hub.hub.requests)

    shown = _offline_cli(hub, tmp_path, "--show-model")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) | {"path": None} == {
        "repo": REPO,
        "revision": hub.second,
        "sha256": hub.second_sha256,
        "file": "sentiment_ft_v2.ftz",
        "path": None,
    }
    scored = _offline_cli(hub, tmp_path, "--json", "I love it", "I hate it")
    assert scored.returncode == 0, scored.stderr
    assert [
        json.loads(line)["label"] in {"negative", "neutral", "positive"}
        for line in scored.stdout.splitlines()
    ] == [
        True,
        True,
    ]
    assert len(hub.hub.requests) == before  # nothing reached the Hub


def test_offline_pin_to_a_cached_tag(hub: HubSetup, tmp_path: Path) -> None:
    resolve_model(settings(hub, tmp_path, model_revision="v1"))
    env_pin = _offline_cli(hub, tmp_path, "--show-model", extra_env={"MODEL_REVISION": "v1"})
    assert json.loads(env_pin.stdout)["revision"] == hub.first
    missing = _offline_cli(hub, tmp_path, "--show-model", extra_env={"MODEL_REVISION": "v2"})
    assert missing.returncode == 2
    assert "HF_HUB_OFFLINE" in missing.stderr and "v2" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_corrupt_cached_blob_is_detected_offline(hub: HubSetup, tmp_path: Path) -> None:
    resolved = resolve_model(settings(hub, tmp_path))
    blob = resolved.path.resolve()
    blob.write_bytes(blob.read_bytes()[:-10])
    result = _offline_cli(hub, tmp_path, "--show-model")
    assert result.returncode == 2
    assert "corrupt" in result.stderr and "Traceback" not in result.stderr
