"""The report's figures from hand-made items: what counts as reviewed, the threshold table, the confusion
matrix, human-vs-human agreement and cost."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from labelgate.report import ItemRow, ReportData, ReviewRow, analyse, render_html
from labelgate_client.models import Project

pytestmark = pytest.mark.unit

PROJECT = Project.model_validate(
    {
        "id": "inbox",
        "name": "Inbox",
        "guidelines": "",
        "guideline_version": 2,
        "task": {"type": "classification", "labels": [{"name": "spam"}, {"name": "ham"}]},
        "routing": {},
        "data_owner": "ACME <legal>",
        "license": "CC-BY-4.0",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
)


def item(
    n: int,
    ai: str | None,
    human: str,
    confidence: float | None,
    *,
    source: str = "review",
    calibrated: float | None = None,
    reviewers: tuple[tuple[str, str], ...] = (("rita", ""),),
    reasons: tuple[str, ...] = ("low_confidence",),
) -> ItemRow:
    reviews = tuple(ReviewRow(who, (label or human,), 10.0) for who, label in reviewers) if source == "review" else ()
    return ItemRow(
        item_id=f"i{n}",
        ai_labels=(ai,) if ai else (),
        confidence=confidence,
        calibrated=calibrated,
        reasons=reasons,
        final_labels=(human,),
        final_source=source,
        reviews=reviews,
    )


def data(items: list[ItemRow], metrics: dict[str, object] | None = None) -> ReportData:
    return ReportData(project=PROJECT, items=items, metrics=metrics, models=[])


def test_cold_starts_are_reviewed_but_not_measured_against_the_ai() -> None:
    items = [
        item(0, None, "spam", None, reasons=("no_confidence",)),
        item(1, "spam", "spam", 0.6),
        item(2, "spam", "ham", 0.55),
        item(3, "ham", "ham", 0.95, source="auto", reasons=("confident",)),
    ]

    a = analyse(data(items), hourly_rate_usd=36.0)

    assert (a.n_items, a.n_final, a.n_auto, a.n_reviewed, a.scored) == (4, 4, 1, 3, 2)
    assert a.correct == [True, False]
    assert a.classes == ["ham", "spam"]
    assert a.confusion == [[0, 1], [0, 1]]  # rows human (ham, spam), columns AI
    human_ai = a.agreement[0]
    assert (human_ai.n, human_ai.observed) == (2, 0.5)


def test_thresholds_review_what_is_below_them_and_use_calibrated_confidence() -> None:
    items = [
        item(1, "spam", "spam", 0.9, calibrated=0.65),
        item(2, "spam", "ham", 0.9, calibrated=0.75),
        item(3, "ham", "ham", 0.9, calibrated=0.95),
        item(4, "ham", "spam", 0.9, calibrated=0.97),
    ]

    a = analyse(data(items), hourly_rate_usd=36.0)

    by = {row.threshold: row for row in a.thresholds}
    assert (by[0.6].reviewed_share, by[0.6].accuracy) == (0.0, 0.5)
    assert (by[0.8].reviewed_share, by[0.8].accuracy) == (0.5, 0.75)
    assert (by[0.99].reviewed_share, by[0.99].accuracy) == (1.0, 1.0)
    assert a.calibrated == [0.65, 0.75, 0.95, 0.97]
    assert a.confidence == [0.9, 0.9, 0.9, 0.9]


def test_items_reviewed_by_two_people_give_human_agreement() -> None:
    items = [
        item(n, "spam", "spam", 0.5, reviewers=(("ana", "spam"), ("bo", "spam" if n % 4 else "ham"))) for n in range(8)
    ] + [item(9, "ham", "ham", 0.5)]

    a = analyse(data(items), hourly_rate_usd=36.0)

    human = a.agreement[-1]
    assert human.pair == "human vs human"
    assert human.n == 8
    assert human.observed == 0.75
    assert human.value is not None
    assert human.value < 0.75


def test_cost_is_llm_plus_reviewer_time_against_all_human() -> None:
    items = [item(1, "spam", "spam", 0.5), item(2, "ham", "ham", 0.99, source="auto")]

    a = analyse(
        data(items, {"cost_usd_total": 0.5, "agreement": {}}), hourly_rate_usd=36.0, human_seconds_per_label=30.0
    )

    assert a.cost.llm_cost_usd == 0.5
    assert a.cost.review_cost_usd == pytest.approx(0.1)  # 10 s at $36/h
    assert a.cost.baseline_cost_usd == pytest.approx(0.6)  # 2 labels x 30 s at $36/h
    assert a.llm_cost_known


def test_the_page_escapes_what_it_shows_and_notes_missing_data() -> None:
    page = render_html(data([]), analyse(data([]), hourly_rate_usd=30.0))

    assert "<dd>ACME &lt;legal&gt;</dd>" in page
    assert "No reviewed item had a scored AI proposal yet" in page
    assert "No model version with a holdout accuracy yet" in page
    assert "n/a (no metrics for the project)" in page
    assert 'src="data:image/png;base64,' in page  # the cost chart is always drawn


def test_the_review_apis_overlap_agreement_replaces_the_items_own() -> None:
    overlap = {
        "overlapped_items": 5,
        "answers": 10,
        "cohen_kappa": 0.6,
        "fleiss_kappa": 0.58,
        "krippendorff_alpha": 0.61,
        "labels": [{"label": "spam", "support": 6, "specific_agreement": 0.5, "ambiguous": True}],
        "ambiguous_labels": ["spam"],
    }
    report = ReportData(
        project=PROJECT, items=[item(1, "spam", "spam", 0.5)], metrics=None, models=[], human_agreement=overlap
    )

    a = analyse(report, hourly_rate_usd=30.0)
    page = render_html(report, a)

    human = [row for row in a.agreement if row.pair == "human vs human"]
    assert [(row.statistic, row.value, row.n) for row in human] == [
        ("Cohen's kappa", 0.6, 5),
        ("Fleiss' kappa", 0.58, 5),
        ("Krippendorff's alpha", 0.61, 5),
    ]
    assert "<tr><td>spam</td><td>6</td><td>50.0%</td><td>yes</td></tr>" in page
