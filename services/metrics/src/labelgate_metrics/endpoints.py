"""The metrics read API: one project's aggregates as JSON, for reports and dashboards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.params import Depends

from .schemas import ModelVersionPublic, ProjectMetricsPublic
from .service import MetricsService, ProjectNotFoundError

ProjectId = Annotated[str, Path(min_length=1, max_length=200, description="The project's id")]


def metrics_router(service: MetricsService, *, dependencies: Sequence[Depends] = ()) -> APIRouter:
    """The read API. An app that authenticates its callers passes its check in ``dependencies``."""
    router = APIRouter(prefix="/v1", tags=["metrics"], dependencies=list(dependencies))

    @router.get(
        "/projects/{project_id}/metrics",
        response_model=ProjectMetricsPublic,
        responses={404: {"description": "No event of this project has reached the metrics service"}},
    )
    async def project_metrics(project_id: ProjectId) -> ProjectMetricsPublic:
        """Counts, latencies, cost and agreement of one project, as ``/metrics`` exposes them."""
        try:
            return service.report(project_id)
        except ProjectNotFoundError as exc:
            raise HTTPException(status_code=exc.status_code, detail=str(exc)) from exc

    @router.get(
        "/projects/{project_id}/models",
        response_model=list[ModelVersionPublic],
        responses={404: {"description": "No event of this project has reached the metrics service"}},
    )
    async def model_versions(project_id: ProjectId) -> list[ModelVersionPublic]:
        """The model versions trained for the project, oldest first, with their holdout accuracy: the
        learning curve of the local model."""
        try:
            return await service.model_versions(project_id)
        except ProjectNotFoundError as exc:
            raise HTTPException(status_code=exc.status_code, detail=str(exc)) from exc

    return router
