"""Report plots rendered to PNG bytes with matplotlib's Agg backend (no display, safe in a server thread:
every figure is created through the object API, never pyplot's global state)."""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from .calibration import ConfidenceBin


def _new(width: float = 5.0, height: float = 4.0) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def reliability_diagram(bins: Sequence[ConfidenceBin], *, title: str = "Reliability") -> bytes:
    """Accuracy against mean confidence per bin (bars) with the diagonal of perfect calibration."""
    figure, ax = _new()
    filled = [b for b in bins if b.count and b.accuracy is not None]
    ax.bar(
        [(b.lower + b.upper) / 2 for b in filled],
        [b.accuracy or 0.0 for b in filled],
        width=[b.upper - b.lower for b in filled],
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(
        [b.mean_confidence or 0.0 for b in filled],
        [b.accuracy or 0.0 for b in filled],
        marker="o",
        color="C1",
        label="bins",
    )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left")
    return _png(figure)


def accuracy_vs_review_share(confidence: ArrayLike, correct: ArrayLike, *, title: str = "") -> bytes:
    """Final-label accuracy if the least confident share of items is reviewed (and then correct), for every
    share from 0 to 1: how much review buys how much quality."""
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    order = np.argsort(conf, kind="stable")
    n = conf.size
    shares = np.arange(n + 1) / max(n, 1)
    # Reviewing the k least confident makes them correct; the rest keep the AI's outcome.
    wrong_left = np.r_[(~right[order])[::-1].cumsum()[::-1], 0] if n else np.zeros(1)
    accuracy = 1.0 - wrong_left / max(n, 1)
    figure, ax = _new()
    ax.plot(shares, accuracy)
    ax.set(xlim=(0, 1), ylim=(min(0.5, float(accuracy.min())), 1.0), xlabel="share reviewed",
           ylabel="accuracy of final labels", title=title or "Accuracy vs share reviewed")
    ax.grid(alpha=0.3)
    return _png(figure)


def learning_curve(
    n_reviewed: Sequence[float], metric: Sequence[float], *, ylabel: str = "accuracy", title: str = ""
) -> bytes:
    """A model metric (accuracy, auto-accept rate) against the number of reviewed items it was trained on."""
    figure, ax = _new()
    ax.plot(list(n_reviewed), list(metric), marker="o")
    ax.set(xlabel="reviewed items", ylabel=ylabel, title=title or "Learning curve")
    ax.grid(alpha=0.3)
    return _png(figure)


def confusion_matrix_plot(
    matrix: ArrayLike, classes: Sequence[Hashable], *, title: str = "Confusion (rows human, columns AI)"
) -> bytes:
    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(classes) + 2)
    figure, ax = _new(size, size)
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax, fraction=0.046)
    names = [str(c) for c in classes]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="AI label", ylabel="human label", title=title)
    high = counts.max() / 2 if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > high else "black")
    return _png(figure)
