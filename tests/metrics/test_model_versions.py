"""The model versions a project's labeler trained, as the read API serves them (the report's learning curve)."""

from __future__ import annotations

import pytest

from .builders import P, acme_events, model_updated, tags_events
from .harness import Start, stop

pytestmark = pytest.mark.integration


async def test_every_model_version_with_its_holdout_accuracy(start: Start) -> None:
    system = await start()
    await system.publish([*acme_events(), *tags_events()])

    response = await system.http.get(f"/v1/projects/{P}/models")

    assert response.status_code == 200
    assert [{k: v for k, v in model.items() if k != "trained_at"} for model in response.json()] == [
        {
            "model_id": "local-tfidf",
            "model_version": 2,
            "trained_on": 100,
            "holdout_accuracy": 0.8,
            "train_seconds": 1.5,
        },
        {
            "model_id": "local-tfidf",
            "model_version": 3,
            "trained_on": 150,
            "holdout_accuracy": 0.8,
            "train_seconds": 1.5,
        },
    ]


async def test_a_redelivered_model_update_is_listed_once_and_survives_a_restart(start: Start) -> None:
    system = await start()
    first = model_updated(P, 1)
    await system.publish([first, first, model_updated(P, 2)])
    await stop(system)

    again = await start()  # a new bus: what it lists comes from the store
    versions = (await again.http.get(f"/v1/projects/{P}/models")).json()

    assert [model["model_version"] for model in versions] == [1, 2]


async def test_a_project_with_events_but_no_model_has_an_empty_list(start: Start) -> None:
    system = await start()
    await system.publish(tags_events())

    response = await system.http.get("/v1/projects/tags/models")

    assert response.status_code == 200
    assert response.json() == []


async def test_an_unknown_project_is_a_404(start: Start) -> None:
    system = await start()

    response = await system.http.get("/v1/projects/nope/models")

    assert response.status_code == 404
