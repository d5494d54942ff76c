"""The metrics domain: what each event counts, the review queue, and the agreement math."""

from __future__ import annotations

import pytest
from sklearn.metrics import cohen_kappa_score

from labelgate_core.events import DecisionMade, DecisionOutcome, FinalSource, ReviewSubmitted, RoutingReason
from labelgate_metrics.aggregates import (
    DECISION_LATENCY,
    DECISIONS,
    QUEUE,
    Aggregates,
    Agreement,
    ItemState,
    ReviewRecord,
    changes_for,
    cohen_kappa,
    histogram_quantile,
    queue_change,
)

from .builders import (
    TAGS_TASK,
    decided,
    finalized,
    guideline_changed,
    human_reviewed,
    model_updated,
    reviewed,
    scored,
    sent_to_review,
    submitted,
)

pytestmark = pytest.mark.unit


def record(ai: tuple[str, ...], human: tuple[str, ...], *, audited: bool = False) -> ReviewRecord:
    return ReviewRecord(multi=False, ai=ai, human=human, audited=audited)


# -- Cohen's kappa ---------------------------------------------------------------------------------------


def test_kappa_matches_sklearn_and_the_textbook_value() -> None:
    # 50 items: both say yes 20 times, both no 15 times, they disagree 15 times: p_o = .7, p_e = .5, kappa = .4
    ratings = [("yes", "yes")] * 20 + [("no", "no")] * 15 + [("yes", "no")] * 5 + [("no", "yes")] * 10
    expected = cohen_kappa_score([a for a, _ in ratings], [h for _, h in ratings])
    assert cohen_kappa(ratings) == pytest.approx(expected)
    assert cohen_kappa(ratings) == pytest.approx(0.4)


def test_kappa_over_three_classes_matches_sklearn() -> None:
    ai = ["billing", "bug", "bug", "other", "billing", "other", "bug", "billing"]
    human = ["billing", "bug", "other", "other", "bug", "other", "bug", "billing"]
    assert cohen_kappa(list(zip(ai, human, strict=True))) == pytest.approx(cohen_kappa_score(ai, human))


def test_kappa_is_undefined_below_two_ratings() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([("bug", "bug")]) is None


def test_kappa_is_one_when_both_sides_always_used_the_same_single_class() -> None:
    # sklearn says NaN here (chance agreement is 1); the AI and the humans never disagreed.
    assert cohen_kappa([("spam", "spam")] * 3) == 1.0


def test_kappa_is_zero_when_each_side_always_used_its_own_class() -> None:
    assert cohen_kappa([("spam", "ham")] * 3) == pytest.approx(0.0)


def test_multi_label_reviews_are_rated_as_one_binary_membership_per_label() -> None:
    item = sent_to_review("p", "i", ("urgent", "refund"), (RoutingReason.low_confidence,), decision_s=1,
                          task=TAGS_TASK)
    decision = item[-1]
    assert isinstance(decision, DecisionMade)
    review = ReviewRecord.from_review(reviewed(decision, ("refund", "legal", "spam-ring"), after=30, task=TAGS_TASK))

    assert review.multi
    # The task's labels, plus a label the human added that the task does not list.
    assert dict(zip(review.classes, review.ratings(), strict=True)) == {
        "legal": ("0", "1"),
        "refund": ("1", "1"),
        "spam-ring": ("0", "1"),
        "urgent": ("1", "0"),
        "vip": ("0", "0"),
    }


def test_single_label_reviews_are_rated_by_the_label_itself() -> None:
    events = human_reviewed("p", "i", ("bug",), ("billing",), (RoutingReason.low_confidence,),
                            decision_s=1, review_s=30)
    review = next(e for e in events if isinstance(e, ReviewSubmitted))
    assert ReviewRecord.from_review(review).ratings() == [("bug", "billing")]


def test_agreement_leaves_items_the_ai_proposed_nothing_for_out_of_kappa() -> None:
    records = [record(("bug",), ("bug",)), record(("billing",), ("other",)), record((), ("bug",))]
    agreement = Agreement.of(records)
    assert agreement.reviewed_items == 3
    assert agreement.kappa_ratings == 2
    assert agreement.kappa == pytest.approx(cohen_kappa_score(["bug", "billing"], ["bug", "other"]))


# -- audit accuracy --------------------------------------------------------------------------------------


def test_audit_accuracy_counts_only_audited_items_and_ignores_label_order() -> None:
    records = [
        ReviewRecord(multi=True, ai=("refund", "urgent"), human=("urgent", "refund"), audited=True),
        record(("bug",), ("billing",), audited=True),
        record(("bug",), ("bug",), audited=True),
        record(("bug",), ("billing",)),  # sent to review for low confidence: not an audit
    ]
    agreement = Agreement.of(records)
    assert agreement.audited_items == 3
    assert agreement.audit_accuracy == pytest.approx(2 / 3)


def test_audit_accuracy_is_undefined_without_audits() -> None:
    assert Agreement.of([record(("bug",), ("bug",))]).audit_accuracy is None


def test_an_audit_reason_on_the_decision_marks_the_review_as_audited() -> None:
    events = human_reviewed("p", "i", ("bug",), ("bug",), (RoutingReason.audit,), decision_s=1, review_s=30)
    review = next(e for e in events if isinstance(e, ReviewSubmitted))
    assert ReviewRecord.from_review(review).audited


