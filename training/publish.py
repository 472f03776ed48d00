"""The quality gate and the push of a model (+ metrics and card) to the Hugging Face Hub."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    """Whether to publish, and why (the reason is printed and logged to MLflow)."""

    publish: bool
    reason: str


def gate(test_macro_f1: float, min_f1: float, push_requested: bool) -> GateDecision:
    """Publish only when asked to and test macro-F1 reaches ``min_f1``."""
    verdict = (
        f"test macro-F1 {test_macro_f1:.4f} {'>=' if test_macro_f1 >= min_f1 else '<'} --min-f1 {min_f1:.4f}"
    )
    if test_macro_f1 < min_f1:
        return GateDecision(False, f"not published: {verdict} (quality gate failed)")
    if not push_requested:
        return GateDecision(False, f"not published: {verdict} passes the gate, but --push was not given")
    return GateDecision(True, f"published: {verdict}")


def model_card(repo: str, metrics: dict[str, Any]) -> str:
    """A short README.md for the Hub repo, with the figures a user checks first."""
    test, val = metrics["test"], metrics["val"]
    rows = "\n".join(
        f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for label, m in test["per_class"].items()
    )
    params = ", ".join(f"`{k}={v}`" for k, v in sorted(metrics["hyperparameters"].items()))
    return f"""---
library_name: fasttext
pipeline_tag: text-classification
tags: [fasttext, sentiment, tweeteval]
datasets: [cardiffnlp/tweet_eval]
metrics: [recall, f1, accuracy]
---
# {repo}

fastText sentiment classifier (negative / neutral / positive) for social posts, trained on the
TweetEval sentiment train split, selected on validation, reported on test.
Texts must go through the project's `sentiment_model.normalize` before prediction.

| split | macro-recall | macro-F1 | accuracy |
| --- | --- | --- | --- |
| test | {test["macro_recall"]:.4f} | {test["macro_f1"]:.4f} | {test["accuracy"]:.4f} |
| val | {val["macro_recall"]:.4f} | {val["macro_f1"]:.4f} | {val["accuracy"]:.4f} |

Per class on test:

| class | precision | recall | F1 | support |
| --- | --- | --- | --- | --- |
{rows}

Model file `{metrics["model"]["file"]}`: {metrics["model"]["size_bytes"]:,} bytes, sha256
`{metrics["model"]["sha256"]}`. Hyper-parameters: {params}.
Trained from git commit `{metrics.get("git_commit") or "unknown"}`.
"""


def push_to_hub(
    repo: str,
    files: list[Path],
    metrics: dict[str, Any],
    token: str | None,
    endpoint: str | None = None,
    private: bool = False,
) -> str:
    """Upload the model, metrics.json, plot and a model card as one commit; returns the commit sha."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo, repo_type="model", exist_ok=True, private=private)
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging)
        for path in files:
            shutil.copy2(path, folder / path.name)
        (folder / "README.md").write_text(model_card(repo, metrics), encoding="utf-8")
        test = metrics["test"]
        info = api.upload_folder(
            repo_id=repo,
            folder_path=folder,
            commit_message=(
                f"model {metrics['model']['sha256'][:12]}: test macro-recall {test['macro_recall']:.4f}, "
                f"macro-F1 {test['macro_f1']:.4f}"
            ),
        )
    commit = str(info.oid)
    log.info("pushed %s to %s at %s", [p.name for p in files], repo, commit)
    return commit
