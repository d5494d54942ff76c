"""Cost per final label with the gate against labeling everything by hand."""

from __future__ import annotations

import pytest

from labelgate_quality.economics import cost_report

pytestmark = pytest.mark.unit


def test_cost_per_final_label_and_savings_against_all_human() -> None:
    # 1,000 labels; LLM cost $2; 200 reviews of 30 s at $36/h = $60 of review.
    report = cost_report(n_final=1000, llm_cost_usd=2.0, reviewer_seconds=200 * 30, n_reviewed=200,
                         hourly_rate_usd=36.0)
    assert report.review_cost_usd == pytest.approx(60.0)
    assert report.total_cost_usd == pytest.approx(62.0)
    assert report.cost_per_label_usd == pytest.approx(0.062)
    # All-human: 1,000 x 30 s at $36/h = $300.
    assert report.baseline_cost_usd == pytest.approx(300.0)
    assert report.baseline_per_label_usd == pytest.approx(0.3)
    assert report.savings_usd == pytest.approx(238.0)
    assert report.savings_share == pytest.approx(238 / 300)


def test_explicit_human_seconds_and_a_gate_that_costs_more() -> None:
    report = cost_report(n_final=10, llm_cost_usd=5.0, reviewer_seconds=100, n_reviewed=10, hourly_rate_usd=36.0,
                         human_seconds_per_label=10)
    assert report.baseline_cost_usd == pytest.approx(1.0)
    assert report.savings_share is not None
    assert report.savings_share < 0


def test_empty_and_invalid_inputs() -> None:
    empty = cost_report(n_final=0, llm_cost_usd=0, reviewer_seconds=0, n_reviewed=0, hourly_rate_usd=30)
    assert empty.cost_per_label_usd is None
    assert empty.savings_share is None
    with pytest.raises(ValueError, match="non-negative"):
        cost_report(n_final=1, llm_cost_usd=-1, reviewer_seconds=0, n_reviewed=0, hourly_rate_usd=30)
    with pytest.raises(ValueError, match="more reviewed"):
        cost_report(n_final=1, llm_cost_usd=0, reviewer_seconds=0, n_reviewed=2, hourly_rate_usd=30)
