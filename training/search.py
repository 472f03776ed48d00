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

Every fit, soup and fastText autotune runs in a child process with a hard deadline
(:mod:`training.deadline`): one that runs past it is ended and dropped with one progress line, so the
search, and the command, end within their :class:`~training.deadline.TimeLimit` whatever fastText does.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from training.data import Dataset
from training.deadline import DeadlineExceeded, TimeLimit, run_with_deadline
from training.fasttext_train import TrainingError, load, vectors_dim
from training.jobs import Scored, autotune_params, train_and_score
from training.metrics import IntArray, paired_bootstrap_win_rate

Progress = Callable[[str], None]

#: The whole command may run this long past its search budget (``--time-margin``): the named candidate's
#: soup, quantizing and measuring, with room for a busy machine (times in docs/results.md).
DEFAULT_MARGIN_SECONDS: Final = 600
#: Kept free at the end of the time limit for quantizing, measuring and logging the chosen model, with
#: room for a busy machine.
FINISH_RESERVE_SECONDS: Final = 60
#: fastText autotune's child may run this share of its search time longer: its final re-training with
#: the settings it picked has no limit of its own, and a pick that cannot retrain in that time would not
#: fit the budget as a trial and soup either.
AUTOTUNE_FINAL_FIT_SHARE: Final = 0.5

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
    where the measured gains were (docs/results.md, "Model quality").
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
    train: Dataset, val: Dataset, seconds: int, threads: int, progress: Progress, deadline: float
) -> Candidate | None:
    """fastText's autotune (F1 on val) for ``seconds`` in a child process ended ``deadline`` seconds
    from now; its settings as a candidate, or None (with one progress line) when it did not finish."""
    if deadline < 1:
        progress("no time left for fastText autotune: its candidate is dropped")
        return None
    progress(f"fastText autotune for {seconds}s (its metric: F1 on val), ended after {deadline:.0f}s at most")
    try:
        params = run_with_deadline(
            autotune_params, (train, val, seconds, threads), deadline, "fastText autotune"
        )
    except TrainingError as exc:
        progress(f"{exc}: its candidate is dropped, the search goes on without it")
        return None
    return Candidate(params, origin="fasttext-autotune")


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
    limit: TimeLimit | None = None,
) -> SearchResult:
    """Evaluate candidates until ``budget_seconds`` run out; returns trials, best first.

    ``seeds`` (the default recipe or the manual flags) are evaluated first, then fastText autotune's
    pick when ``autotune_share`` > 0, then random draws while the budget lasts. A trial that diverges,
    dies or runs past its deadline is logged and skipped. With pretrained ``vectors`` the random draws
    come from the word-only space around them (:func:`sample_candidate`).

    Deadlines (``limit``, default: the budget plus :data:`DEFAULT_MARGIN_SECONDS` from now): the seeds
    may train until ``limit.fits_end`` (a slow machine must not silently drop the candidate the user
    named); autotune gets its share plus :data:`AUTOTUNE_FINAL_FIT_SHARE` of it, and it, its pick and the
    random draws all end with the budget.

    With ``soup_members`` > 1 the named ``seeds`` and the ``shortlist`` best other candidates are then
    re-trained as soups and judged again (:func:`confirm`); the random draws stop early enough to leave
    time for that, estimated from the mean trial time. The first seed is the incumbent: another soup
    replaces it only when it has the higher val macro-recall in at least ``confidence`` of 1,000 paired
    bootstrap resamples of val (0 turns that off: the best soup by val wins). When no soup finishes, the
    best single run is the result.
    """
    limit = limit or TimeLimit.from_now(budget_seconds, DEFAULT_MARGIN_SECONDS, FINISH_RESERVE_SECONDS)
    confirmations = (len(seeds or []) + shortlist) * soup_members if soup_members > 1 else 0
    rng = random.Random(seed)
    space = {"pretrainedVectors": vectors, "dim": vectors_dim(Path(vectors))} if vectors else None
    named = list(seeds or [])
    queue = list(named)
    trials: list[Trial] = []
    autotune_pending = autotune_share > 0

    def draws_end() -> float:
        """When random draws must stop to leave the soups their time (re-estimated after each trial)."""
        return limit.search_end - confirmations * _mean_seconds(trials)

    def time_left() -> str:
        """The search's time left (before the soups, when there are any) and the whole limit's."""
        search = f"{limit.left(draws_end()) / 60:4.1f} min left{' before the soups' if confirmations else ''}"
        return f"{search}, {(limit.hard_end - time.monotonic()) / 60:.1f} min of the time limit"

    with tempfile.TemporaryDirectory(prefix="sentiment-search-") as scratch:
        best_file = Path(scratch) / "best-single-run.bin"
        while queue or autotune_pending or time.monotonic() < draws_end():
            if not queue and autotune_pending:
                autotune_pending = False
                seconds = max(10, int(budget_seconds * autotune_share))
                allowed = min(seconds * (1 + AUTOTUNE_FINAL_FIT_SHARE), limit.left(limit.search_end))
                tuned = autotune_candidate(train, val, seconds, threads, progress, allowed)
                if tuned is not None:
                    queue.append(tuned)
                continue
            candidate = queue.pop(0) if queue else sample_candidate(rng, space)
            # The named seeds may use the margin; everything else ends with the budget.
            until = limit.fits_end if candidate in named else min(limit.search_end, limit.fits_end)
            best_so_far = max((t.val_macro_recall for t in trials), default=-math.inf)
            number = len(trials) + 1
            out = Path(scratch) / f"trial-{number}.bin"  # a fresh file: a killed child may leave half of it
            try:
                trial, saved = _scored(
                    candidate, train, val, 1, threads, seed, out, best_so_far, limit, until
                )
            except TrainingError as exc:
                progress(f"trial {number} ({candidate.origin}) dropped: {exc} | {time_left()}")
                continue
            if saved:  # it beat every earlier trial
                out.replace(best_file)
            trials.append(trial)
            best = max(trials, key=lambda t: t.val_macro_recall)
            progress(
                f"trial {len(trials):3d} ({candidate.origin}): val macro-recall {trial.val_macro_recall:.4f}"
                f" in {trial.seconds:5.1f}s | best {best.val_macro_recall:.4f} | {time_left()}"
            )
        if not trials:
            raise TrainingError(
                "no candidate finished within the time limit: raise --autotune-duration or --time-margin"
            )
        ranked = sorted(trials, key=lambda t: t.val_macro_recall, reverse=True)
        best_single_run = load(best_file)  # the best trial's model (saved by the trial that set the best)
        if soup_members <= 1:
            return SearchResult(ranked, best_single_run)
        others = [t.candidate for t in ranked if t.candidate not in named][:shortlist]
        # The first named seed is the incumbent; without seeds there is none (confidence 0: no contest).
        confidence = confidence if named else 0.0
        return confirm(
            ranked,
            named + others,
            train,
            val,
            soup_members,
            threads,
            seed,
            progress,
            confidence,
            limit=limit,
            fallback=best_single_run,
        )


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
    limit: TimeLimit | None = None,
    fallback: Any = None,
) -> SearchResult:
    """Re-train each shortlisted candidate as a soup of ``members`` runs, score it on val and choose.

    With ``confidence`` > 0, ``shortlist[0]`` is the incumbent (the default recipe or the manual flags):
    the best soup by val replaces it only when a paired bootstrap on val says so with ``confidence``. One
    run's val score moves by about 0.004 with the seed, as much as good candidates differ, so a small lead
    on 2,000 rows is not evidence.

    Each soup trains in a child process that must finish by ``limit.fits_end`` (default: the search
    budget's margin from now); one that does not is dropped. When none finishes, ``fallback`` (the best
    single run) is the result, and without one that is a :class:`TrainingError`.
    """
    limit = limit or TimeLimit.from_now(0, DEFAULT_MARGIN_SECONDS, FINISH_RESERVE_SECONDS)
    confirmed: list[Trial] = []
    incumbent: int | None = None
    best: int | None = None
    with tempfile.TemporaryDirectory(prefix="sentiment-soups-") as scratch:
        # Only the incumbent's and the best soup's files are kept, by index in ``confirmed``.
        files: dict[int, Path] = {}
        for number, candidate in enumerate(shortlist, 1):
            out = Path(scratch) / f"soup-{number}.bin"
            try:
                trial, _ = _scored(candidate, train, val, members, threads, seed, out, -math.inf, limit)
            except TrainingError as exc:
                progress(
                    f"soup {number}/{len(shortlist)} dropped: {exc} | "
                    f"{limit.left() / 60:4.1f} min left of the time limit"
                )
                continue
            index = len(confirmed)
            confirmed.append(trial)
            files[index] = out
            if number == 1 and confidence > 0:
                incumbent = index
            if best is None or trial.val_macro_recall > confirmed[best].val_macro_recall:
                if best is not None and best != incumbent:
                    files.pop(best).unlink()
                best = index
            elif index != incumbent:
                files.pop(index).unlink()
            progress(
                f"soup {number}/{len(shortlist)} of {members} runs: val macro-recall "
                f"{trial.val_macro_recall:.4f} in {trial.seconds:5.1f}s | "
                f"{limit.left() / 60:4.1f} min left of the time limit | {candidate.describe()}"
            )
        if best is None:
            if fallback is None:
                raise TrainingError("no shortlisted candidate could be trained as a soup in time")
            progress("no soup finished: the result is the best single run")
            return SearchResult(trials, fallback)
        chosen, contest = best, None
        if incumbent is not None and best != incumbent:
            contest = _contest(confirmed[best], confirmed[incumbent], val, confidence, seed)
            progress(contest.describe())
            if not contest.challenger_wins:
                chosen = incumbent
        ranked = sorted(confirmed, key=lambda t: t.val_macro_recall, reverse=True)
        return SearchResult(trials, load(files[chosen]), ranked, confirmed[chosen], contest)


