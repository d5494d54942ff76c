"""The metrics read API: one project's aggregates as JSON, and the standalone app around it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sklearn.metrics import cohen_kappa_score

from labelgate_core.settings import CoreSettings
from labelgate_metrics.main import create_app
from labelgate_metrics.settings import MetricsSettings

from .builders import P, acme_events, tags_events
from .harness import Start

pytestmark = pytest.mark.integration


async def test_project_metrics_as_json(start: Start) -> None:
    system = await start()
    await system.publish([*acme_events(), *tags_events()])

    response = await system.http.get(f"/v1/projects/{P}/metrics")
    assert response.status_code == 200
    body = response.json()
    assert body["project_id"] == P
    assert body["items_submitted"] == 8
    assert body["proposals"] == {"local-tfidf": 8}
    assert body["cost_usd_total"] == pytest.approx(0.016)
    assert body["cost_usd_per_final_label"] == pytest.approx(0.016 / 6)
    assert body["decisions"] == {"auto_accepted": 2, "needs_review": 6}
    assert body["decision_reasons"] == {
        "auto_accepted": {"confident": 2},
        "needs_review": {"low_confidence": 3, "disagreement": 1, "audit": 2, "no_confidence": 1},
    }
    assert body["reviews"] == {"confirm": 2, "correct": 2}
    assert body["labels_finalized"] == {"auto": 2, "review": 4}
    assert body["queue_items"] == 2
    assert body["decision_latency"]["count"] == 8
    assert body["decision_latency"]["p50_seconds"] == pytest.approx(0.75)
    assert body["review_latency"]["count"] == 4
    assert body["review_latency"]["mean_seconds"] == pytest.approx((120 + 600 + 40 + 7200) / 4)
    assert body["agreement"] == {
        "cohen_kappa": pytest.approx(
            cohen_kappa_score(["bug", "billing", "other", "bug"], ["bug", "other", "other", "billing"])
        ),
        "kappa_ratings": 4,
        "reviewed_items": 4,
        "audited_items": 2,
        "audit_accuracy": 0.5,
        # A classification project has no spans or boxes to agree on.
        "span_items": 0,
        "span_precision": None,
        "span_recall": None,
        "span_f1": None,
        "box_items": 0,
        "box_mean_iou": None,
    }
    assert body["model_version"] == 3
    assert body["guideline_version"] == 2


async def test_project_metrics_are_scoped_to_the_project(start: Start) -> None:
    system = await start()
    await system.publish([*acme_events(), *tags_events()])

    body = (await system.http.get("/v1/projects/tags/metrics")).json()
    assert body["items_submitted"] == 1
    assert body["reviews"] == {"correct": 1}
    assert body["queue_items"] == 0
    assert body["agreement"]["kappa_ratings"] == 4  # one item, one rating per label of the task
    assert body["model_version"] is None


async def test_a_project_never_seen_is_not_found(start: Start) -> None:
    system = await start()
    await system.publish(acme_events())

    response = await system.http.get("/v1/projects/nobody/metrics")
    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]


async def test_the_standalone_app_serves_metrics_and_the_read_api(tmp_path: Path) -> None:
    core = CoreSettings(bus="memory", store="sqlite", data_dir=tmp_path, bus_journal=False)
    app = create_app(core, MetricsSettings())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metrics") as client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        assert "# TYPE labelgate_pipeline_items_submitted_total counter" in (await client.get("/metrics")).text
        assert (await client.get(f"/v1/projects/{P}/metrics")).status_code == 404
    assert (tmp_path / "metrics.db").exists()
