"""Pictures for people: the confusion matrix (MLflow, the model card) and metrics across runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import LABELS


def plot_confusion_matrix(matrix: list[list[int]], path: Path, title: str) -> Path:
    """Write a row-normalised confusion matrix with raw counts to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    rows = [sum(row) or 1 for row in matrix]
    shares = [[cell / rows[i] for cell in row] for i, row in enumerate(matrix)]
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i, row in enumerate(matrix):
        for j, cell in enumerate(row):
            colour = "white" if shares[i][j] > 0.5 else "black"
            ax.text(j, i, f"{cell}\n{shares[i][j]:.0%}", ha="center", va="center", color=colour, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_metrics_over_time(
    starts: Sequence[datetime],
    series: Mapping[str, Sequence[float | None]],
    bars: Mapping[str, float],
    path: Path,
    title: str,
) -> Path:
    """Write one line per metric across runs (x = run start) with dashed quality-bar lines (PNG).

    ``series`` maps a legend label to one value per run (``None``: not logged, left as a gap);
    ``bars`` maps a series label to its target, drawn as a dashed horizontal line in the series' colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    # Naive UTC datetime64: matplotlib's own date axis; "concise" labels only what changes between ticks.
    xs = np.array([s.astimezone(UTC).replace(tzinfo=None) for s in starts], dtype="datetime64[ms]")
    with matplotlib.rc_context({"date.converter": "concise"}):
        fig, ax = plt.subplots(figsize=(9.0, 4.5), dpi=120)
        colours: dict[str, Any] = {}
        for label, values in series.items():
            ys = [float("nan") if v is None else v for v in values]
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            colours[label] = line.get_color()
    for label, value in bars.items():
        ax.axhline(
            value, linestyle="--", linewidth=1.0, color=colours.get(label, "grey"), label=f"bar {value:.2f}"
        )
    ax.set_xlabel("run start (UTC)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the plot, hiding no point
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