def _contest(challenger: Trial, incumbent: Trial, val: Dataset, confidence: float, seed: int) -> Contest:
    if challenger.val_predictions is None or incumbent.val_predictions is None:
        raise TrainingError("a soup was scored without keeping its val predictions")  # pragma: no cover
    rate = paired_bootstrap_win_rate(
        val.labels, challenger.val_predictions, incumbent.val_predictions, seed=seed
    )
    return Contest(challenger, incumbent, rate, confidence)


def _scored(
    candidate: Candidate,
    train: Dataset,
    val: Dataset,
    members: int,
    threads: int,
    seed: int,
    out: Path,
    save_above: float,
    limit: TimeLimit,
    until: float | None = None,
) -> tuple[Trial, bool]:
    """Train ``members`` runs of ``candidate`` in a child process that must finish by ``until`` (default
    ``limit.fits_end``) and score them on val; the model goes to ``out`` when its score beats
    ``save_above`` (then the flag returned is True). Raises :class:`TrainingError` (with the candidate
    named) when it does not finish."""
    seconds = limit.left(until)
    what = "the soup" if members > 1 else "the fit"
    if seconds < 1:
        raise DeadlineExceeded(f"no time left for {what}: {candidate.describe()}")
    started = time.monotonic()
    job = (train, val, candidate.params, candidate.oversample, members, threads, seed, out, save_above)
    try:
        scored: Scored = run_with_deadline(train_and_score, job, seconds, what)
    except TrainingError as exc:
        raise type(exc)(f"{exc}: {candidate.describe()}") from exc
    elapsed = time.monotonic() - started
    return Trial(candidate, scored.val_macro_recall, elapsed, members, scored.val_predictions), scored.saved


def _mean_seconds(trials: list[Trial]) -> float:
    return sum(t.seconds for t in trials) / len(trials) if trials else 0.0
