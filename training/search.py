"""Time-budgeted hyper-parameter search, judged by validation macro-recall.

fastText's own autotune optimises plain F1 (= accuracy for single-label data) and cannot weigh classes,
while TweetEval's metric is macro-recall and its test split has twice the share of negatives. So the
search is ours: fastText autotune contributes one candidate (its best settings), a seeded random search
over a space that includes class oversampling contributes the rest, and every candidate is scored by
macro-recall on the validation split. Test data never enters this module.

One run's val score moves with the seed about as much as the best candidates differ, so the best
single run of a long search is partly luck. With ``soup_members`` > 1 the search ends by confirming a
shortlist (the named candidates and the best other ones): each is re-trained as a soup
(:mod:`training.soup`), and the best soup by val replaces the named candidate only when a paired
bootstrap on val is confident it is better (:func:`confirm`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fasttext

from training.data import Dataset
from training.fasttext_train import (
    TrainingError,
    fit,
    labelled_lines,
    predict_ids,
    training_file,
    use_fresh_memory_for_large_buffers,
    vectors_dim,
)
from training.metrics import IntArray, macro_recall, paired_bootstrap_win_rate
from training.soup import train_soup

Progress = Callable[[str], None]

#: fastText parameters the search may set (and that --manual flags may override).
PARAM_NAMES = ("epoch", "lr", "dim", "wordNgrams", "minn", "maxn", "bucket", "loss", "minCount")


@dataclass(frozen=True)
class Candidate:
    """fastText parameters plus per-class oversampling factors for the training file."""

    params: Mapping[str, Any]
    oversample: Mapping[str, float] = field(default_factory=dict)
    origin: str = "random"

    def describe(self) -> str:
        """Compact one-line form for progress output."""
        keys = " ".join(
            f"{k}={Path(v).name if k == 'pretrainedVectors' else v}" for k, v in self.params.items()
        )
        boost = " ".join(f"{k}x{v}" for k, v in self.oversample.items() if v != 1.0)
        return f"{keys}{' oversample ' + boost if boost else ''} ({self.origin})"


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate."""

    candidate: Candidate
    val_macro_recall: float
    seconds: float
    members: int = 1
    val_predictions: IntArray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SearchResult:
    """All single-run trials and confirmed soups (each best first) and the winner's trained model, kept
    so the model we publish is the one that was measured (multi-threaded fastText does not retrain to
    the same weights)."""

    trials: list[Trial]
    best_model: Any
    confirmed: list[Trial] = field(default_factory=list)
    chosen: Trial | None = None
    #: How the best soup by val fared against the named candidate's soup (None: no contest).
    contest: Contest | None = None

    @property
    def best(self) -> Trial:
        """The winning trial: the chosen soup when the shortlist was confirmed, else the best run."""
        return self.chosen or (self.confirmed[0] if self.confirmed else self.trials[0])


@dataclass(frozen=True)
class Contest:
    """The best soup by val against the named candidate's soup, judged by a paired bootstrap on val."""

    challenger: Trial
    incumbent: Trial
    win_rate: float
    confidence: float

    @property
    def challenger_wins(self) -> bool:
        """Whether the challenger was better in at least ``confidence`` of the resamples."""
        return self.win_rate >= self.confidence

    def describe(self) -> str:
        """One progress line: the scores, the bootstrap's verdict and the outcome."""
        name = self.incumbent.candidate.origin
        outcome = f"it replaces the {name}" if self.challenger_wins else f"keeping the {name}"
        return (
            f"best soup {self.challenger.val_macro_recall:.4f} vs the {name} "
            f"{self.incumbent.val_macro_recall:.4f} on val: better in {self.win_rate:.0%} of 1,000 paired "
            f"bootstrap resamples (needs {self.confidence:.0%}): {outcome}"
        )


def sample_candidate(rng: random.Random, vectors: Mapping[str, Any] | None = None) -> Candidate:
    """Draw from the search space (log-uniform where the scale matters).

    With pretrained ``vectors`` (fastText's ``pretrainedVectors`` and the matching ``dim``) the space is
    word-only models that stay near their starting point (few epochs, small learning rates): that is
    where the measured gains were (README, "Model quality").
    """
    if vectors is not None:
        return Candidate(
            {
                "epoch": rng.choice([3, 4, 5, 6, 8]),
                "lr": round(math.exp(rng.uniform(math.log(0.02), math.log(0.125))), 4),
                "dim": vectors["dim"],
                "wordNgrams": rng.choice([2, 3]),
                "minn": 0,
                "maxn": 0,
                "bucket": 1_000_000,
                "loss": rng.choice(["ova", "softmax"]),
                "pretrainedVectors": vectors["pretrainedVectors"],
            },
            {"negative": round(rng.uniform(2.0, 3.5), 2), "positive": round(rng.uniform(0.9, 1.3), 2)},
        )
    minn, maxn = rng.choice([(0, 0), (2, 4), (3, 5), (3, 6)])
    char_ngrams = maxn > 0
    word_ngrams = rng.choice([2, 2, 3]) if not char_ngrams else rng.choice([1, 2, 2, 3])
    params: dict[str, Any] = {
        "epoch": round(math.exp(rng.uniform(math.log(3), math.log(20 if char_ngrams else 35)))),
        "lr": round(math.exp(rng.uniform(math.log(0.05), math.log(0.8))), 4),
        "dim": rng.choice([16, 32, 50, 100]),
        "wordNgrams": word_ngrams,
        "minn": minn,
        "maxn": maxn,
        "bucket": rng.choice([500_000, 1_000_000, 2_000_000]),
        "loss": rng.choice(["softmax", "softmax", "ova"]),
    }
    oversample = {"negative": round(rng.uniform(1.0, 3.0), 2), "positive": round(rng.choice([1.0, 1.2]), 2)}
    return Candidate(params, oversample)


