"""Find the model file: a local path, or the newest matching file of a Hub repo (online or cached).

The Hub client is imported only when the Hub is asked: with ``MODEL_PATH`` it would only add memory and
start-up time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas import ModelFile, ModelRef
from sentiment_model.errors import ModelLoadError, ModelNotFoundError
from sentiment_model.settings import ModelSettings

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoFile

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
LOCAL_REPO = "local"
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _HubUnreachable(Exception):
    """The Hub answered 5xx: as good as unreachable, so the local cache is tried."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model file on local disk plus where it came from."""

    path: Path
    repo: str
    revision: str | None
    filename: str
    sha256: str
    metrics: dict[str, Any] | None = None

    @property
    def ref(self) -> ModelRef:
        """The identity stamped on every result."""
        return ModelRef(repo=self.repo, revision=self.revision, sha256=self.sha256)

    @property
    def file(self) -> ModelFile:
        """The file's identity as the API shows it."""
        return ModelFile(repo=self.repo, revision=self.revision, file=self.filename, sha256=self.sha256)

    def describe(self) -> str:
        """One line for logs."""
        where = f"{self.repo}@{self.revision[:12]}" if self.revision else self.repo
        return f"{where}/{self.filename} (sha256 {self.sha256[:12]})"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_metrics(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _checked(resolved: ResolvedModel, expected_sha256: str | None) -> ResolvedModel:
    if expected_sha256 and expected_sha256.lower() != resolved.sha256:
        raise ModelLoadError(
            f"model file {resolved.path} has sha256 {resolved.sha256}, expected {expected_sha256.lower()}"
        )
    return resolved


def resolve_model(settings: ModelSettings) -> ResolvedModel:
    """Resolve the model the settings point at, downloading it from the Hub when needed.

    Order: ``MODEL_PATH`` if set; else the Hub (``HF_MODEL_REPO`` at ``MODEL_REVISION``), falling back to
    the local Hub cache when offline (``HF_HUB_OFFLINE=1``) or when the Hub cannot be reached.
    Raises :class:`ModelNotFoundError` or :class:`ModelLoadError` with a message for a person.
    """
    if settings.model_path is not None:
        return _checked(_resolve_local(settings.model_path), settings.model_sha256)
    import httpx2
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import OfflineModeIsEnabled

    if is_offline_mode():
        return _checked(_resolve_cached(settings, reason="HF_HUB_OFFLINE is set"), settings.model_sha256)
    try:
        resolved = _resolve_online(settings)
    except (_HubUnreachable, httpx2.TransportError, OfflineModeIsEnabled) as exc:
        log.warning("Hub unreachable (%s); looking in the local Hub cache", exc)
        resolved = _resolve_cached(settings, reason=f"the Hub is unreachable: {exc}")
    return _checked(resolved, settings.model_sha256)


def _resolve_local(path: Path) -> ResolvedModel:
    if not path.is_file():
        raise ModelNotFoundError(f"MODEL_PATH={path} does not exist or is not a file")
    return ResolvedModel(
        path=path,
        repo=LOCAL_REPO,
        revision=None,
        filename=path.name,
        sha256=file_sha256(path),
        metrics=_read_metrics(path.with_name(METRICS_FILE)),
    )


def _newest(files: list[RepoFile]) -> RepoFile:
    def key(entry: RepoFile) -> tuple[str, str]:
        date = entry.last_commit.date.isoformat() if entry.last_commit and entry.last_commit.date else ""
        return (date, entry.path)

    return max(files, key=key)


def _resolve_online(settings: ModelSettings) -> ResolvedModel:
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.hf_api import RepoFile

    repo, revision = settings.hf_model_repo, settings.model_revision or "main"
    api = HfApi(endpoint=settings.hf_endpoint, token=settings.hf_token)
    try:
        commit = api.repo_info(repo, revision=revision).sha
        if commit is None:  # pragma: no cover - the Hub always answers with a sha
            raise ModelNotFoundError(f"the Hub gave no commit for {repo}@{revision}")
        entries = api.list_repo_tree(repo, revision=commit, recursive=True, expand=True)
        files = [e for e in entries if isinstance(e, RepoFile)]
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelNotFoundError(
            f"Hub repo {repo} not found or not accessible (private repos need HF_TOKEN): {exc}"
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFoundError(f"revision {revision!r} does not exist in Hub repo {repo}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and status < 500:
            raise ModelNotFoundError(f"the Hub refused to list {repo}@{revision}: {exc}") from exc
        raise _HubUnreachable(str(exc)) from exc  # 5xx: the Hub is down, the cache may still serve
    matching = [f for f in files if fnmatch.fnmatch(f.path, settings.model_file_pattern)]
    if not matching:
        raise ModelNotFoundError(
            f"Hub repo {repo}@{revision} ({commit[:12]}) has no file matching {settings.model_file_pattern!r}"
        )
    chosen = _newest(matching)
    # Download by commit sha so the file and the revision we report can never disagree.
    path = Path(
        hf_hub_download(
            repo,
            chosen.path,
            revision=commit,
            token=settings.hf_token,
            endpoint=settings.hf_endpoint,
            cache_dir=settings.hf_hub_cache,
        )
    )
    _remember_ref(path, chosen.path, revision, commit)
    metrics_path: Path | None = None
    if any(f.path == METRICS_FILE for f in files):
        try:
            metrics_path = Path(
                hf_hub_download(
                    repo,
                    METRICS_FILE,
                    revision=commit,
                    token=settings.hf_token,
                    endpoint=settings.hf_endpoint,
                )
            )
        except (EntryNotFoundError, HfHubHTTPError, httpx2.TransportError) as exc:
            log.warning("could not fetch %s from %s: %s", METRICS_FILE, repo, exc)
    resolved = ResolvedModel(
        path=path,
        repo=repo,
        revision=commit,
        filename=chosen.path,
        sha256=file_sha256(path),
        metrics=_read_metrics(metrics_path),
    )
    if chosen.lfs is not None and chosen.lfs.sha256 != resolved.sha256:
        raise ModelLoadError(
            f"downloaded {chosen.path} has sha256 {resolved.sha256}, the Hub says {chosen.lfs.sha256}"
        )
    return resolved


def _remember_ref(path: Path, filename: str, revision: str, commit: str) -> None:
    """Record ``revision -> commit`` in the cache, so the same revision resolves offline later.

    ``hf_hub_download`` only writes a ref when it is given a branch or tag; we download by commit sha.
    The cache layout (``<repo folder>/snapshots/<commit>/<file>``, ``<repo folder>/refs/<revision>``) is
    huggingface_hub's documented one.
    """
    if _COMMIT_SHA.fullmatch(revision):
        return
    snapshot = path.parents[len(Path(filename).parts) - 1]
    if snapshot.name != commit or snapshot.parent.name != "snapshots":
        return  # not a standard cache layout (e.g. local_dir): nothing to record
    repo_folder = snapshot.parent.parent
    ref_file = repo_folder / "refs" / revision
    try:
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(commit)
    except OSError as exc:
        log.warning("could not record %s -> %s in the Hub cache: %s", revision, commit, exc)


def _resolve_cached(settings: ModelSettings, reason: str) -> ResolvedModel:
    from huggingface_hub import scan_cache_dir

    repo, revision = settings.hf_model_repo, settings.model_revision or "main"
    hint = f"{reason}, and the local Hub cache has no model for {repo}@{revision}"
    try:
        cache = scan_cache_dir(settings.hf_hub_cache)
    except Exception as exc:  # CacheNotFound and friends: there is no cache at all
        raise ModelNotFoundError(f"{hint} (no cache: {exc})") from exc
    cached = next((r for r in cache.repos if r.repo_id == repo and r.repo_type == "model"), None)
    if cached is None:
        raise ModelNotFoundError(hint)
    if _COMMIT_SHA.fullmatch(revision):
        snapshot = next((r for r in cached.revisions if r.commit_hash == revision), None)
    else:
        snapshot = next((r for r in cached.revisions if revision in r.refs), None)
    if snapshot is None:
        raise ModelNotFoundError(hint)
    matching = [f for f in snapshot.files if fnmatch.fnmatch(f.file_name, settings.model_file_pattern)]
    if not matching:
        raise ModelNotFoundError(f"{hint} (no file matching {settings.model_file_pattern!r} cached)")
    # Offline we cannot ask the Hub for commit dates; the most recently fetched file is the best guess.
    chosen = max(matching, key=lambda f: (f.blob_last_modified, f.file_name))
    path = Path(chosen.file_path)
    sha256 = file_sha256(path)
    if _SHA256.fullmatch(chosen.blob_path.name) and chosen.blob_path.name != sha256:
        raise ModelLoadError(f"cached {chosen.file_name} is corrupt: its sha256 is not its blob name")
    metrics = next((f for f in snapshot.files if f.file_name == METRICS_FILE), None)
    log.info("using cached model %s@%s (%s)", repo, snapshot.commit_hash[:12], reason)
    return ResolvedModel(
        path=path,
        repo=repo,
        revision=snapshot.commit_hash,
        filename=chosen.file_name,
        sha256=sha256,
        metrics=_read_metrics(Path(metrics.file_path) if metrics else None),
    )


__all__ = ["LOCAL_REPO", "METRICS_FILE", "ResolvedModel", "file_sha256", "resolve_model"]
