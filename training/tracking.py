"""MLflow run logging: a sqlite store on local disk unless MLFLOW_TRACKING_URI says otherwise."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "sentiment-fasttext"


def default_tracking_uri(store_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a sqlite file in ``store_dir`` (no server needed)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_dir.resolve() / 'mlflow.db'}"


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        out[prefix] = float(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric leaves of the metrics document as ``test.macro_recall``-style keys (lists are skipped)."""
    out: dict[str, float] = {}
    _flatten("", metrics, out)
    return out


class Tracker:
    """Thin wrapper so the pipeline logs through one object and tests can read the run back."""

    def __init__(self, tracking_uri: str, store_dir: Path, experiment: str = EXPERIMENT) -> None:
        import mlflow

        self._mlflow = mlflow
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            # Keep artifacts beside the sqlite file rather than in whatever the cwd happens to be.
            location = (
                (store_dir / "artifacts").resolve().as_uri() if tracking_uri.startswith("sqlite") else None
            )
            mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment)
        self.run_id: str | None = None

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str]) -> Iterator[Tracker]:
        """One MLflow run; ended as FAILED if the block raises."""
        with self._mlflow.start_run(run_name=name, tags=dict(tags)) as active:
            self.run_id = active.info.run_id
            yield self

    def params(self, params: Mapping[str, Any]) -> None:
        """Hyper-parameters and settings (stringified by MLflow)."""
        self._mlflow.log_params({k: str(v) for k, v in params.items()})

    def metrics(self, metrics: Mapping[str, Any]) -> None:
        """Every numeric leaf of the metrics document."""
        self._mlflow.log_metrics(flat_metrics(metrics))

    def artifact(self, path: Path) -> None:
        """A file (model, metrics.json, plot)."""
        self._mlflow.log_artifact(str(path))

    def tag(self, key: str, value: str) -> None:
        """A tag, e.g. the gate's verdict."""
        self._mlflow.set_tag(key, value)