def autotune_candidate(
    train: Dataset, val: Dataset, seconds: int, threads: int, progress: Progress
) -> Candidate | None:
    """fastText's autotune (F1 on val) for ``seconds``; returns its settings as a candidate."""
    progress(f"fastText autotune for {seconds}s (its metric: F1 on val)")
    use_fresh_memory_for_large_buffers()
    with training_file(labelled_lines(train)) as train_file, training_file(labelled_lines(val)) as val_file:
        try:
            model = fasttext.train_supervised(
                input=str(train_file),
                autotuneValidationFile=str(val_file),
                autotuneDuration=seconds,
                thread=threads,
                verbose=0,
            )
        except (RuntimeError, ValueError) as exc:  # seen: "Encountered NaN" in its final training
            progress(f"fastText autotune failed ({exc}); the random search goes on without its candidate")
            return None
    args = model.f.getArgs()
    params = {name: getattr(args, name) for name in PARAM_NAMES if hasattr(args, name)}
    params["loss"] = str(params["loss"]).rsplit(".", 1)[-1]
    return Candidate({k: v for k, v in params.items() if k != "minCount"}, origin="fasttext-autotune")


def run_search(
    train: Dataset,
    val: Dataset,
    budget_seconds: float,
    threads: int,
    seed: int,
    progress: Progress,
    autotune_share: float = 0.0,
    seeds: list[Candidate] | None = None,
    vectors: str | None = None,
    soup_members: int = 1,
    shortlist: int = 3,
    confidence: float = 0.95,
) -> SearchResult:
    """Evaluate candidates until ``budget_seconds`` run out; returns trials, best first.

    ``seeds`` (the default recipe or the manual flags) are evaluated first, then fastText autotune's
    pick when ``autotune_share`` > 0, then random draws while the budget lasts. Seeds and autotune's
    pick are always evaluated, even when that overruns the budget: a slow machine must not silently
    drop the candidate the user named. A trial that diverges is logged and skipped. With pretrained
    ``vectors`` the random draws come from the word-only space around them (:func:`sample_candidate`).

    With ``soup_members`` > 1 the named ``seeds`` and the ``shortlist`` best other candidates are then
    re-trained as soups and judged again (:func:`confirm`); the random draws stop early enough to leave
    time for that, estimated from the mean trial time. The first seed is the incumbent: another soup
    replaces it only when it has the higher val macro-recall in at least ``confidence`` of 1,000 paired
    bootstrap resamples of val (0 turns that off: the best soup by val wins).
    """
    deadline = time.monotonic() + budget_seconds
    confirmations = (len(seeds or []) + shortlist) * soup_members if soup_members > 1 else 0
    rng = random.Random(seed)
    space = {"pretrainedVectors": vectors, "dim": vectors_dim(Path(vectors))} if vectors else None
    queue = list(seeds or [])
    trials: list[Trial] = []
    best_model: Any = None
    autotune_pending = autotune_share > 0

    def draws_end() -> float:
        """When random draws must stop to leave the soups their time (re-estimated after each trial)."""
        return deadline - confirmations * _mean_seconds(trials)

    while queue or autotune_pending or time.monotonic() < draws_end():
        if not queue and autotune_pending:
            autotune_pending = False
            seconds = max(10, int(budget_seconds * autotune_share))
            tuned = autotune_candidate(train, val, seconds, threads, progress)
            if tuned is not None:
                queue.append(tuned)
            continue
        candidate = queue.pop(0) if queue else sample_candidate(rng, space)
        try:
            trial, model = _scored(candidate, val, 1, lambda c: _single_run(train, c, threads, seed))
        except TrainingError as exc:
            progress(f"trial {len(trials) + 1} skipped: {exc}")
            continue
        if _improves(trial, trials):
            best_model = model
        trials.append(trial)
        best = max(trials, key=lambda t: t.val_macro_recall)
        left = max(0.0, draws_end() - time.monotonic())
        progress(
            f"trial {len(trials):3d} ({candidate.origin}): val macro-recall {trial.val_macro_recall:.4f} in "
            f"{trial.seconds:5.1f}s | best {best.val_macro_recall:.4f} | {left / 60:4.1f} min left"
            + (" before the soups" if confirmations else "")
        )
    if not trials:
        raise TrainingError(
            "the search budget ran out before any candidate finished: raise --autotune-duration"
        )
    ranked = sorted(trials, key=lambda t: t.val_macro_recall, reverse=True)
    if soup_members <= 1:
        return SearchResult(ranked, best_model)
    best_model = None  # free the single run (hundreds of MB with vectors) before training soups
    named = list(seeds or [])
    others = [t.candidate for t in ranked if t.candidate not in named][:shortlist]
    # The first named seed is the incumbent; without seeds there is none (confidence 0: no contest).
    confidence = confidence if named else 0.0
    return confirm(ranked, named + others, train, val, soup_members, threads, seed, progress, confidence)


