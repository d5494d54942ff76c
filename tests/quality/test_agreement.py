"""Agreement statistics reproduce published values, and the entity/box measures match a reviewer's intuition."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from labelgate_quality.agreement import (
    Box,
    Span,
    ambiguous_labels,
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_from_table,
    iou,
    krippendorff_alpha,
    label_agreement,
    match_boxes,
    mean_iou,
    span_f1,
    span_prf,
)

pytestmark = pytest.mark.unit

# Fleiss (1971), "Measuring nominal scale agreement among many raters": 30 patients, 6 psychiatrists each,
# 5 diagnoses (1 depression, 2 personality disorder, 3 schizophrenia, 4 neurosis, 5 other). Each row lists the
# diagnoses the six gave one patient; the same matrix ships with statsmodels' tests as ``diagnoses``.
FLEISS_1971 = [
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units with
# missing values; published alphas nominal .743, ordinal .815, interval .849, ratio .797.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_fleiss_1971_psychiatric_diagnoses_kappa_is_0430() -> None:
    assert fleiss_kappa(FLEISS_1971) == pytest.approx(0.430, abs=5e-4)
    assert fleiss_kappa(FLEISS_1971) == pytest.approx(0.4302445, abs=1e-6)  # R irr::kappam.fleiss


def test_fleiss_table_is_the_one_statsmodels_ships() -> None:
    try:
        shipped = importlib.import_module("statsmodels.stats.tests.test_inter_rater").diagnoses
    except ImportError:  # pragma: no cover - a statsmodels build without its tests
        pytest.skip("statsmodels was installed without its tests")
    np.testing.assert_array_equal(np.asarray(shipped), np.asarray(FLEISS_1971))


def test_fleiss_kappa_accepts_label_names_and_count_tables() -> None:
    names = {1: "depression", 2: "personality", 3: "schizophrenia", 4: "neurosis", 5: "other"}
    named = [[names[v] for v in row] for row in FLEISS_1971]
    assert fleiss_kappa(named) == pytest.approx(0.4302445, abs=1e-6)
    table = [[row.count(c) for c in range(1, 6)] for row in FLEISS_1971]
    assert fleiss_kappa_from_table(table) == pytest.approx(0.4302445, abs=1e-6)


def test_fleiss_kappa_needs_equal_raters_per_item() -> None:
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["a", "b"], ["a"]])
    assert fleiss_kappa([["a", "a"], ["a", "a"]]) == 1.0


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_2011_example(level: str, published: float) -> None:
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(published, abs=5e-4)  # type: ignore[arg-type]


def test_krippendorff_alpha_on_label_names_and_ordered_labels() -> None:
    words = {1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}
    named = [[None if v is None else words[v] for v in row] for row in KRIPPENDORFF_2011]
    assert krippendorff_alpha(named, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(named, "ordinal", order=["a", "b", "c", "d", "e"]) == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha([["a", "a"], ["a", None]]) is None


def test_cohen_kappa() -> None:
    # 2x2 example: po = 0.7, pe = 0.5 → kappa 0.4.
    a = ["y"] * 5 + ["n"] * 5
    b = ["y"] * 4 + ["n"] + ["y", "y"] + ["n"] * 3
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x"], ["x"]) is None
    assert cohen_kappa(["x", "x"], ["x", "x"]) == 1.0
    assert cohen_kappa([1, 2, 3], [1, 2, 3], weights="quadratic") == pytest.approx(1.0)


def test_span_f1_exact_and_overlap() -> None:
    gold = [[Span(0, 5, "PER"), Span(10, 20, "ORG")], [Span(3, 8, "LOC")]]
    predicted = [[Span(0, 5, "PER"), Span(11, 20, "ORG"), Span(30, 35, "PER")], []]
    exact = span_f1(gold, predicted, "exact")
    assert (exact.true_positives, exact.false_positives, exact.false_negatives) == (1, 2, 2)
    assert exact.f1 == pytest.approx(1 / 3)
    overlap = span_f1(gold, predicted, "overlap")
    assert (overlap.true_positives, overlap.false_positives, overlap.false_negatives) == (2, 1, 1)
    assert overlap.precision == pytest.approx(2 / 3)
    assert overlap.recall == pytest.approx(2 / 3)


def test_overlap_matching_is_one_to_one_and_label_sensitive() -> None:
    # Two predictions overlapping one gold span: only one may count.
    prf = span_prf([Span(0, 10, "X")], [Span(0, 4, "X"), Span(5, 10, "X")], "overlap")
    assert (prf.true_positives, prf.false_positives, prf.false_negatives) == (1, 1, 0)
    assert span_prf([Span(0, 10, "X")], [Span(0, 10, "Y")], "overlap").true_positives == 0
    assert span_prf([], [], "exact").f1 is None


def test_iou_of_boxes() -> None:
    assert iou(Box(0, 0, 2, 2), Box(1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert iou(Box(0, 0, 1, 1), Box(0, 0, 1, 1)) == 1.0
    assert iou(Box(0, 0, 1, 1), Box(2, 2, 3, 3)) == 0.0


def test_mean_iou_matches_boxes_optimally_and_penalises_missed_ones() -> None:
    gold = [Box(0, 0, 10, 10, "car"), Box(20, 20, 30, 30, "car")]
    # Listed in the other order, one slightly shifted; plus an extra box that matches nothing.
    predicted = [Box(20, 20, 30, 30, "car"), Box(0, 0, 10, 8, "car"), Box(50, 50, 60, 60, "car")]
    result = match_boxes(gold, predicted)
    assert sorted((g, p) for g, p, _ in result.pairs) == [(0, 1), (1, 0)]
    assert result.unmatched_predicted == (2,)
    assert result.mean_iou == pytest.approx((1.0 + 0.8) / 3)
    assert mean_iou([Box(0, 0, 1, 1, "a")], [Box(0, 0, 1, 1, "b")]) == 0.0
    assert mean_iou([], []) is None


def test_labels_people_disagree_on_are_flagged_ambiguous() -> None:
    ratings: dict[str, list[str]] = {}
    for i in range(30):
        ratings[f"clear{i}"] = ["bug", "bug", "bug"]
    for i in range(30):  # "billing" vs "refund": half the people pick each
        ratings[f"money{i}"] = ["billing", "refund", "billing"] if i % 2 else ["refund", "billing", "refund"]
    flagged = ambiguous_labels(ratings, threshold=0.6, min_support=10)
    assert set(flagged) == {"billing", "refund"}
    stats = {a.label: a for a in label_agreement(ratings)}
    assert stats["bug"].specific_agreement == 1.0
    assert not stats["bug"].ambiguous
    assert stats["billing"].specific_agreement == pytest.approx(1 / 3)
    # Items rated by one person say nothing about agreement.
    assert label_agreement({"x": ["bug"]}) == []
