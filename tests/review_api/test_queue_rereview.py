"""Re-review of final items over REST: a guideline change that re-queues them, and decisions that question a
final label; the new final replaces the old, which the item keeps."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import LabelFinalized, ReviewSubmitted, RoutingReason
from labelgate_core.topics import LABEL_FINALIZED, REVIEW_SUBMITTED

from .helpers import (
    PROJECT,
    auto_final,
    create_project,
    decision,
    eventually,
    publish,
    queue_items,
    submit,
    wait_published,
    wait_state,
)

pytestmark = pytest.mark.integration


async def lease(api: httpx.AsyncClient, project: str = "news", reviewer: str = "ana") -> dict[str, Any] | None:
    response = await api.post(f"/v1/projects/{project}/queue/lease", json={"reviewer_id": reviewer})
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def review(api: httpx.AsyncClient, task: dict[str, Any], labels: list[str], project: str = "news") -> None:
    response = await api.post(
        f"/v1/projects/{project}/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": labels},
    )
    assert response.status_code == 201, response.text


async def item(api: httpx.AsyncClient, item_id: str, project: str = "news") -> dict[str, Any]:
    body: dict[str, Any] = (await api.get(f"/v1/projects/{project}/items/{item_id}")).json()
    return body


async def finals(api: httpx.AsyncClient, bus: MemoryBus, project: str = "news") -> dict[str, str]:
    """Three final items: two reviewed (sports, politics), one auto-accepted (tech); their ids by label."""
    reviewed = await queue_items(api, bus, project, f"{project} match", f"{project} vote")
    by_label = {}
    while (task := await lease(api, project)) is not None:
        label = "sports" if task["item_id"] == reviewed[0] else "politics"
        await review(api, task, [label], project)
        by_label[label] = task["item_id"]
    [auto] = await submit(api, project, f"{project} phone")
    await publish(bus, auto_final(project, auto, labels=("tech",)))
    await wait_state(api, project, auto, "final")
    by_label["tech"] = auto
    return by_label


async def put_guidelines(api: httpx.AsyncClient, requeue: Any, project: str = "news") -> httpx.Response:
    body: dict[str, Any] = {"text": "Sports about politics is politics."}
    if requeue is not None:
        body["requeue"] = requeue
    return await api.put(f"/v1/projects/{project}/guidelines", json=body)


async def test_a_guideline_change_without_requeue_queues_nothing(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await finals(api, bus)

    response = await put_guidelines(api, None)

    assert response.status_code == 200, response.text
    assert response.json()["requeued"] == 0
    assert await lease(api) is None


async def test_requeue_all_sends_every_older_final_back_and_the_new_final_replaces_the_old(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    ids = await finals(api, bus)

    response = await put_guidelines(api, "all")

    assert response.status_code == 200, response.text
    assert response.json()["requeued"] == 3
    assert response.json()["guideline_version"] == 2
    sports = ids["sports"]
    queued = await item(api, sports)
    assert queued["state"] == "queued"
    assert queued["final"]["labels"] == ["sports"], "the old final stands until the re-review replaces it"
    leased = []
    while (task := await lease(api)) is not None:
        assert task["reasons"] == ["guideline_change"]
        assert task["guideline_version"] == 2
        leased.append(task["item_id"])
        await review(api, task, ["politics"])
    assert sorted(leased) == sorted(ids.values())
    done = await item(api, sports)
    assert done["state"] == "final"
    assert done["final"]["labels"] == ["politics"]
    assert done["final"]["guideline_version"] == 2
    assert [(f["labels"], f["guideline_version"]) for f in done["earlier_finals"]] == [(["sports"], 1)]
    finalized = [e for e in await wait_published(bus, LABEL_FINALIZED, 6) if isinstance(e, LabelFinalized)]
    again = [e for e in finalized if e.item_id == sports and e.producer == "review-api"]
    assert [(e.labels, e.guideline_version) for e in again] == [(("sports",), 1), (("politics",), 2)]
    reviews = [e for e in await wait_published(bus, REVIEW_SUBMITTED, 5) if isinstance(e, ReviewSubmitted)]
    assert {e.guideline_version for e in reviews if e.item_id == ids["tech"]} == {2}
    export = (await api.get("/v1/projects/news/export.jsonl")).text.strip().splitlines()
    assert len(export) == 3
    assert all('"politics"' in line for line in export)


async def test_requeue_by_label_sends_back_only_finals_with_those_labels(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    ids = await finals(api, bus)

    response = await put_guidelines(api, ["sports", "tech"])

    assert response.json()["requeued"] == 2
    assert (await item(api, ids["politics"]))["state"] == "final"
    leased = set()
    while (task := await lease(api)) is not None:
        leased.add(task["item_id"])
        await review(api, task, ["tech"])
    assert leased == {ids["sports"], ids["tech"]}


async def test_a_retried_guideline_change_queues_nothing_twice(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await finals(api, bus)

    first = await put_guidelines(api, "all")
    retried = await put_guidelines(api, "all")

    assert first.json()["requeued"] == 3
    assert retried.json()["requeued"] == 0
    assert (await api.get("/v1/projects/news/stats")).json()["queue_depth"] == 3


async def test_requeue_is_scoped_to_the_project(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await create_project(api, id="other")
    await finals(api, bus)
    await finals(api, bus, "other")

    response = await put_guidelines(api, "all")

    assert response.json()["requeued"] == 3
    assert (await api.get("/v1/projects/other/stats")).json()["queue_depth"] == 0
    assert await lease(api, "other") is None


@pytest.mark.parametrize(
    ("requeue", "message"),
    [
        (["sports", "weather"], "'weather'"),
        ("some", "requeue"),
        ([], "requeue"),
    ],
)
async def test_a_bad_requeue_is_422_and_changes_nothing(
    api: httpx.AsyncClient, bus: MemoryBus, requeue: Any, message: str
) -> None:
    await create_project(api)

    response = await put_guidelines(api, requeue)

    assert response.status_code == 422
    assert message in response.json()["error"]["message"]
    project = (await api.get("/v1/projects/news")).json()
    assert project["guideline_version"] == 1
    assert project["guidelines"] == PROJECT["guidelines"]


async def test_a_label_issue_decision_sends_a_final_item_back_once(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    ids = await finals(api, bus)
    suspect = ids["tech"]
    questioned = decision("news", suspect, labels=("tech",), reasons=(RoutingReason.label_issue,))

    await publish(bus, questioned, questioned, decision("news", suspect, reasons=(RoutingReason.label_issue,)))
    await wait_state(api, "news", suspect, "queued")

    async def depth_is_one() -> bool:
        return bool((await api.get("/v1/projects/news/stats")).json()["queue_depth"] == 1)

    await eventually(depth_is_one)
    task = await lease(api)
    assert task is not None
    assert task["item_id"] == suspect
    assert task["reasons"] == ["label_issue"]
    assert await lease(api, reviewer="bob") is None
    await review(api, task, ["sports"])
    done = await item(api, suspect)
    assert done["final"]["labels"] == ["sports"]
    assert done["final"]["source"] == "review"
    assert [(f["labels"], f["source"]) for f in done["earlier_finals"]] == [(["tech"], "auto")]


async def test_an_ordinary_review_decision_for_a_final_item_is_still_ignored(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    ids = await finals(api, bus)

    await publish(bus, decision("news", ids["tech"], reasons=(RoutingReason.low_confidence,)))
    marker = await queue_items(api, bus, "news", "a later item")

    task = await lease(api)
    assert task is not None
    assert task["item_id"] == marker[0], "the final item must not have been queued"
    await review(api, task, ["sports"])
    assert await lease(api) is None
    assert (await item(api, ids["tech"]))["state"] == "final"
