"""The replay's baselines and budget curve, on hand-made records whose right answers can be counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from labelgate.baselines import (
    ItemRecord,
    PriceModel,
    baselines,
    budget_curve,
    outcomes,
    random_review,
    review_order,
    score_final,
)
from labelgate_quality.agreement import Span, span_f1

pytestmark = [pytest.mark.unit]


def single(gold: str, ai: str, confidence: float | None, reviewed: bool) -> ItemRecord:
    return ItemRecord((gold,), (ai,), (gold,) if reviewed else (ai,), reviewed, confidence, confidence)


# Ten items: one unscored (cold start: no model, an empty proposal) and the model wrong on exactly the four it
# is least sure of; the gate reviewed the first three.
RECORDS = [
    ItemRecord(("spam",), (), ("spam",), True),
    single("spam", "ham", 0.51, True),
    single("ham", "spam", 0.55, True),
    single("ham", "spam", 0.60, False),
    single("spam", "ham", 0.65, False),
    single("ham", "ham", 0.95, False),
    single("ham", "ham", 0.96, False),
    single("spam", "spam", 0.97, False),
    single("spam", "spam", 0.98, False),
    single("ham", "ham", 0.99, False),
]


def test_the_router_order_reviews_unscored_items_first_then_the_least_confident() -> None:
    assert review_order(RECORDS)[:4] == [0, 1, 2, 3]


def test_scores_of_the_gate_the_ai_alone_and_everything_reviewed() -> None:
    outcome = outcomes(RECORDS, "classification")

    assert score_final(RECORDS, "classification")["accuracy"] == pytest.approx(0.8)  # items 3 and 4 stay wrong
    assert outcome.score(np.zeros(10, dtype=bool))["accuracy"] == pytest.approx(0.5)
    assert outcome.score(np.ones(10, dtype=bool))["accuracy"] == 1.0


def test_random_review_averages_random_samples_of_the_same_size() -> None:
    outcome = outcomes(RECORDS, "classification")

    draw = random_review(outcome, budget=5, seeds=400, seed=1)

    # Five wrong proposals, each reviewed with probability 5/10: 5 + 5 x 0.5 = 7.5 right of 10 on average.
    assert draw["reviewed"] == 5
    assert draw["mean"]["accuracy"] == pytest.approx(0.75, abs=0.01)
    assert draw["std"]["accuracy"] > 0


def test_budget_curve_beats_random_where_the_router_orders_well() -> None:
    curve = budget_curve(RECORDS, "classification", steps=10, seeds=50)

    assert curve.metric == "accuracy"
    assert curve.shares[0] == 0.0
    assert curve.shares[-1] == 1.0
    assert curve.router[0] == pytest.approx(0.5)
    assert curve.router[-1] == 1.0
    assert curve.router[5] == 1.0  # the unscored item and the four least confident hold all five errors
    assert curve.beats_random()
    assert curve.operating_point["share"] == pytest.approx(0.3)
    assert curve.operating_point["gate"] == pytest.approx(0.8)


def test_budget_curve_names_the_budgets_where_confidence_ordering_loses() -> None:
    # Confidently wrong, unsure but right: the worst ordering a model can give.
    records = [single("a", "b", 0.99, False), single("a", "a", 0.5, False), single("b", "b", 0.6, False)]

    curve = budget_curve(records, "classification", steps=3, seeds=50)

    assert not curve.beats_random()
    assert curve.shares_not_above_random() == pytest.approx([1 / 3, 2 / 3])


def test_multi_label_scores_micro_and_macro_f1_with_empty_label_sets() -> None:
    records = [
        ItemRecord(("corn", "grain"), ("grain",), ("grain",), False, 0.9),
        ItemRecord((), (), (), False, 0.99),
        ItemRecord(("grain",), (), ("grain",), True, 0.4),
    ]

    final = score_final(records, "multi_label")
    ai = outcomes(records, "multi_label").score(np.zeros(3, dtype=bool))

    # Final: grain tp 2; corn fn 1 -> micro 2*2 / (2*2 + 0 + 1) = 0.8; macro mean(0, 1) = 0.5.
    assert final == {
        "accuracy": pytest.approx(2 / 3),
        "micro_precision": 1.0,
        "micro_recall": pytest.approx(2 / 3),
        "micro_f1": pytest.approx(0.8),
        "macro_f1": 0.5,
    }
    # AI alone: grain tp 1, fn 1; corn fn 1 -> micro 2 / (2 + 2) = 0.5; macro mean(0, 2/3).
    assert ai["micro_f1"] == pytest.approx(0.5)
    assert ai["macro_f1"] == pytest.approx(1 / 3)
    assert ai["accuracy"] == pytest.approx(1 / 3)


def test_entity_span_f1_counts_exact_matches_as_span_f1_does() -> None:
    gold = [(Span(0, 3, "person"), Span(9, 14, "geo-loc")), (Span(0, 4, "company"),)]
    ai = [(Span(0, 3, "person"), Span(9, 13, "geo-loc")), ()]
    records = [
        ItemRecord(tuple(sorted({s.label for s in g})), (), (), False, 0.5, gold_spans=g, ai_spans=a, final_spans=a)
        for g, a in zip(gold, ai, strict=True)
    ]

    scores = score_final(records, "entities")
    expected = span_f1(gold, ai, match="exact")

    assert scores["span_f1"] == pytest.approx(expected.f1)
    assert scores["span_precision"] == pytest.approx(expected.precision)
    assert scores["span_recall"] == pytest.approx(expected.recall)
    assert scores["accuracy"] == 0.0


def test_costs_under_the_price_model_against_all_human() -> None:
    price = PriceModel(review_seconds=30, hourly_rate_usd=30)

    compared = baselines(RECORDS, "classification", price, reviews=3, seeds=10)

    # 30 s at $30/h is $0.25 a review; the gate reviewed 3 of 10 items, and random review as many.
    assert compared["all_human"]["cost_per_label_usd"] == pytest.approx(0.25)
    assert compared["all_human"]["quality"]["accuracy"] == 1.0
    assert compared["gate"]["cost_per_label_usd"] == pytest.approx(0.075)
    assert compared["gate"]["savings_vs_all_human"] == pytest.approx(0.7)
    assert compared["ai_only"]["cost_per_label_usd"] == 0.0
    assert compared["random_review"]["reviewed"] == 3
    assert compared["random_review"]["cost_per_label_usd"] == pytest.approx(0.075)
    assert compared["price_model"]["description"] == "reviewer 30 s/item at $30/h, model $0"
