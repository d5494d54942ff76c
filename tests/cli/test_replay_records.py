"""How the replay reads one item of the API into a record for its baselines: the proposal, the confidence the
router used, and what became final, including an item queued unscored and auto-accepted later."""

from __future__ import annotations

from typing import Any

import pytest

from labelgate.replay import GoldItem, item_record, stale_decision
from labelgate_client.models import Item
from labelgate_quality.agreement import Span

pytestmark = [pytest.mark.unit]

GOLD = GoldItem(
    "tweet-1", "Bob flew to Oslo", ("geo-loc", "person"), {}, (Span(0, 3, "person"), Span(12, 16, "geo-loc"))
)


def item(decision: dict[str, Any] | None, final: dict[str, Any] | None) -> Item:
    return Item.model_validate(
        {
            "item_id": "i1",
            "project_id": "p",
            "text": GOLD.text,
            "idempotency_key": GOLD.key,
            "state": "final" if final else "queued",
            "guideline_version": 1,
            "submitted_at": "2026-01-01T00:00:00Z",
            "decision": decision,
            "final": final,
        }
    )


def decision(outcome: str, confidence: float | None, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "reasons": ["confident" if outcome == "auto_accepted" else "no_confidence"],
        "decided_at": "2026-01-01T00:00:01Z",
        "calibrated_confidence": confidence,
        "proposal": {
            "model_id": "local-crf",
            "model_version": 1 if confidence else 0,
            "confidence": confidence,
            "labels": sorted({s["label"] for s in spans}),
            "spans": spans,
        },
    }


BOB = {"start": 0, "end": 3, "label": "person"}


def test_an_auto_accepted_item_keeps_its_proposal_and_confidence() -> None:
    record = item_record(
        item(
            decision("auto_accepted", 0.97, [BOB]),
            {"labels": ["person"], "source": "auto", "finalized_at": "2026-01-01T00:00:02Z", "spans": [BOB]},
        ),
        GOLD,
    )

    assert not record.reviewed
    assert record.ai_spans == record.final_spans == (Span(0, 3, "person"),)
    assert record.gold_spans == GOLD.spans
    assert record.calibrated_confidence == 0.97


def test_a_reviewed_item_has_the_reviewers_answer_as_final_and_the_models_as_proposal() -> None:
    gold_spans = [{"start": s.start, "end": s.end, "label": s.label} for s in GOLD.spans]
    record = item_record(
        item(
            decision("needs_review", None, []),
            {
                "labels": list(GOLD.labels),
                "source": "review",
                "finalized_at": "2026-01-01T00:00:02Z",
                "spans": gold_spans,
            },
        ),
        GOLD,
    )

    assert record.reviewed
    assert record.ai_spans == ()
    assert record.final_spans == GOLD.spans
    assert record.confidence is None


def test_an_item_auto_accepted_after_an_unscored_decision_counts_as_auto_with_the_final_as_proposal() -> None:
    shown = item(
        decision("needs_review", None, []),
        {"labels": ["person"], "source": "auto", "finalized_at": "2026-01-01T00:00:02Z", "spans": [BOB]},
    )

    record = item_record(shown, GOLD)

    assert stale_decision(shown)
    assert not record.reviewed
    assert record.ai_spans == record.final_spans == (Span(0, 3, "person"),)
    assert record.confidence is None
