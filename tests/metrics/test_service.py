"""The metrics service over a real in-process bus and SQLite store: /metrics shows each event counted once,
across redeliveries and restarts."""

from __future__ import annotations

import pytest
from sklearn.metrics import cohen_kappa_score

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import DecisionMade, ReviewSubmitted

from .builders import P, acme_events, reviewed, tags_events
from .harness import PARTITIONS, Start, stop

pytestmark = pytest.mark.integration


async def test_metrics_show_every_business_aggregate(start: Start) -> None:
    system = await start()
    await system.publish(acme_events())
    m = await system.scrape()

    assert m.get("labelgate_pipeline_items_submitted_total", project=P) == 8
    assert m.get("labelgate_labeler_proposals_total", project=P, model="local-tfidf") == 8
    assert m.get("labelgate_labeler_cost_usd_total", project=P, model="local-tfidf") == pytest.approx(0.016)
    decisions = "labelgate_router_decisions_total"
    assert m.get(decisions, project=P, outcome="auto_accepted", reason="confident") == 2
    assert m.get(decisions, project=P, outcome="needs_review", reason="low_confidence") == 3
    assert m.get(decisions, project=P, outcome="needs_review", reason="disagreement") == 1
    assert m.get(decisions, project=P, outcome="needs_review", reason="audit") == 2
    assert m.get(decisions, project=P, outcome="needs_review", reason="no_confidence") == 1
    assert m.get("labelgate_review_reviews_total", project=P, action="confirm") == 2
    assert m.get("labelgate_review_reviews_total", project=P, action="correct") == 2
    assert m.get("labelgate_pipeline_labels_finalized_total", project=P, source="auto") == 2
    assert m.get("labelgate_pipeline_labels_finalized_total", project=P, source="review") == 4
    assert m.get("labelgate_review_queue_items", project=P) == 2  # q1 and q2

    latency = "labelgate_pipeline_decision_latency_seconds"
    assert m.get(f"{latency}_count", project=P) == 8
    assert m.get(f"{latency}_sum", project=P) == pytest.approx(0.3 + 0.7 + 2 + 4 + 0.4 + 0.2 + 1 + 3)
    assert m.get(f"{latency}_bucket", project=P, le="0.5") == 3
    assert m.get(f"{latency}_bucket", project=P, le="1.0") == 5
    assert m.get(f"{latency}_bucket", project=P, le="+Inf") == 8
    review = "labelgate_review_latency_seconds"
    assert m.get(f"{review}_count", project=P) == 4
    assert m.get(f"{review}_sum", project=P) == pytest.approx(120 + 600 + 40 + 7200)
    assert m.get(f"{review}_bucket", project=P, le="60.0") == 1

    expected_kappa = cohen_kappa_score(["bug", "billing", "other", "bug"], ["bug", "other", "other", "billing"])
    assert m.get("labelgate_agreement_cohen_kappa", project=P) == pytest.approx(expected_kappa)
    assert m.get("labelgate_audit_accuracy_ratio", project=P) == pytest.approx(0.5)  # r3 right, r4 wrong
    assert m.get("labelgate_labeler_model_version", project=P) == 3
    assert m.get("labelgate_pipeline_guideline_version", project=P) == 2


async def test_projects_are_kept_apart_and_multi_label_agreement_is_per_label(start: Start) -> None:
    system = await start()
    await system.publish([*acme_events(), *tags_events()])
    m = await system.scrape()

    assert m.get("labelgate_pipeline_items_submitted_total", project="tags") == 1
    assert m.get("labelgate_pipeline_items_submitted_total", project=P) == 8
    # urgent: AI yes, human no; refund: both yes; legal and vip: both no.
    expected = cohen_kappa_score(["1", "1", "0", "0"], ["0", "1", "0", "0"])
    assert m.get("labelgate_agreement_cohen_kappa", project="tags") == pytest.approx(expected)
    assert m.get("labelgate_audit_accuracy_ratio", project="tags") is None  # nothing audited


async def test_a_redelivered_event_changes_no_count(start: Start) -> None:
    system = await start()
    events = acme_events()
    await system.publish(events)
    before = (await system.scrape()).project(P)

    await system.publish(events)  # the same events again, as a relay that crashed before forgetting them would
    assert (await system.scrape()).project(P) == before


async def test_a_second_review_replaces_the_first_in_agreement(start: Start) -> None:
    system = await start()
    events = acme_events()
    await system.publish(events)
    r4 = next(e for e in events if isinstance(e, DecisionMade) and e.item_id == "r4")
    first = next(e for e in events if isinstance(e, ReviewSubmitted) and e.item_id == "r4")

    await system.publish([reviewed(r4, ("bug",), after=9000)])  # a second reviewer agrees with the AI
    m = await system.scrape()
    assert m.get("labelgate_review_reviews_total", project=P, action="confirm") == 3  # every review counts
    assert m.get("labelgate_audit_accuracy_ratio", project=P) == 1.0  # but only the latest one is the item's
    assert m.get("labelgate_review_queue_items", project=P) == 2
    assert first.labels == ("billing",)


async def test_totals_survive_a_restart_and_a_full_redelivery(start: Start) -> None:
    first = await start()
    events = [*acme_events(), *tags_events()]
    await first.publish(events)
    before = await first.scrape()
    await stop(first)

    # The same store, a bus that lost every committed offset: each event arrives a second time.
    second = await start(MemoryBus(partitions=PARTITIONS))
    restarted = await second.scrape()
    assert restarted.project(P) == before.project(P)
    assert restarted.project("tags") == before.project("tags")

    await second.publish(events)
    after = await second.scrape()
    assert after.project(P) == before.project(P)
    assert after.project("tags") == before.project("tags")


async def test_several_services_in_one_process_share_one_metrics_endpoint(start: Start) -> None:
    first = await start()
    await first.publish(acme_events())
    second = await start(db="other.db")  # registering the collector again must not fail

    text = (await first.http.get("/metrics")).text
    assert text.count("# HELP labelgate_pipeline_items_submitted_total ") == 1
    assert (await first.scrape()).get("labelgate_pipeline_items_submitted_total", project=P) is None

    await stop(second)  # the one still running is shown again
    assert (await first.scrape()).get("labelgate_pipeline_items_submitted_total", project=P) == 8
