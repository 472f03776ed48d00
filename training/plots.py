"""Confusion-matrix picture for people (MLflow, the model card)."""

from __future__ import annotations

from pathlib import Path

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
