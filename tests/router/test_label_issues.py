"""The label-issue search over final labels: likely wrong finals first, bounded, never the same final twice."""

from __future__ import annotations

import pytest

from labelgate_router.label_issues import FinalScored, suspicious_finals

pytestmark = pytest.mark.unit


def finals(n: int = 120, wrong: tuple[int, ...] = (3, 50, 90)) -> list[FinalScored]:
    out = []
    for i in range(n):
        truth = "spam" if i % 2 else "ham"
        p_spam = 0.97 if truth == "spam" else 0.03
        label = ("ham" if truth == "spam" else "spam") if i in wrong else truth
        out.append(FinalScored(f"i{i}", f"f{i}", label, {"spam": p_spam, "ham": 1 - p_spam}))
    return out


def test_finals_the_model_confidently_contradicts_are_found_worst_first() -> None:
    suspects = suspicious_finals(finals(), ["spam", "ham"], limit=10, min_finals=50)
    assert {s.final.item_id for s in suspects} == {"i3", "i50", "i90"}
    assert all(s.label_quality < 0.05 for s in suspects)
    assert {s.suggested for s in suspects if s.final.item_id == "i3"} == {"spam"}


def test_the_search_is_bounded_skips_finals_already_flagged_and_waits_for_enough_finals() -> None:
    assert len(suspicious_finals(finals(), ["spam", "ham"], limit=2, min_finals=50)) == 2
    rest = suspicious_finals(finals(), ["spam", "ham"], skip={"f3", "f50"}, limit=10, min_finals=50)
    assert [s.final.final_id for s in rest] == ["f90"]
    assert suspicious_finals(finals(40), ["spam", "ham"], limit=10, min_finals=50) == []
    one_class = [f for f in finals() if f.label == "spam"]
    assert suspicious_finals(one_class, ["spam", "ham"], limit=10, min_finals=10) == []
