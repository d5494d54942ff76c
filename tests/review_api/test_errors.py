"""Every error, ours or the framework's, comes back in one shape: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY

from labelgate_review_api.main import build_api
from labelgate_review_api.service import ReviewApiService

from .helpers import create_project

pytestmark = pytest.mark.integration


async def test_malformed_json_is_rejected_with_its_position(api: httpx.AsyncClient) -> None:
    await create_project(api)

    response = await api.post(
        "/v1/projects/news/items", content=b'{"items": [{"text": "a"},]}', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert error["message"].startswith("the request body is not valid JSON")
    assert "position 25" in error["message"]
    assert (await api.get("/v1/projects/news/stats")).json()["items"] == 0


async def test_a_missing_body_is_named(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/projects", headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["error"]["message"] == "the request needs a JSON body"


async def test_unknown_routes_and_methods_use_the_error_body(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v2/nothing")
    wrong_method = await api.delete("/v1/projects")

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_an_unexpected_failure_is_a_500_that_reveals_nothing(
    service: ReviewApiService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "list_projects", broken)
    transport = httpx.ASGITransport(app=build_api(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://review") as api:
        response = await api.get("/v1/projects")

    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal server error", "details": None}}


async def test_rejections_are_counted_by_reason(api: httpx.AsyncClient) -> None:
    def rejected(reason: str) -> float:
        return REGISTRY.get_sample_value("labelgate_review_api_rejected_requests_total", {"reason": reason}) or 0.0

    before = rejected("not_found"), rejected("validation_error")

    await api.get("/v1/projects/nope")
    await api.post("/v1/projects", json={"id": "x"})

    assert rejected("not_found") == before[0] + 1
    assert rejected("validation_error") == before[1] + 1
    metrics = (await api.get("/metrics")).text
    assert "labelgate_review_api_rejected_requests_total" in metrics
