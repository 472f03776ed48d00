"""Runs the training CLI the way a user does; shared by the training test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def train(
    tmp: Path, data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the training CLI in its own process, as a user would."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(tmp / "out"),
            "--mlflow-dir",
            str(tmp / "mlruns"),
            *args,
        ],
        # No GloVe download in tests: tests/test_pretrained.py covers vectors with a local .vec file.
        env={**os.environ, "MLFLOW_TRACKING_URI": "", "PRETRAINED_VECTORS": "none", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
