"""`python -m training.report` on a real MLflow sqlite store: two real trainings plus edge-case runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from training import report
from worker.ports import free_port

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "sentiment-fasttext"
#: Two small real trainings with different settings, so their numbers differ.
REAL_RUNS = {
    "first": ["--train-limit", "3000", "--epoch", "5", "--dim", "16"],
    "second": ["--train-limit", "5000", "--epoch", "10", "--dim", "16"],
}
COMMON = [
    "--autotune-duration",
    "0",
    "--threads",
    "2",
    "--lr",
    "0.5",
    "--bucket",
    "200000",
    "--min-f1",
    "0.3",
]
PUBLISHED_SHA = "ab" * 32
PUBLISHED_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def uri_of(store: Path) -> str:
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without MLflow settings leaking in from the caller (and no GloVe download)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "PRETRAINED_VECTORS": "none", **extra}


def log_tracker_runs(store: str) -> None:
    """Runs the way the project logs them (``Tracker``), plus a running and a back-dated one.

    Runs in its own process (see the fixture): ``Tracker`` sets MLflow's process-wide tracking URI.
    """
    from mlflow.tracking import MlflowClient

    from training.tracking import Tracker, default_tracking_uri, flat_metrics

    folder = Path(store)
    tracker = Tracker(default_tracking_uri(folder), folder, EXPERIMENT)
    metrics = {
        "test": {"macro_recall": 0.671, "macro_f1": 0.652, "accuracy": 0.6603, "n": 12284},
        "val": {"macro_recall": 0.7102, "macro_f1": 0.69, "accuracy": 0.70, "n": 2000},
        "model": {"file": "sentiment_ft.ftz", "size_bytes": 1_390_123, "sha256": PUBLISHED_SHA},
        "search": {"budget_seconds": 900, "trials": 97, "seconds_total": 918.3},
    }
    ids: dict[str, str] = {}
    with tracker.run("train-published", {"git_commit": PUBLISHED_COMMIT}):
        tracker.params({"dim": 16, "trials": 97})
        tracker.metrics(metrics)
        document = folder / "metrics.json"
        document.write_text(json.dumps(metrics), encoding="utf-8")
        tracker.artifact(document)
        tracker.tag("gate", "published: test macro-F1 0.6520 >= --min-f1 0.6000")
        tracker.tag("hub_commit", "acme/sentiment-model@deadbeef")
        ids["published"] = str(tracker.run_id)
    try:
        with tracker.run("train-crashed", {"git_commit": PUBLISHED_COMMIT}):
            ids["failed"] = str(tracker.run_id)
            tracker.metrics({"test": {"macro_recall": 0.99, "macro_f1": 0.99}})  # must not become "best"
            raise RuntimeError("killed mid-way")
    except RuntimeError:
        pass
    with tracker.run("train-error", {"git_commit": PUBLISHED_COMMIT}):
        ids["training_error"] = str(tracker.run_id)
        tracker.tag("status", "failed: fastText could not read the training file")

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    experiment_id = experiment.experiment_id
    running = client.create_run(experiment_id, run_name="train-running")
    client.log_metric(running.info.run_id, "test.macro_recall", 0.98)
    ids["running"] = running.info.run_id
    # Logged now but started a day ago: the table must put it first (order = start time, not insertion).
    yesterday = int(time.time() * 1000) - 86_400_000
    old = client.create_run(experiment_id, start_time=yesterday, run_name="train-yesterday")
    for key, value in flat_metrics(
        {"test": {"macro_recall": 0.55, "macro_f1": 0.541, "accuracy": 0.562}, "val": {"macro_recall": 0.6}}
    ).items():
        client.log_metric(old.info.run_id, key, value)
    client.set_terminated(old.info.run_id, "FINISHED", end_time=yesterday + 60_000)
    ids["yesterday"] = old.info.run_id
    print(json.dumps(ids))


def train(tmp: Path, out: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--data-dir",
            str(Path(os.environ.get("TWEETEVAL_DIR") or REPO.parent / "shared/data/tweeteval-sentiment")),
            "--output-dir",
            str(tmp / out),
            "--mlflow-dir",
            str(tmp / "mlruns"),
            *COMMON,
            *args,
        ],
        env=clean_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_ids(store: Path) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri_of(store))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return {run.info.run_id for run in client.search_runs([experiment.experiment_id])}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    """The store (``tmp/mlruns``), the run ids by role and the real runs' metrics.json documents."""
    del data_dir  # only its check that the data exists (fails, never skips)
    tmp = tmp_path_factory.mktemp("report")
    ids: dict[str, str] = {}
    documents: dict[str, dict[str, Any]] = {}
    for role, args in REAL_RUNS.items():
        before = run_ids(tmp / "mlruns") if (tmp / "mlruns" / "mlflow.db").exists() else set()
        done = train(tmp, role, args)
        assert done.returncode == 0, done.stderr
        (ids[role],) = run_ids(tmp / "mlruns") - before
        documents[role] = json.loads((tmp / role / "metrics.json").read_text())
    logged = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tests.test_training_report as t; t.log_tracker_runs(sys.argv[1])",
            str(tmp / "mlruns"),
        ],
        env=clean_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert logged.returncode == 0, logged.stderr
    ids.update(json.loads(logged.stdout.strip().splitlines()[-1]))
    return {"dir": tmp / "mlruns", "ids": ids, "documents": documents}


