"""Systematic errors from reviewed outcomes, and routing that keeps labels the AI gets wrong away from auto-accept."""

from __future__ import annotations

from typing import Any

import pytest

from labelgate_core.events import LabelDef, Proposal, RoutingPolicy, RoutingReason, TaskSpec
from labelgate_router.policy import decide
from labelgate_router.systematic import systematic_errors

pytestmark = pytest.mark.unit

TASK = TaskSpec(labels=(LabelDef(name="spam"), LabelDef(name="ham")))


def outcome(item_id: str, ai: str | None, human: str) -> dict[str, Any]:
    return {"item_id": item_id, "ai_labels": [ai] if ai else [], "labels": [human], "confidence": 0.9 if ai else None}


def test_the_report_names_the_label_and_slice_the_ai_gets_wrong_and_leaves_out_leaked_items() -> None:
    outcomes = [outcome(f"s{i}", "spam", "ham" if i < 18 else "spam") for i in range(30)]
    outcomes += [outcome(f"h{i}", "ham", "ham") for i in range(40)]
    outcomes += [outcome("cold", None, "ham"), outcome("leak", "spam", "ham")]
    metadata = {f"s{i}": {"source": "forum" if i < 18 else "mail"} for i in range(30)}
    metadata |= {f"h{i}": {"source": "mail"} for i in range(40)}
    report = systematic_errors(outcomes, metadata, {"leak"}, min_support=10, min_accuracy=0.8)
    assert report.reviewed == 70
    assert report.leaked == 1
    assert report.unreliable_labels == frozenset({"spam"})
    spam = next(r for r in report.labels if r.label == "spam")
    assert (spam.support, spam.correct, spam.mistaken_for) == (30, 12, {"ham": 18})
    forum = next(r for r in report.slices if (r.slice_field, r.slice_value, r.label) == ("source", "forum", "spam"))
    assert forum.accuracy == 0.0
    assert forum.unreliable
    assert report.classes == ("ham", "spam")
    assert report.matrix == [[40, 18], [0, 12]]  # rows: what reviewers said; columns: what the AI said


def test_an_unreliable_label_goes_to_review_only_when_the_project_asks_for_it() -> None:
    proposal = Proposal(model_id="m", model_version=1, labels=("spam",), confidence=0.99)
    strict = RoutingPolicy(threshold=0.9, audit_rate=0.0, exclude_unreliable_labels=True)
    lenient = RoutingPolicy(threshold=0.9, audit_rate=0.0)
    flagged = decide(proposal, TASK, strict, 0.5, unreliable=frozenset({"spam"}))
    assert flagged.reasons == (RoutingReason.unreliable_label,)
    assert flagged.calibrated_confidence == pytest.approx(0.99)
    assert decide(proposal, TASK, lenient, 0.5, unreliable=frozenset({"spam"})).auto_accepted
    assert decide(proposal, TASK, strict, 0.5, unreliable=frozenset({"ham"})).auto_accepted