def test_a_second_review_of_an_item_replaces_the_first() -> None:
    aggregates = Aggregates(refresh_s=0)
    aggregates.put_review("p", "i1", record(("bug",), ("billing",), audited=True))
    aggregates.put_review("p", "i2", record(("other",), ("other",)))
    aggregates.put_review("p", "i1", record(("bug",), ("bug",), audited=True))

    agreement = aggregates.agreement("p")
    assert agreement.reviewed_items == 2
    assert agreement.audit_accuracy == 1.0
    assert agreement.kappa == 1.0


def test_agreement_is_recomputed_at_most_once_per_refresh_interval() -> None:
    now = [0.0]
    aggregates = Aggregates(refresh_s=5.0, clock=lambda: now[0])
    aggregates.put_review("p", "i1", record(("bug",), ("bug",), audited=True))
    assert aggregates.agreement("p").audit_accuracy == 1.0

    aggregates.put_review("p", "i2", record(("bug",), ("other",), audited=True))
    now[0] = 4.0
    assert aggregates.agreement("p").audit_accuracy == 1.0  # cached
    now[0] = 5.5
    assert aggregates.agreement("p").audit_accuracy == 0.5


# -- counting ---------------------------------------------------------------------------------------------


def test_a_decision_counts_once_per_reason_and_once_by_outcome() -> None:
    label = scored(submitted("p", "i"), ("bug",), after=0.5)
    decision = decided(label, DecisionOutcome.needs_review,
                       (RoutingReason.low_confidence, RoutingReason.disagreement), after=1.5)
    aggregates = Aggregates()
    aggregates.apply(changes_for(decision))

    by_reason = {s.key.labels: s.value for s in aggregates.series(DECISIONS, "p")}
    assert by_reason == {("needs_review", "low_confidence"): 1, ("needs_review", "disagreement"): 1}
    report = aggregates.report("p")
    assert report.decisions == {"needs_review": 1}
    assert report.decision_latency.count == 1
    assert report.decision_latency.sum_seconds == pytest.approx(1.5)


def test_latency_histogram_buckets_are_cumulative_and_estimate_quantiles() -> None:
    aggregates = Aggregates()
    for seconds in (0.04, 0.3, 0.3, 2.0, 7200.0):
        label = scored(submitted("p", f"i{seconds}"), ("bug",), after=0.01)
        aggregates.apply(changes_for(decided(label, DecisionOutcome.auto_accepted, (), after=seconds)))

    state = next(aggregates.series(DECISION_LATENCY, "p"))
    cumulative = dict(state.cumulative(DECISION_LATENCY.buckets))
    assert cumulative[0.05] == 1
    assert cumulative[0.5] == 3
    assert cumulative[2.5] == 4
    assert cumulative[3600.0] == 4  # 7200 s is only in +Inf
    assert state.count == 5
    # The median (rank 2.5 of 5) lies in the (0.25, 0.5] bucket, which holds the 2nd and 3rd observations:
    # interpolated as Prometheus does, 0.25 + 0.25 * (2.5 - 1) / 2.
    assert histogram_quantile(0.5, list(cumulative.items()), state.count) == pytest.approx(0.4375)
    assert histogram_quantile(0.5, [], 0) is None


def test_model_and_guideline_versions_never_go_back() -> None:
    aggregates = Aggregates()
    for event in (model_updated("p", 3), model_updated("p", 2), guideline_changed("p", 4), guideline_changed("p", 1)):
        aggregates.apply(changes_for(event))
    report = aggregates.report("p")
    assert (report.model_version, report.guideline_version) == (3, 4)


# -- the review queue -------------------------------------------------------------------------------------


def queue_after(*events: object) -> int:
    """Replay ``events`` through ``ItemState`` and return the queue gauge for their project."""
    state, total = ItemState(), 0
    for event in events:
        assert isinstance(event, (DecisionMade, ReviewSubmitted))
        after = state.advance(event)
        total += int(queue_change("p", state, after).add)
        state = after
    return total


def _decision_and_review() -> tuple[DecisionMade, ReviewSubmitted]:
    events = human_reviewed("p", "i", ("bug",), ("bug",), (RoutingReason.low_confidence,), decision_s=1, review_s=60)
    decision = next(e for e in events if isinstance(e, DecisionMade))
    review = next(e for e in events if isinstance(e, ReviewSubmitted))
    return decision, review


def test_an_item_waits_in_the_queue_from_its_decision_to_its_review() -> None:
    decision, review = _decision_and_review()
    assert queue_after(decision) == 1
    assert queue_after(decision, review) == 0


def test_several_reviewers_of_one_item_take_it_out_of_the_queue_once() -> None:
    decision, review = _decision_and_review()
    second = reviewed(decision, ("bug",), after=90)
    assert queue_after(decision, review, second) == 0


def test_a_review_seen_before_its_decision_leaves_the_queue_empty() -> None:
    decision, review = _decision_and_review()
    assert queue_after(review, decision) == 0


def test_an_item_routed_again_after_its_review_is_queued_again() -> None:
    decision, review = _decision_and_review()
    label = scored(submitted("p", "i"), ("bug",), after=0.1)
    again = decided(label, DecisionOutcome.needs_review, (RoutingReason.guideline_change,), after=86400)
    assert queue_after(decision, review, again) == 1


def test_a_final_label_takes_an_item_out_of_the_queue() -> None:
    decision, _ = _decision_and_review()
    state = ItemState().advance(decision)
    closed = state.advance(finalized(decision, ("bug",), FinalSource.auto, decision.submitted_at))
    assert queue_change("p", state, closed).add == -1
    assert queue_change("p", state, closed).key.metric == QUEUE.name

