"""Hard deadlines: a fit that never returns is ended, a child that dies is reported at once, and the
search and the command go on with what finished.

fastText cannot be made to hang or crash on demand, so some tests replace ``train_supervised`` for one
marked candidate (by its ``epoch``); the child is forked, so it runs that replacement, while every other
candidate trains with the real fastText. One test ends a real autotune far below the time it needs.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import math
import os
import re
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import fasttext
import numpy as np
import pytest

from sentiment_model import Predictor
from sentiment_model.fasttext_scorer import FastTextScorer
from training import fasttext_train
from training import train as train_cli
from training.data import Dataset
from training.deadline import ChildDied, DeadlineExceeded, TimeLimit, run_with_deadline
from training.fasttext_train import TrainingError
from training.search import Candidate, autotune_candidate, confirm, run_search

GOOD = {"wordNgrams": 2, "epoch": 4, "dim": 16, "lr": 0.2, "bucket": 200_000}
#: Marker epochs the fake fastText recognises.
HANGS, SEGFAULTS, DIVERGES, GOES_NAN = 91, 92, 93, 94
REAL_TRAIN = fasttext.train_supervised


def sabotaged_train_supervised(**kwargs: Any) -> Any:
    """The real fastText, except for the marked candidates (and autotune, which hangs)."""
    epoch = kwargs.get("epoch")
    if epoch == HANGS or "autotuneValidationFile" in kwargs:
        while True:
            time.sleep(1)
    if epoch == SEGFAULTS:
        segfault()
    if epoch == DIVERGES:
        raise RuntimeError("Encountered NaN.")
    if epoch == GOES_NAN:
        model = REAL_TRAIN(**{**kwargs, "epoch": 1})
        model.set_matrices(np.full_like(model.get_input_matrix(), np.nan), model.get_output_matrix())
        return model
    return REAL_TRAIN(**kwargs)


@pytest.fixture
def sabotaged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fasttext_train.fasttext, "train_supervised", sabotaged_train_supervised)


def marked(epoch: int) -> Candidate:
    return Candidate({**GOOD, "epoch": epoch}, origin=f"marked {epoch}")


# --- the child process itself ----------------------------------------------------------------------------


def write_pid_and_hang(pid_file: Path) -> None:
    tempfile.mkstemp(prefix="left-behind-")  # into the job's scratch folder, which the parent removes
    pid_file.write_text(str(os.getpid()))
    while True:
        time.sleep(1)


def segfault() -> None:
    faulthandler.disable()  # the crash is the point: no 140-line dump of the forked test process
    os.kill(os.getpid(), signal.SIGSEGV)


def fail(message: str) -> None:
    raise TrainingError(message)


def scratch_of_this_job() -> str:
    return str(tempfile.gettempdir())


def test_a_job_that_never_returns_is_ended_at_its_deadline(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="the hang was still running at its 2s deadline and was ended"):
        run_with_deadline(write_pid_and_hang, (pid_file,), 2, "the hang")
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 6, elapsed
    with pytest.raises(ProcessLookupError):  # gone, not orphaned
        os.kill(int(pid_file.read_text()), 0)


def test_a_child_that_segfaults_is_reported_at_once_not_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(ChildDied, match=r"the crash died after .* without a result \(killed by SIGSEGV\)"):
        run_with_deadline(segfault, (), 120, "the crash")
    assert time.monotonic() - started < 10


def test_results_and_errors_come_back_and_the_scratch_folder_goes() -> None:
    scratch = run_with_deadline(scratch_of_this_job, (), 30, "a job")
    assert Path(scratch).name.startswith("sentiment-job-") and not Path(scratch).exists()
    with pytest.raises(TrainingError, match=r"^it diverged$"):
        run_with_deadline(fail, ("it diverged",), 30, "a job")


# --- the search --------------------------------------------------------------------------------------------


def test_a_real_autotune_is_ended_far_below_its_need(train_subset: Dataset, val_split: Dataset) -> None:
    messages: list[str] = []
    started = time.monotonic()
    tuned = autotune_candidate(train_subset, val_split, 120, 1, messages.append, deadline=3)
    assert tuned is None
    assert time.monotonic() - started < 10
    assert messages[-1] == (
        "fastText autotune was still running at its 3s deadline and was ended: "
        "its candidate is dropped, the search goes on without it"
    )


@pytest.mark.usefixtures("sabotaged")
def test_children_that_hang_crash_or_diverge_drop_only_their_candidate(
    train_subset: Dataset, val_split: Dataset
) -> None:
    """Named candidates may use the whole time limit; each bad one is dropped with one line."""
    good = Candidate(GOOD, origin="default recipe")
    seeds = [marked(SEGFAULTS), marked(DIVERGES), marked(GOES_NAN), good, marked(HANGS)]
    messages: list[str] = []
    limit = TimeLimit.from_now(0, margin=30, finish_reserve=0)
    started = time.monotonic()
    result = run_search(
        train_subset.head(2_000), val_split, 0, 1, 0, messages.append, seeds=seeds, limit=limit
    )
    assert 30 <= time.monotonic() - started < 35  # the hanging fit had the rest of the limit, no more
    assert result.best.candidate == good and [t.candidate for t in result.trials] == [good]
    dropped = [m for m in messages if " dropped: " in m]
    assert len(dropped) == 4, messages
    assert "(marked 92) dropped: the fit died after" in dropped[0] and "killed by SIGSEGV" in dropped[0]
    assert "(marked 93) dropped: fastText failed with" in dropped[1] and "Encountered NaN" in dropped[1]
    assert "(marked 94) dropped: the trained model cannot score val" in dropped[2]
    assert "(marked 91) dropped: the fit was still running at its" in dropped[3]
    # The published model is the one that finished, loaded back from the child's file.
    assert (
        len(Predictor(FastTextScorer(result.best_model), Path("<best>")).predict(["a fine day"]).label_ids)
        == 1
    )


@pytest.mark.usefixtures("sabotaged")
def test_a_soup_past_the_time_limit_is_dropped_and_the_best_single_run_stands_in(
    train_subset: Dataset, val_split: Dataset
) -> None:
    data = train_subset.head(3_000)
    good = Candidate(GOOD, origin="default recipe")
    messages: list[str] = []
    result = confirm(
        [], [good, marked(HANGS)], data, val_split, 2, 1, 0, messages.append, 0.95,
        limit=TimeLimit.from_now(0, margin=15, finish_reserve=0),
    )  # fmt: skip
    assert result.best.candidate == good and len(result.confirmed) == 1
    assert "soup 2/2 dropped: the soup was still running at its" in messages[-1]
    assert "min left of the time limit" in messages[-1]

    fallback = object()
    result = confirm(
        [], [marked(SEGFAULTS)], data, val_split, 2, 1, 0, messages.append, 0.95,
        limit=TimeLimit.from_now(0, margin=15, finish_reserve=0), fallback=fallback,
    )  # fmt: skip
    assert result.best_model is fallback and result.confirmed == []
    assert "killed by SIGSEGV" in messages[-2]
    assert messages[-1] == "no soup finished: the result is the best single run"


# --- the command -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("sabotaged")
def test_the_command_ends_a_hung_autotune_and_publishes_the_best_finished_candidate(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    caplog.set_level(logging.INFO, logger="training")
    budget, margin = 20, 60
    args = [
        *("--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out")),
        *("--mlflow-dir", str(tmp_path / "mlruns"), "--pretrained-vectors", "none"),
        *("--autotune-duration", str(budget), "--fasttext-autotune-share", "0.4"),
        *("--time-margin", str(margin)),
        *("--train-limit", "3000", "--threads", "1", "--epoch", "4", "--dim", "16", "--bucket", "200000"),
        *("--wordNgrams", "2", "--minn", "0", "--maxn", "0", "--soup-members", "1"),
    ]  # fmt: skip
    started = time.monotonic()
    assert train_cli.main(args) == 0, caplog.text
    elapsed = time.monotonic() - started
    assert elapsed < budget + margin, elapsed
    # Autotune's share is 10 s (its minimum); its child may run half as long again for the final fit (less
    # when the search budget ends first), then it is ended.
    assert "fastText autotune for 10s (its metric: F1 on val), ended after" in caplog.text
    assert re.search(
        r"fastText autotune was still running at its 1[0-5]s deadline and was ended: its candidate is "
        "dropped, the search goes on without it",
        caplog.text,
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["search"]["time_limit_seconds"] == budget + margin
    assert metrics["search"]["best_origin"] in {"manual", "random"}
    assert metrics["search"]["trials"] >= 1 and not math.isnan(metrics["test"]["macro_recall"])
    assert "min of the 1.3 min time limit" in caplog.text
