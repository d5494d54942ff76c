"""Agreement per guideline version and per reviewer over REST: human-vs-human figures for the items reviewed
under each version, human-vs-AI agreement of each reviewer's answers with the proposed labels."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sklearn.metrics import cohen_kappa_score

from labelgate_core.bus.memory import MemoryBus
from labelgate_review_api.overlap import agreement_report
from labelgate_review_api.settings import ReviewApiSettings

from .helpers import create_project, decision, publish, submit, wait_state

pytestmark = pytest.mark.integration

LEASE = "/v1/projects/news/queue/lease"

# text -> (AI's proposal, ana's answer, bob's answer); ana always takes the proposal, bob does not.
VERSION_1 = {
    "v1-a": ("sports", "sports", "sports"),
    "v1-b": ("sports", "sports", "sports"),
    "v1-c": ("tech", "tech", "tech"),
    "v1-d": ("tech", "tech", "sports"),
}
VERSION_2 = {
    "v2-a": ("sports", "sports", "tech"),
    "v2-b": ("tech", "tech", "sports"),
    "v2-c": ("sports", "sports", "sports"),
    "v2-d": ("tech", "tech", "tech"),
}


@pytest.fixture
def settings() -> ReviewApiSettings:
    return ReviewApiSettings(queue_depth_refresh_s=0.5, agreement_min_support=2)


async def queue_proposed(
    api: httpx.AsyncClient, bus: MemoryBus, plan: dict[str, tuple[str, str, str]]
) -> dict[str, str]:
    """Submit the plan's items and route each to review with its proposal; item id -> text."""
    ids = await submit(api, "news", *plan)
    await publish(bus, *(decision("news", i, labels=(plan[t][0],)) for i, t in zip(ids, plan, strict=True)))
    for item_id in ids:
        await wait_state(api, "news", item_id, "queued")
    return dict(zip(ids, plan, strict=True))


async def answer_all(api: httpx.AsyncClient, reviewer: str, answers: dict[str, str]) -> int:
    """Let ``reviewer`` answer every task they can lease, by item id; how many."""
    count = 0
    while True:
        response = await api.post(LEASE, json={"reviewer_id": reviewer})
        if response.status_code == 204:
            return count
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        review = await api.post(
            f"/v1/projects/news/tasks/{task['task_id']}/review",
            json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": [answers[task["item_id"]]]},
        )
        assert review.status_code == 201, review.text
        count += 1


async def review_round(api: httpx.AsyncClient, bus: MemoryBus, plan: dict[str, tuple[str, str, str]]) -> None:
    texts = await queue_proposed(api, bus, plan)
    assert await answer_all(api, "ana", {i: plan[t][1] for i, t in texts.items()}) == len(plan)
    assert await answer_all(api, "bob", {i: plan[t][2] for i, t in texts.items()}) == len(plan)


def kappa(first: list[str], second: list[str]) -> float:
    return float(cohen_kappa_score(first, second))


async def test_agreement_is_broken_down_per_guideline_version_and_per_reviewer_against_the_ai(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api, routing={"overlap_rate": 1.0, "overlap_k": 2})
    await review_round(api, bus, VERSION_1)
    changed = await api.put("/v1/projects/news/guidelines", json={"text": "Pick the main topic. Sports wins ties."})
    assert changed.status_code == 200, changed.text
    await review_round(api, bus, VERSION_2)

    response = await api.get("/v1/projects/news/agreement")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["overlapped_items"] == 8
    versions = {entry["guideline_version"]: entry for entry in body["by_guideline_version"]}
    assert sorted(versions) == [1, 2]
    for version, plan in ((1, VERSION_1), (2, VERSION_2)):
        entry = versions[version]
        ai, ana, bob = (list(column) for column in zip(*plan.values(), strict=True))
        assert entry["overlapped_items"] == 4
        assert entry["answers"] == 8
        assert entry["cohen_kappa"] == pytest.approx(kappa(ana, bob))
        assert entry["human_vs_ai"]["items"] == 8
        agree = sum(a == h for a, h in zip(ai + ai, ana + bob, strict=True))
        assert entry["human_vs_ai"]["raw_agreement"] == pytest.approx(agree / 8)
        assert entry["human_vs_ai"]["cohen_kappa"] == pytest.approx(kappa(ana + bob, ai + ai))
    assert versions[1]["cohen_kappa"] > versions[2]["cohen_kappa"], "the reviewers agreed less under version 2"

    reviewers = {entry["reviewer_id"]: entry for entry in body["reviewers_vs_ai"]}
    assert sorted(reviewers) == ["ana", "bob"]
    assert reviewers["ana"] == {"reviewer_id": "ana", "items": 8, "raw_agreement": 1.0, "cohen_kappa": 1.0}
    plans = [*VERSION_1.values(), *VERSION_2.values()]
    assert reviewers["bob"]["items"] == 8
    assert reviewers["bob"]["raw_agreement"] == pytest.approx(5 / 8)
    assert reviewers["bob"]["cohen_kappa"] == pytest.approx(kappa([p[2] for p in plans], [p[0] for p in plans]))


async def test_answers_to_unproposed_items_are_left_out_and_single_answers_count_against_the_ai(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    ids = await submit(api, "news", "proposed", "also proposed", "unscored")
    await publish(
        bus,
        decision("news", ids[0], labels=("sports",)),
        decision("news", ids[1], labels=("tech",)),
        decision("news", ids[2], labels=(), confidence=None),
    )
    for item_id in ids:
        await wait_state(api, "news", item_id, "queued")
    assert await answer_all(api, "cy", {ids[0]: "sports", ids[1]: "sports", ids[2]: "politics"}) == 3

    body = (await api.get("/v1/projects/news/agreement")).json()

    assert body["overlapped_items"] == 0
    assert body["reviewers_vs_ai"] == [{"reviewer_id": "cy", "items": 2, "raw_agreement": 0.5, "cohen_kappa": 0.0}]
    (version,) = body["by_guideline_version"]
    assert version["guideline_version"] == 1
    assert version["overlapped_items"] == 0
    assert version["cohen_kappa"] is None
    assert version["human_vs_ai"]["items"] == 2


async def test_the_breakdown_of_an_unknown_project_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/projects/nope/agreement")

    assert response.status_code == 404
    assert "nope" in response.json()["error"]["message"]


def test_multi_label_answers_agree_with_the_ai_only_on_the_exact_set() -> None:
    tasks = {
        "t1": {"guideline_version": 3, "proposal": {"labels": ["sports", "tech"]}},
        "t2": {"guideline_version": 3, "proposal": {"labels": ["tech"]}},
    }
    answers = [
        {"task_id": "t1", "reviewer_id": "ana", "labels": ["tech", "sports"], "group": "t1", "created_at": "1"},
        {"task_id": "t2", "reviewer_id": "ana", "labels": ["tech", "politics"], "group": "t2", "created_at": "2"},
    ]

    report = agreement_report([], threshold=0.5, min_support=2, answers=answers, tasks=tasks)

    (reviewer,) = report.reviewers_vs_ai
    assert (reviewer.reviewer_id, reviewer.items, reviewer.raw_agreement) == ("ana", 2, 0.5)
    assert report.by_guideline_version[0].guideline_version == 3
    assert report.by_guideline_version[0].human_vs_ai.raw_agreement == 0.5
