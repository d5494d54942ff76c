"""The typed client against the review API: a whole labeling round trip, errors, and safe retries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from labelgate_client import ItemIn, LabelDef, LabelgateAPIError, LabelgateClient
from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage
from labelgate_core.events import (
    DecisionMade,
    DecisionOutcome,
    Event,
    FinalSource,
    LabelFinalized,
    Proposal,
    RoutingReason,
    utcnow,
)
from labelgate_core.topics import encode, headers_for

pytestmark = pytest.mark.integration

URL = "http://labelgate.test"


async def publish(bus: MemoryBus, *events: Event) -> None:
    """Publish as the router would."""
    await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])


def decision(
    item_id: str, *, outcome: DecisionOutcome = DecisionOutcome.needs_review, confidence: float = 0.3
) -> DecisionMade:
    auto = outcome == DecisionOutcome.auto_accepted
    reasons = (RoutingReason.confident,) if auto else (RoutingReason.low_confidence,)
    return DecisionMade(
        producer="router", project_id="news", item_id=item_id, outcome=outcome, reasons=reasons,
        proposal=Proposal(model_id="local", model_version=1, labels=("sports",), confidence=confidence),
        guideline_version=2, submitted_at=utcnow(),
    )


def auto_final(item_id: str) -> LabelFinalized:
    return LabelFinalized(
        producer="router", project_id="news", item_id=item_id, labels=("sports",), source=FinalSource.auto,
        guideline_version=2, submitted_at=utcnow(),
    )


class LosingTransport(httpx.AsyncBaseTransport):
    """Delivers the first ``lose`` requests to the server but drops their responses, as a broken connection
    would after the server acted."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lose: int) -> None:
        self.inner = inner
        self.lose = lose
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        response = await self.inner.handle_async_request(request)
        if self.lose > 0:
            self.lose -= 1
            await response.aread()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


class RefusingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        raise httpx.ConnectError("connection refused", request=request)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_a_labeling_round_trip(transport: httpx.AsyncBaseTransport, bus: MemoryBus) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        assert await client.healthz()
        assert await client.readyz()
        project = await client.create_project(
            "news", name="News", labels=["sports", LabelDef(name="politics", description="government")],
            guidelines="Main topic.", threshold=0.8,
        )
        assert (project.guideline_version, project.routing.threshold) == (1, 0.8)
        assert project.task.label_names == ["sports", "politics"]
        assert (await client.update_guidelines("news", "Main topic; sports wins ties.")).guideline_version == 2
        assert (await client.update_routing("news", audit_rate=0.2)).routing.audit_rate == 0.2
        assert (await client.update_routing("news", target_precision=0.98)).routing.target_precision == 0.98
        cleared = await client.update_routing("news", clear_target_precision=True)
        assert (cleared.routing.target_precision, cleared.routing.audit_rate) == (None, 0.2)
        assert [p.id for p in await client.list_projects()] == ["news"]
        assert (await client.get_project("news")).guidelines == "Main topic; sports wins ties."

        result = await client.submit_items(
            "news",
            ["Goal in the last minute", ItemIn(text="Budget passes", idempotency_key="b-1"),
             {"text": "Election called", "metadata": {"feed": "wire"}}],
        )
        assert (result.accepted, result.duplicates) == (3, 0)
        goal, budget, election = (entry.item_id for entry in result.items)
        again = await client.submit_items("news", [ItemIn(text="Budget passes", idempotency_key="b-1")])
        assert (again.items[0].item_id, again.items[0].created) == (budget, False)

        await publish(
            bus,
            decision(goal, outcome=DecisionOutcome.auto_accepted, confidence=0.97),
            auto_final(goal),
            decision(budget, confidence=0.3),
        )

        async def budget_queued() -> bool:
            return (await client.get_item("news", budget)).state == "queued"

        await until(budget_queued)
        task = await client.lease("news", "ana", lease_seconds=120)
        assert task is not None
        assert (task.item_id, task.text) == (budget, "Budget passes")
        assert task.proposal is not None
        assert task.proposal.labels == ["sports"]
        assert await client.lease("news", "bob") is None
        lease = await client.heartbeat("news", task.task_id, task.lease_token, lease_seconds=300)
        assert lease.lease_expires_at > task.lease_expires_at

        review = await client.review("news", task.task_id, task.lease_token, "ana", ["politics"], duration_s=9.0)
        assert (review.item_id, review.action, review.labels) == (budget, "correct", ["politics"])
        assert await client.review("news", task.task_id, task.lease_token, "ana", ["politics"]) == review

        item = await client.get_item("news", budget)
        assert item.final is not None
        assert (item.state, item.final.source, item.final.labels) == ("final", "review", ["politics"])
        assert [r.reviewer_id for r in item.reviews] == ["ana"]
        assert item.decision is not None
        assert item.decision.proposal.confidence == 0.3

        page = await client.list_items("news", state="submitted")
        assert [i.item_id for i in page.items] == [election]
        assert page.next_after is None
        assert (await client.get_item("news", election)).metadata == {"feed": "wire"}

        async def goal_final() -> bool:
            return (await client.get_item("news", goal)).state == "final"

        await until(goal_final)
        stats = await client.stats("news")
        assert (stats.items, stats.final, stats.reviews, stats.queue_depth) == (3, 2, 1, 0)
        assert (stats.final_by_source.auto, stats.final_by_source.review) == (1, 1)

        finals = [final async for final in client.export("news")]
        assert sorted(f.item_id for f in finals) == sorted([goal, budget])
        assert {f.item_id: f.source for f in finals} == {goal: "auto", budget: "review"}


