"""``python -m training.report``: the training experiment's finished runs over time, oldest first.

Reads the MLflow store the training writes to (same default: ``--mlflow-dir``'s sqlite file unless
``MLFLOW_TRACKING_URI`` is set) and prints per run: start (UTC), run id, git commit, model sha256,
whether it was published, test macro-recall / macro-F1 / accuracy, val macro-recall, model size and the
search's trials and wall time, with the change against the previous run and the best run marked.
Runs that did not finish training (FAILED, KILLED, still RUNNING, or ended by a training error) are
left out of the table and counted below it; ``--json`` lists them. Exit codes: 0 report printed (also
when there is no run yet), 2 the store is missing or cannot be read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.plots import plot_metrics_over_time
from training.tracking import EXPERIMENT, default_tracking_uri

EXIT_NO_STORE = 2
#: The issue's quality bar on test (docs/results.md, "Model quality").
BAR_MACRO_RECALL, BAR_MACRO_F1 = 0.66, 0.64

#: Report field -> the MLflow metric key train.py logs (``tracking.flat_metrics`` of metrics.json).
METRIC_KEYS: Mapping[str, str] = {
    "test_macro_recall": "test.macro_recall",
    "test_macro_f1": "test.macro_f1",
    "test_accuracy": "test.accuracy",
    "val_macro_recall": "val.macro_recall",
    "model_size_bytes": "model.size_bytes",
    "search_trials": "search.trials",
    "search_seconds": "search.seconds_total",
    "search_budget_seconds": "search.budget_seconds",
}
_INTEGER_FIELDS = {"model_size_bytes", "search_trials"}
#: The run's metrics.json artifact: the model's sha256 is a string, so it is not an MLflow metric.
METRICS_ARTIFACT = "metrics.json"


class StoreError(Exception):
    """The MLflow store is missing or cannot be read."""


@dataclass(frozen=True)
class RunRow:
    """One finished training run, as the table and ``--json`` show it."""

    run_id: str
    run_name: str
    start_time: datetime
    git_commit: str | None
    model_sha256: str | None
    published: bool | None
    hub_commit: str | None
    test_macro_recall: float
    test_macro_f1: float | None
    test_accuracy: float | None
    val_macro_recall: float | None
    model_size_bytes: int | None
    search_trials: int | None
    search_seconds: float | None
    search_budget_seconds: float | None
    change_test_macro_recall: float | None = None
    change_test_macro_f1: float | None = None
    best: bool = False

    def as_json(self) -> dict[str, Any]:
        """JSON-ready fields; the start time as ISO 8601 UTC."""
        return {**asdict(self), "start_time": self.start_time.isoformat()}


@dataclass(frozen=True)
class SkippedRun:
    """A run left out of the table, and why."""

    run_id: str
    run_name: str
    start_time: datetime
    status: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {**asdict(self), "start_time": self.start_time.isoformat()}


@dataclass(frozen=True)
class Report:
    """Finished runs oldest first (with change and best filled in) and the runs left out."""

    tracking_uri: str
    experiment: str
    experiment_found: bool
    runs: list[RunRow]
    skipped: list[SkippedRun]

    @property
    def best(self) -> RunRow | None:
        """The run marked best, if any."""
        return next((row for row in self.runs if row.best), None)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "experiment_found": self.experiment_found,
            "quality_bar": {"test_macro_recall": BAR_MACRO_RECALL, "test_macro_f1": BAR_MACRO_F1},
            "runs": [row.as_json() for row in self.runs],
            "skipped": [run.as_json() for run in self.skipped],
        }


def with_trend(rows: list[RunRow]) -> list[RunRow]:
    """Fill in the change against the previous row and mark the best row.

    Best = highest test macro-recall (TweetEval's metric), test macro-F1 breaking ties, the earlier run
    winning a full tie.
    """
    out: list[RunRow] = []
    for i, row in enumerate(rows):
        prev = rows[i - 1] if i else None
        out.append(
            replace(
                row,
                change_test_macro_recall=_diff(
                    row.test_macro_recall, None if prev is None else prev.test_macro_recall
                ),
                change_test_macro_f1=_diff(row.test_macro_f1, None if prev is None else prev.test_macro_f1),
                best=False,
            )
        )
    if out:
        best = max(range(len(out)), key=lambda i: (out[i].test_macro_recall, out[i].test_macro_f1 or 0.0, -i))
        out[best] = replace(out[best], best=True)
    return out


def _diff(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


def check_store(tracking_uri: str) -> None:
    """A sqlite store must already exist: reading must never create an empty one (MLflow would)."""
    if not tracking_uri.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if database and database != ":memory:" and not Path(database).is_file():
        raise StoreError(
            f"no MLflow store at {database}: train first (python -m training.train), "
            "or point --mlflow-dir or MLFLOW_TRACKING_URI at the store"
        )


@contextmanager
def _mlflow_env() -> Iterator[None]:
    """No artifact progress bars; fail fast (not after minutes of retries) when a server is down.

    Only defaults: whatever the caller's environment sets wins. Restored afterwards.
    """
    defaults = {
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }
    added = [key for key in defaults if key not in os.environ]
    os.environ.update({key: defaults[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def load_report(tracking_uri: str, experiment: str = EXPERIMENT) -> Report:
    """Every run of ``experiment`` in the store, split into finished rows (oldest first) and skipped."""
    check_store(tracking_uri)
    try:
        with _mlflow_env():
            return _load(tracking_uri, experiment)
    except StoreError:
        raise
    except Exception as exc:  # MlflowException, SQLAlchemy, HTTP and OS errors alike: report, no traceback
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StoreError(
            f"cannot read the MLflow store {tracking_uri}: {type(exc).__name__}: {detail}"
        ) from exc


def _load(tracking_uri: str, experiment: str) -> Report:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return Report(tracking_uri, experiment, False, [], [])
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [found.experiment_id], order_by=["attributes.start_time ASC"], max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    runs.sort(key=lambda run: (run.info.start_time or 0, run.info.run_id))
    rows: list[RunRow] = []
    skipped: list[SkippedRun] = []
    with tempfile.TemporaryDirectory(prefix="sentiment-report-") as scratch:
        for run in runs:
            reason = _skip_reason(run)
            if reason:
                skipped.append(
                    SkippedRun(run.info.run_id, run.info.run_name or "", _start(run), run.info.status, reason)
                )
            else:
                rows.append(_row(client, run, Path(scratch)))
    return Report(tracking_uri, experiment, True, with_trend(rows), skipped)


def _skip_reason(run: Any) -> str | None:
    status = run.info.status
    if status != "FINISHED":
        return "still running" if status in ("RUNNING", "SCHEDULED") else status.lower()
    tag = run.data.tags.get("status", "")
    if tag.startswith("failed"):
        return f"training error ({tag})"
    if METRIC_KEYS["test_macro_recall"] not in run.data.metrics:
        return f"no {METRIC_KEYS['test_macro_recall']} metric"
    return None


def _start(run: Any) -> datetime:
    return datetime.fromtimestamp((run.info.start_time or 0) / 1000, tz=UTC)


def _row(client: Any, run: Any, scratch: Path) -> RunRow:
    metrics: dict[str, float] = run.data.metrics
    tags: dict[str, str] = run.data.tags
    values: dict[str, Any] = {}
    for name, key in METRIC_KEYS.items():
        value = metrics.get(key)
        values[name] = None if value is None else int(value) if name in _INTEGER_FIELDS else value
    gate = tags.get("gate")
    hub_commit = tags.get("hub_commit") or None
    published = True if hub_commit else None if gate is None else gate.startswith("published")
    return RunRow(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        start_time=_start(run),
        git_commit=tags.get("git_commit") or tags.get("mlflow.source.git.commit") or None,
        model_sha256=_model_sha256(client, run.info.run_id, scratch),
        published=published,
        hub_commit=hub_commit,
        **values,
    )


def _model_sha256(client: Any, run_id: str, scratch: Path) -> str | None:
    """``model.sha256`` from the run's metrics.json artifact; None when the run has none."""
    from mlflow.exceptions import MlflowException

    folder = scratch / run_id
    folder.mkdir()
    try:
        local = client.download_artifacts(run_id, METRICS_ARTIFACT, str(folder))
        document = json.loads(Path(local).read_text(encoding="utf-8"))
    except (MlflowException, OSError, ValueError):
        return None
    model = document.get("model") if isinstance(document, dict) else None
    sha = model.get("sha256") if isinstance(model, dict) else None
    return sha if isinstance(sha, str) else None


def _short_commit(commit: str | None) -> str:
    if not commit:
        return "-"
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:7] + ("-dirty" if dirty else "")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _change(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _published(row: RunRow) -> str:
    return "-" if row.published is None else "yes" if row.published else "no"


#: (header, right-aligned, cell) per column; cells never contain two spaces in a row, and are never empty
#: except the last, so the table splits back into cells on runs of 2+ spaces.
COLUMNS: list[tuple[str, bool, Callable[[RunRow], str]]] = [
    ("start (UTC)", False, lambda r: f"{r.start_time:%Y-%m-%d %H:%M:%S}"),
    ("run", False, lambda r: r.run_id[:8]),
    ("commit", False, lambda r: _short_commit(r.git_commit)),
    ("model sha256", False, lambda r: (r.model_sha256 or "-")[:12]),
    ("published", False, _published),
    ("test recall", True, lambda r: _num(r.test_macro_recall)),
    ("change", True, lambda r: _change(r.change_test_macro_recall)),
    ("test F1", True, lambda r: _num(r.test_macro_f1)),
    ("change", True, lambda r: _change(r.change_test_macro_f1)),
    ("test acc", True, lambda r: _num(r.test_accuracy)),
    ("val recall", True, lambda r: _num(r.val_macro_recall)),
    ("size", True, lambda r: "-" if r.model_size_bytes is None else f"{r.model_size_bytes / 1e6:.2f} MB"),
    ("trials", True, lambda r: "-" if r.search_trials is None else str(r.search_trials)),
    ("time", True, lambda r: _duration(r.search_seconds)),
    ("", False, lambda r: "<- best" if r.best else ""),
]


def format_table(rows: list[RunRow]) -> str:
    """The runs as an aligned plain-text table, header first."""
    cells = [[header for header, _, _ in COLUMNS]] + [[cell(row) for _, _, cell in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            text.rjust(width) if right else text.ljust(width)
            for text, width, (_, right, _) in zip(line, widths, COLUMNS, strict=True)
        ).rstrip()
        for line in cells
    ]
    return "\n".join(lines)


def format_report(report: Report) -> str:
    """The human-readable report: a header line, the table, the best run, the bar and what was skipped."""
    where = f"{report.tracking_uri} (experiment '{report.experiment}')"
    if not report.experiment_found:
        return f"no training runs found in {where}: the store has no such experiment"
    skipped = _skipped_line(report.skipped)
    if not report.runs:
        if not report.skipped:
            return f"no training runs found in {where}"
        return f"no finished training runs found in {where}\n{skipped}"
    runs = report.runs
    best = report.best
    assert best is not None  # with_trend marks one whenever there are rows
    reached = sum(
        1
        for r in runs
        if r.test_macro_recall >= BAR_MACRO_RECALL and (r.test_macro_f1 or 0.0) >= BAR_MACRO_F1
    )
    lines = [
        f"{len(runs)} finished training run{'s' if len(runs) != 1 else ''} in {where}, oldest first:",
        "",
        format_table(runs),
        "",
        f"best: run {best.run_id[:8]} of {best.start_time:%Y-%m-%d %H:%M} UTC, test macro-recall "
        f"{best.test_macro_recall:.4f}, macro-F1 {_num(best.test_macro_f1)} "
        "(best = highest test macro-recall; change = against the run above)",
        f"quality bar (test macro-recall >= {BAR_MACRO_RECALL:.2f} and macro-F1 >= {BAR_MACRO_F1:.2f}): "
        f"reached by {reached} of {len(runs)}",
    ]
    if skipped:
        lines.append(skipped)
    return "\n".join(lines)


def _skipped_line(skipped: list[SkippedRun]) -> str:
    if not skipped:
        return ""
    counts: dict[str, int] = {}
    for run in skipped:
        kind = run.reason.split(" (", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    detail = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    plural = "s" if len(skipped) != 1 else ""
    return f"not in the table: {len(skipped)} unfinished run{plural} ({detail}); --json lists them"


def write_plot(report: Report, path: Path) -> Path:
    """Test macro-recall and macro-F1 across the finished runs, with the quality bar dashed."""
    return plot_metrics_over_time(
        [row.start_time for row in report.runs],
        {
            "test macro-recall": [row.test_macro_recall for row in report.runs],
            "test macro-F1": [row.test_macro_f1 for row in report.runs],
        },
        {"test macro-recall": BAR_MACRO_RECALL, "test macro-F1": BAR_MACRO_F1},
        path,
        f"{report.experiment}: test metrics per training run",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (the store flags mean what they mean for ``sentiment-train``)."""
    p = argparse.ArgumentParser(
        prog="sentiment-report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--mlflow-dir",
        type=Path,
        default=Path("mlruns"),
        help="local MLflow store (sqlite + artifacts) unless MLFLOW_TRACKING_URI is set (default: mlruns)",
    )
    p.add_argument("--experiment", default=EXPERIMENT, help=f"MLflow experiment (default: {EXPERIMENT})")
    p.add_argument("--plot", type=Path, metavar="PATH", help="also write a PNG of test metrics over time")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sentiment-report``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # One line per retry against a server that is down; the final error says it all.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    tracking_uri = default_tracking_uri(args.mlflow_dir)
    try:
        report = load_report(tracking_uri, args.experiment)
    except StoreError as exc:
        print(f"sentiment-report: {exc}", file=sys.stderr)
        return EXIT_NO_STORE
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(format_report(report))
    if args.plot:
        if report.runs:
            print(f"plot: {write_plot(report, args.plot)}", file=sys.stderr)
        else:
            print(f"no plot written to {args.plot}: no finished runs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
