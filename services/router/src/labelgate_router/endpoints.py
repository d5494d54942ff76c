"""The router's read API: a project's systematic errors (where the AI is consistently wrong)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.params import Depends

from .schemas import SystematicErrorsPublic
from .service import ProjectNotFoundError, RouterService

ProjectId = Annotated[str, Path(min_length=1, max_length=200, description="The project's id")]


def router_api(service: RouterService, *, dependencies: Sequence[Depends] = ()) -> APIRouter:
    """The read API. An app that authenticates its callers passes its check in ``dependencies``."""
    router = APIRouter(prefix="/v1", tags=["quality"], dependencies=list(dependencies))

    @router.get(
        "/projects/{project_id}/systematic-errors",
        response_model=SystematicErrorsPublic,
        responses={404: {"description": "No reviewed outcome of this project has reached the router"}},
    )
    async def systematic_errors(project_id: ProjectId) -> SystematicErrorsPublic:
        """Confusion of AI and human labels, and the AI's accuracy per proposed label, overall and per metadata
        slice, from reviewed items; the labels it is consistently wrong on."""
        try:
            report = await service.systematic_errors(project_id)
        except ProjectNotFoundError as exc:
            raise HTTPException(status_code=exc.status_code, detail=str(exc)) from exc
        settings = service.settings
        return SystematicErrorsPublic.of(
            project_id, report, settings.unreliable_min_support, settings.unreliable_min_accuracy
        )

    return router
