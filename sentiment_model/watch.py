"""Hot-reload: poll the model source in the background; a newer model that loads becomes a candidate.

The serving loop takes the candidate when it suits it (the worker between two batches), evaluates it in
shadow and then :meth:`ModelWatcher.promoted` or :meth:`ModelWatcher.rejected` it. A rejected file is
never tried again; a file that fails to load is retried only if its content changes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sentiment_model.errors import ModelError
from sentiment_model.predictor import Predictor
from sentiment_model.resolve import LOCAL_REPO, ResolvedModel, file_sha256, resolve_model
from sentiment_model.settings import ModelSettings

log = logging.getLogger(__name__)

OutcomeHook = Callable[[str], None]  # "candidate", "promoted", "rejected" or "failed" (did not load)


class ModelWatcher:
    """Looks for a newer model every ``interval`` seconds on a daemon thread."""

    def __init__(
        self, settings: ModelSettings, current: ResolvedModel, interval: float, on_outcome: OutcomeHook
    ) -> None:
        self.settings = settings
        self.interval = interval
        self.on_outcome = on_outcome
        self._current_sha = current.sha256
        self._refused: set[str] = set()  # rejected in shadow, or failed to load
        self._pending: tuple[Predictor, ResolvedModel] | None = None
        self._evaluating: str | None = None  # sha256 of the candidate handed over, until a verdict
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshots = Path(tempfile.mkdtemp(prefix="model-snapshots-"))

    @staticmethod
    def enabled(settings: ModelSettings, interval: float) -> bool:
        """Polling is off when the interval is 0 or a revision is pinned (a pin means: this one, always)."""
        return interval > 0 and not settings.model_revision

    def start(self) -> ModelWatcher:
        """Start polling on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and remove the snapshots (loaded models live in memory, not in these files)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self._snapshots, ignore_errors=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # a bug here must not end hot-reload silently: say it, keep polling
                log.exception("model check crashed; will try again in %gs", self.interval)

    def check(self) -> bool:
        """Resolve the source once; load a new model as the candidate. Returns whether one is pending."""
        if self._pending is not None:
            return True
        try:
            resolved = resolve_model(self.settings)
            if self._known(resolved):
                return False
            resolved = self._snapshot(resolved)
        except (ModelError, OSError) as exc:
            # The source is unreachable or unreadable (not a bad model): the current one keeps serving.
            log.warning("model check failed, will retry: %s", exc)
            return False
        if self._known(resolved):
            return False
        try:
            predictor = Predictor.load(resolved.path)
        except ModelError as exc:
            log.error("new model %s does not load, keeping the current one: %s", resolved.describe(), exc)
            self._refused.add(resolved.sha256)
            self.on_outcome("failed")
            return False
        log.info("new model %s loaded: evaluating it in shadow", resolved.describe())
        with self._lock:
            self._pending = (predictor, resolved)
        self.on_outcome("candidate")
        return True

    def _known(self, resolved: ResolvedModel) -> bool:
        sha = resolved.sha256
        return sha in (self._current_sha, self._evaluating) or sha in self._refused

    def _snapshot(self, resolved: ResolvedModel) -> ResolvedModel:
        """A private copy of a local file, so a file being rewritten cannot change under the loader."""
        if resolved.repo != LOCAL_REPO:
            return resolved  # Hub cache files are immutable blobs, addressed by content
        copy = self._snapshots / f"candidate{resolved.path.suffix}"
        shutil.copyfile(resolved.path, copy)
        sha = file_sha256(copy)
        final = copy.with_name(f"{sha[:16]}{resolved.path.suffix}")
        copy.replace(final)
        return replace(resolved, path=final, sha256=sha)

    def take(self) -> tuple[Predictor, ResolvedModel] | None:
        """The pending candidate, handed over once."""
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None:
                self._evaluating = pending[1].sha256
        return pending

    def promoted(self, model: ResolvedModel) -> None:
        """The candidate now serves."""
        self._current_sha, self._evaluating = model.sha256, None
        self.on_outcome("promoted")

    def rejected(self, model: ResolvedModel) -> None:
        """The candidate failed shadow evaluation: never try this file again."""
        self._refused.add(model.sha256)
        self._evaluating = None
        if model.path.parent == self._snapshots:
            model.path.unlink(missing_ok=True)
        self.on_outcome("rejected")
