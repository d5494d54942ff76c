"""The review queue puts the most informative items first and does not queue near-duplicates in a row."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from labelgate_quality.value import (
    Candidate,
    Weights,
    order_queue,
    rarity,
    review_value,
    reviewed_label_counts,
    text_similarity,
)

pytestmark = pytest.mark.unit

COUNTS = {"ham": 900, "spam": 90, "phishing": 10}


def cand(confidence: float | None = 0.8, disagreement: float = 0.0, label: str = "ham", text: str = "x") -> Candidate:
    return Candidate(item_id=text, text=text, label=label, confidence=confidence, disagreement=disagreement)


GRID = np.linspace(0.0, 1.0, 11)


def test_value_decreases_as_confidence_rises() -> None:
    values = [review_value(cand(confidence=float(c)), COUNTS) for c in GRID]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert review_value(cand(confidence=None), COUNTS) == review_value(cand(confidence=0.0), COUNTS)


def test_value_increases_with_disagreement() -> None:
    values = [review_value(cand(disagreement=float(d)), COUNTS) for d in GRID]
    assert all(a < b for a, b in itertools.pairwise(values))


def test_value_increases_as_the_label_gets_rarer() -> None:
    values = [review_value(cand(label=label), COUNTS) for label in ("ham", "spam", "phishing", "never-seen")]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert rarity("ham", COUNTS) == pytest.approx(0.0)
    assert rarity("never-seen", COUNTS) == pytest.approx(1 - 1 / 901)
    assert rarity("ham", {}) == 0.0


def test_value_stays_in_unit_interval_for_any_weights() -> None:
    for w in (Weights(), Weights(1, 0, 0), Weights(0, 0, 1), Weights(3, 2, 1)):
        for c, d in itertools.product(GRID, GRID):
            v = review_value(cand(confidence=float(c), disagreement=float(d), label="new"), COUNTS, weights=w)
            assert 0.0 <= v <= 1.0
    with pytest.raises(ValueError, match="non-negative"):
        Weights(0, 0, 0)


def test_margin_mode_prefers_close_calls() -> None:
    close = Candidate("a", "a", "ham", confidence=0.5, second_confidence=0.45)
    clear = Candidate("b", "b", "ham", confidence=0.5, second_confidence=0.05)
    assert review_value(close, mode="margin") > review_value(clear, mode="margin")
    assert review_value(close) == review_value(clear)


def test_queue_orders_by_value_without_texts_in_common() -> None:
    texts = ["refund my invoice please", "app crashes on export", "zzz qqq", "hello world greeting"]
    cands = [cand(confidence=c, text=t) for c, t in zip((0.9, 0.2, 0.5, 0.7), texts, strict=True)]
    order = [r.item_id for r in order_queue(cands, diversity=0.0)]
    assert order == [texts[1], texts[2], texts[3], texts[0]]


def test_near_duplicates_are_not_queued_in_a_row() -> None:
    dup = "WIN A FREE CRUISE!!! Click here to claim your prize now"
    cands = [
        cand(confidence=0.10, text=dup),
        cand(confidence=0.11, text=dup + " "),
        cand(confidence=0.12, text=dup.lower()),
        cand(confidence=0.30, text="Meeting moved to Thursday, agenda attached"),
    ]
    ranked = order_queue(cands, diversity=0.8, window=1)
    ids = [r.item_id for r in ranked]
    assert ids[0] == dup
    assert ids[1] == "Meeting moved to Thursday, agenda attached"
    assert len(ids) == 4  # duplicates are postponed, never dropped
    assert ranked[1].adjusted == pytest.approx(ranked[1].value, abs=0.05)
    assert order_queue(cands, diversity=0.8, limit=2)[1].item_id == ids[1]


def test_similarity_of_identical_texts_is_one_and_of_unrelated_low() -> None:
    sim = text_similarity(["the same text", "the same text", "entirely different words"])
    assert sim[0, 1] == pytest.approx(1.0)
    assert sim[0, 2] < 0.3
    assert text_similarity(["", ""]).shape == (2, 2)


def test_reviewed_label_counts() -> None:
    assert reviewed_label_counts(["a", "b", "a"]) == {"a": 2, "b": 1}
