"""The whole loop across four processes on Kafka and MongoDB: a project, items labeled cold (everything goes to
people), reviews that train the labeler, later items auto-accepted, and every item final exactly once, as the
review API, the topics and the metrics service each tell it."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from labelgate_client import LabelgateClient
from labelgate_core.topics import DECISION_MADE, LABEL_FINALIZED, REVIEW_SUBMITTED

from .observe import count_per, mongo, read_events
from .processes import Cluster
from .workload import all_decided, all_final, corpus, create_project, review_queue, submit, until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

COLD, WARM = 60, 140
"""60 cold-start items are reviewed (the labeler needs 20 to train); then 140 meet a trained model."""


async def test_the_loop_runs_across_four_processes_and_finalizes_every_item_once(services: Cluster) -> None:
    project_id = f"loop-{uuid.uuid4().hex[:6]}"
    items = corpus(COLD + WARM, seed=7, prefix=project_id)
    db = mongo(services.mongo_url)
    async with LabelgateClient(services.url("review-api"), timeout=60.0) as client:
        project = await create_project(client, project_id, threshold=0.8, audit_rate=0.05)

        await submit(client, project, items[:COLD])
        await until(lambda: all_decided(client, project), "the cold-start items are decided")
        cold = await client.stats(project_id)
        assert cold.queued == COLD, "with no model yet, every item goes to a person"
        await review_queue(client, project)

        async def model_trained() -> bool:
            labeler = db.get_database(services.database("labeler"))
            found = await labeler.get_collection("projects").find_one({"_id": project_id})
            return bool(found and int(found.get("model_version") or 0) >= 1)

        await until(model_trained, "the labeler trains a model on the reviews")

        await submit(client, project, items[COLD:])
        await until(lambda: all_final(client, project), "every item is final")
        stats = await client.stats(project_id)

    ids = set(project.gold)
    assert len(ids) == COLD + WARM
    assert stats.final == len(ids)
    assert stats.queue_depth == 0
    assert stats.final_by_source.auto > WARM // 3, f"a trained model auto-accepts most later items: {stats}"
    assert stats.final_by_source.auto + stats.final_by_source.review == len(ids)

    # Every item decided once, queued at most once, final once: in the stores...
    decisions = await count_per(db, services.database("router"), "decisions", "item_id", {"project_id": project_id})
    tasks = await count_per(db, services.database("review-api"), "tasks", "item_id", {"project_id": project_id})
    finals = await count_per(db, services.database("review-api"), "finals", "item_id", {"project_id": project_id})
    reviews = await count_per(db, services.database("review-api"), "reviews", "item_id", {"project_id": project_id})
    assert decisions == Counter(dict.fromkeys(ids, 1))
    assert finals == Counter(dict.fromkeys(ids, 1))
    assert set(tasks) <= ids
    assert set(tasks.values()) == {1}, "no item queued twice"
    assert reviews == tasks, "each queued item reviewed once"

    # ... and on the topics: one decision and one final label per item, one review.submitted per review.
    for topic, expected in ((DECISION_MADE, ids), (LABEL_FINALIZED, ids), (REVIEW_SUBMITTED, set(reviews))):
        events = [m.event for m in await read_events(services.bootstrap, topic, services.origin)]
        mine = Counter(e["item_id"] for e in events if e.get("project_id") == project_id)
        assert mine == Counter(dict.fromkeys(expected, 1)), f"{topic}: one event per item"

    # The metrics service, which reads every topic on its own schedule, counts each of them once too.
    report: dict[str, Any] = {}

    async def metrics_caught_up() -> bool:
        nonlocal report
        report = httpx.get(f"{services.url('metrics')}/v1/projects/{project_id}/metrics", timeout=10.0).json()
        return bool(sum(report.get("labels_finalized", {}).values()) >= len(ids))

    await until(metrics_caught_up, "the metrics service has read every final label", timeout_s=60)
    assert report["items_submitted"] == len(ids)
    assert sum(report["decisions"].values()) == len(ids)
    assert sum(report["labels_finalized"].values()) == len(ids)
    await db.close()