def confirm(
    trials: list[Trial],
    shortlist: list[Candidate],
    train: Dataset,
    val: Dataset,
    members: int,
    threads: int,
    seed: int,
    progress: Progress,
    confidence: float,
) -> SearchResult:
    """Re-train each shortlisted candidate as a soup of ``members`` runs, score it on val and choose.

    With ``confidence`` > 0, ``shortlist[0]`` is the incumbent (the default recipe or the manual flags):
    the best soup by val replaces it only when a paired bootstrap on val says so with ``confidence``. One
    run's val score moves by about 0.004 with the seed, as much as good candidates differ, so a small lead
    on 2,000 rows is not evidence.
    """
    confirmed: list[Trial] = []
    models: dict[int, Any] = {}  # only the incumbent's and the best soup's, by index in ``confirmed``
    incumbent: int | None = None
    best: int | None = None
    for number, candidate in enumerate(shortlist, 1):
        try:
            trial, model = _scored(
                candidate,
                val,
                members,
                lambda c: train_soup(train, c.params, c.oversample, members, threads, seed),
            )
        except TrainingError as exc:
            progress(f"soup {number}/{len(shortlist)} skipped: {exc}")
            continue
        index = len(confirmed)
        confirmed.append(trial)
        if number == 1 and confidence > 0:
            incumbent, models[index] = index, model
        if best is None or trial.val_macro_recall > confirmed[best].val_macro_recall:
            if best is not None and best != incumbent:
                del models[best]
            best, models[index] = index, model
        progress(
            f"soup {number}/{len(shortlist)} of {members} runs: val macro-recall {trial.val_macro_recall:.4f}"
            f" in {trial.seconds:5.1f}s | {candidate.describe()}"
        )
    if best is None:
        raise TrainingError("no shortlisted candidate could be trained as a soup")
    chosen, contest = best, None
    if incumbent is not None and best != incumbent:
        contest = _contest(confirmed[best], confirmed[incumbent], val, confidence, seed)
        progress(contest.describe())
        if not contest.challenger_wins:
            chosen = incumbent
    ranked = sorted(confirmed, key=lambda t: t.val_macro_recall, reverse=True)
    return SearchResult(trials, models[chosen], ranked, confirmed[chosen], contest)


def _contest(challenger: Trial, incumbent: Trial, val: Dataset, confidence: float, seed: int) -> Contest:
    if challenger.val_predictions is None or incumbent.val_predictions is None:
        raise TrainingError("a soup was scored without keeping its val predictions")  # pragma: no cover
    rate = paired_bootstrap_win_rate(
        val.labels, challenger.val_predictions, incumbent.val_predictions, seed=seed
    )
    return Contest(challenger, incumbent, rate, confidence)


def _single_run(train: Dataset, candidate: Candidate, threads: int, seed: int) -> Any:
    with training_file(labelled_lines(train, candidate.oversample, seed=seed)) as train_file:
        return fit(train_file, candidate.params, threads=threads, seed=seed)


def _scored(
    candidate: Candidate, val: Dataset, members: int, train_model: Callable[[Candidate], Any]
) -> tuple[Trial, Any]:
    """Train (may raise :class:`TrainingError`), then score on val; the trial and the model."""
    started = time.monotonic()
    model = train_model(candidate)
    try:
        predictions = predict_ids(model, val)
    except (RuntimeError, ValueError) as exc:  # seen: weights that went NaN without fastText noticing
        raise TrainingError(f"the trained model cannot score val ({exc}): {candidate.describe()}") from exc
    score = macro_recall(val.labels, predictions)
    return Trial(candidate, score, time.monotonic() - started, members, predictions), model


def _improves(trial: Trial, earlier: list[Trial]) -> bool:
    return not earlier or trial.val_macro_recall > max(t.val_macro_recall for t in earlier)


def _mean_seconds(trials: list[Trial]) -> float:
    return sum(t.seconds for t in trials) / len(trials) if trials else 0.0