def run_report(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """``training.report.main`` in this process, without a caller's MLFLOW_TRACKING_URI."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = report.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def logged_runs(store: dict[str, Any]) -> dict[str, Any]:
    """The MLflow runs by role, read straight from the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri_of(store["dir"]))
    return {role: client.get_run(run_id) for role, run_id in store["ids"].items()}


#: Finished runs in start order; the failed, errored and running ones come after and are not listed.
TABLE_ORDER = ["yesterday", "first", "second", "published"]


def expected_cells(runs: dict[str, Any], store: dict[str, Any]) -> list[list[str]]:
    """The table's rows, computed here from the raw MLflow runs (not by the report's own code)."""
    rows: list[list[str]] = []
    previous: dict[str, float] | None = None
    recalls = [runs[role].data.metrics["test.macro_recall"] for role in TABLE_ORDER]
    for role in TABLE_ORDER:
        run = runs[role]
        m, tags = run.data.metrics, run.data.tags
        commit = tags.get("git_commit", "")
        short_commit = (commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")) if commit else "-"
        sha = (
            store["documents"][role]["model"]["sha256"][:12]
            if role in store["documents"]
            else PUBLISHED_SHA[:12]
            if role == "published"
            else "-"
        )
        published = {"published": "yes", "yesterday": "-"}.get(role, "no")

        def change(key: str, m: dict[str, float] = m, previous: dict[str, float] | None = previous) -> str:
            return "-" if previous is None else f"{m[key] - previous[key]:+.4f}"

        size = f"{m['model.size_bytes'] / 1e6:.2f} MB" if "model.size_bytes" in m else "-"
        trials = str(int(m["search.trials"])) if "search.trials" in m else "-"
        whole = round(m.get("search.seconds_total", -1))
        took = "-" if whole < 0 else f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"
        start = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
        cells = [
            f"{start:%Y-%m-%d %H:%M:%S}",
            run.info.run_id[:8],
            short_commit,
            sha,
            published,
            f"{m['test.macro_recall']:.4f}",
            change("test.macro_recall"),
            f"{m['test.macro_f1']:.4f}",
            change("test.macro_f1"),
            f"{m['test.accuracy']:.4f}",
            f"{m['val.macro_recall']:.4f}",
            size,
            trials,
            took,
        ]
        if m["test.macro_recall"] == max(recalls):
            cells.append("<- best")
        rows.append(cells)
        previous = m
    return rows


def table_of(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the printed table: cells are separated by two or more spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("start (UTC)"))
    end = lines.index("", start)
    split = [re.split(r"\s{2,}", line.strip()) for line in lines[start:end]]
    return split[0], split[1:]


def test_table_rows_are_the_logged_runs_in_start_order(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_report(capsys, monkeypatch, "--mlflow-dir", str(store["dir"]))
    assert code == 0, err
    header, rows = table_of(out)
    assert header == [
        "start (UTC)",
        "run",
        "commit",
        "model sha256",
        "published",
        "test recall",
        "change",
        "test F1",
        "change",
        "test acc",
        "val recall",
        "size",
        "trials",
        "time",
    ]
    assert rows == expected_cells(logged_runs(store), store)
    assert out.startswith(f"4 finished training runs in {uri_of(store['dir'])} (experiment '{EXPERIMENT}')")
    published = store["ids"]["published"][:8]
    assert f"best: run {published} of " in out and "test macro-recall 0.6710, macro-F1 0.6520" in out
    assert "quality bar (test macro-recall >= 0.66 and macro-F1 >= 0.64): reached by 1 of 4" in out
    # Skipped, with a count per kind, in start order: the crash, the training error, the running one.
    assert "not in the table: 3 unfinished runs (1 failed, 1 training error, 1 still running)" in out


def test_real_training_runs_report_what_train_wrote(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metric keys the report reads are the ones train.py logs: compare with its metrics.json."""
    code, out, err = run_report(capsys, monkeypatch, "--mlflow-dir", str(store["dir"]), "--json")
    assert code == 0, err
    rows = {row["run_id"]: row for row in json.loads(out)["runs"]}
    logged = logged_runs(store)
    for role, document in store["documents"].items():
        row = rows[store["ids"][role]]
        assert row["test_macro_recall"] == document["test"]["macro_recall"]
        assert row["test_macro_f1"] == document["test"]["macro_f1"]
        assert row["test_accuracy"] == document["test"]["accuracy"]
        assert row["val_macro_recall"] == document["val"]["macro_recall"]
        assert row["model_size_bytes"] == document["model"]["size_bytes"]
        assert row["model_sha256"] == document["model"]["sha256"]
        assert row["search_trials"] == document["search"]["trials"] == 1
        assert row["search_seconds"] == document["search"]["seconds_total"]
        assert row["search_budget_seconds"] == 0
        assert row["published"] is False and row["hub_commit"] is None
        # train.py's git_commit tag: a commit of this repo (HEAD may move while tests run, so not HEAD).
        assert row["git_commit"] == logged[role].data.tags["git_commit"]
        sha = row["git_commit"].removesuffix("-dirty")
        assert re.fullmatch("[0-9a-f]{40}", sha)
        assert (
            subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=REPO, check=False).returncode
            == 0
        )
    assert (
        rows[store["ids"]["first"]]["test_macro_recall"] != rows[store["ids"]["second"]]["test_macro_recall"]
    )


def test_json_lists_runs_changes_best_and_skipped(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_report(capsys, monkeypatch, "--mlflow-dir", str(store["dir"]), "--json")
    assert code == 0, err
    document = json.loads(out)
    runs = logged_runs(store)
    assert document["tracking_uri"] == uri_of(store["dir"]) and document["experiment"] == EXPERIMENT
    assert document["quality_bar"] == {"test_macro_recall": 0.66, "test_macro_f1": 0.64}
    assert [row["run_id"] for row in document["runs"]] == [store["ids"][role] for role in TABLE_ORDER]
    previous = None
    for role, row in zip(TABLE_ORDER, document["runs"], strict=True):
        m = runs[role].data.metrics
        assert row["start_time"] == datetime.fromtimestamp(runs[role].info.start_time / 1000, UTC).isoformat()
        assert row["test_macro_recall"] == m["test.macro_recall"]
        assert row["test_macro_f1"] == m["test.macro_f1"]
        if previous is None:
            assert row["change_test_macro_recall"] is None and row["change_test_macro_f1"] is None
        else:
            assert row["change_test_macro_recall"] == pytest.approx(
                m["test.macro_recall"] - previous["test.macro_recall"]
            )
            assert row["change_test_macro_f1"] == pytest.approx(
                m["test.macro_f1"] - previous["test.macro_f1"]
            )
        assert row["best"] is (role == "published")
        previous = m
    published = document["runs"][-1]
    assert published["published"] is True and published["hub_commit"] == "acme/sentiment-model@deadbeef"
    assert published["model_sha256"] == PUBLISHED_SHA and published["git_commit"] == PUBLISHED_COMMIT
    assert published["model_size_bytes"] == 1_390_123 and published["search_trials"] == 97
    yesterday = document["runs"][0]
    assert yesterday["published"] is None and yesterday["git_commit"] is None
    assert yesterday["model_sha256"] is None and yesterday["model_size_bytes"] is None
    skipped = {run["run_id"]: (run["status"], run["reason"]) for run in document["skipped"]}
    assert skipped == {
        store["ids"]["failed"]: ("FAILED", "failed"),
        store["ids"]["training_error"]: (
            "FINISHED",
            "training error (failed: fastText could not read the training file)",
        ),
        store["ids"]["running"]: ("RUNNING", "still running"),
    }


def test_plot_is_a_png_of_the_runs(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.image import imread

    path = tmp_path / "plots" / "history.png"
    code, out, err = run_report(capsys, monkeypatch, "--mlflow-dir", str(store["dir"]), "--plot", str(path))
    assert code == 0, err
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    height, width, _ = imread(path).shape
    assert width > 500 and height > 300
    assert f"plot: {path}" in err and "<- best" in out


def test_tracking_uri_from_the_environment_wins(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri_of(store["dir"]))
        code = report.main(["--mlflow-dir", str(tmp_path / "not-this-one"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(json.loads(out)["runs"]) == 4
    assert not (tmp_path / "not-this-one").exists()


def test_empty_store_says_so_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    store.mkdir()
    MlflowClient(tracking_uri=uri_of(store)).create_experiment(EXPERIMENT)  # what training creates first
    code, out, err = run_report(
        capsys, monkeypatch, "--mlflow-dir", str(store), "--plot", str(tmp_path / "p.png")
    )
    assert code == 0, err
    assert out == f"no training runs found in {uri_of(store)} (experiment '{EXPERIMENT}')\n"
    assert "no plot written" in err and not (tmp_path / "p.png").exists()
    code, out, err = run_report(capsys, monkeypatch, "--mlflow-dir", str(store), "--json")
    assert code == 0 and json.loads(out)["runs"] == [] and json.loads(out)["skipped"] == []
    code, out, err = run_report(capsys, monkeypatch, "--mlflow-dir", str(store), "--experiment", "nope")
    assert code == 0
    assert out.startswith(f"no training runs found in {uri_of(store)} (experiment 'nope')")


def report_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "training.report", *args],
        env=clean_env(**(env or {})),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_store_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    run = report_cli("--mlflow-dir", str(tmp_path / "nowhere"))
    assert run.returncode == 2
    assert f"no MLflow store at {tmp_path / 'nowhere' / 'mlflow.db'}" in run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert not (tmp_path / "nowhere").exists()


def test_unreadable_or_unreachable_store_is_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_text("not a database\n")
    run = report_cli("--mlflow-dir", str(tmp_path))
    assert run.returncode == 2, run.stdout
    assert "cannot read the MLflow store" in run.stderr and "Traceback" not in run.stderr
    port = free_port()  # nobody listens on it
    run = report_cli(
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    )
    assert run.returncode == 2, run.stdout
    assert f"cannot read the MLflow store http://127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sentiment-report"] == "training.report:main"