async def test_errors_carry_status_code_and_message(transport: httpx.AsyncBaseTransport) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        with pytest.raises(LabelgateAPIError) as missing:
            await client.get_project("nope")
        assert (missing.value.status, missing.value.code, missing.value.message) == (
            404, "not_found", "project 'nope' not found"
        )
        await client.create_project("news", name="News", labels=["a"])
        with pytest.raises(LabelgateAPIError) as taken:
            await client.create_project("news", name="News", labels=["a"])
        assert taken.value.status == 409
        with pytest.raises(LabelgateAPIError) as invalid:
            await client.submit_items("news", ["fine", "  "])
        assert invalid.value.status == 422
        assert "items[1].text" in invalid.value.message
        with pytest.raises(LabelgateAPIError) as export_missing:
            [final async for final in client.export("nope")]
        assert export_missing.value.status == 404


async def test_submission_retried_after_a_lost_response_creates_nothing_twice(
    transport: httpx.AsyncBaseTransport,
) -> None:
    async with LabelgateClient(URL, transport=transport) as setup:
        await setup.create_project("news", name="News", labels=["a", "b"])
    losing = LosingTransport(transport, lose=1)

    async with LabelgateClient(URL, transport=losing) as client:
        result = await client.submit_items("news", ["one", "two", "three"])

        assert losing.sent == 2
        assert result.accepted == 0
        assert result.duplicates == 3
        assert (await client.stats("news")).items == 3


async def test_lease_is_not_retried(transport: httpx.AsyncBaseTransport) -> None:
    refusing = RefusingTransport()

    async with LabelgateClient(URL, transport=refusing, retries=3) as client:
        with pytest.raises(httpx.ConnectError):
            await client.lease("news", "ana")
        assert refusing.attempts == 1
        with pytest.raises(httpx.ConnectError):
            await client.get_project("news")
        assert refusing.attempts == 1 + 4
        assert not await client.healthz()


async def test_an_error_without_the_api_body_is_still_an_api_error() -> None:
    def bad_gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="upstream unavailable")

    async with LabelgateClient(URL, transport=httpx.MockTransport(bad_gateway), retries=0) as client:
        with pytest.raises(LabelgateAPIError) as error:
            await client.stats("news")
    assert (error.value.status, error.value.code, error.value.message) == (502, "http_error", "upstream unavailable")
