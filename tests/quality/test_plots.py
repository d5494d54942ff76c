"""Every report plot renders to a PNG."""

from __future__ import annotations

import numpy as np
import pytest

from labelgate_quality.calibration import reliability_curve
from labelgate_quality.plots import (
    accuracy_vs_review_share,
    confusion_matrix_plot,
    learning_curve,
    reliability_diagram,
)

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n"


def outcomes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.4, 1.0, 300)
    return conf, rng.uniform(size=300) < conf


def test_reliability_diagram_renders() -> None:
    conf, correct = outcomes()
    assert reliability_diagram(reliability_curve(conf, correct)).startswith(PNG)
    assert reliability_diagram(reliability_curve([], [])).startswith(PNG)


def test_accuracy_vs_share_reviewed_renders() -> None:
    conf, correct = outcomes()
    assert accuracy_vs_review_share(conf, correct).startswith(PNG)
    assert accuracy_vs_review_share([], []).startswith(PNG)


def test_learning_curve_renders() -> None:
    assert learning_curve([50, 100, 200, 400], [0.71, 0.8, 0.86, 0.9]).startswith(PNG)


def test_confusion_matrix_renders() -> None:
    assert confusion_matrix_plot([[50, 3], [7, 40]], ["ham", "spam"]).startswith(PNG)
