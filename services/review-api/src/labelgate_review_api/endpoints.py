"""The REST API (``/v1``): routers over the service, the caller dependency, and one error body everywhere."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException

from labelgate_core.errors import RetriableError

from .auth import ANONYMOUS, Principal
from .errors import ApiError
from .exports import ExportFormat
from .schemas import (
    AgreementPublic,
    ErrorBody,
    GuidelinesResult,
    GuidelinesUpdate,
    HeartbeatCreate,
    ItemPage,
    ItemPublic,
    ItemsSubmit,
    ItemState,
    LeaseCreate,
    LeasedTask,
    LeasePublic,
    ProjectCreate,
    ProjectPublic,
    ProjectStats,
    ProjectUpdate,
    ReleaseCreate,
    ReviewCreate,
    ReviewerPublic,
    ReviewResult,
    RoutingUpdate,
    SubmitResult,
)
from .service import ReviewApiService

log = logging.getLogger(__name__)

REJECTED = Counter(
    "labelgate_review_api_rejected_requests", "Requests answered with an error, by reason", ["reason"]
)

# -- dependencies --------------------------------------------------------------------------------------------


def get_service(request: Request) -> ReviewApiService:
    return cast(ReviewApiService, request.app.state.review_api)


async def get_principal() -> Principal:
    """The caller. Authentication plugs in here (and only here); until then everyone is the operator."""
    return ANONYMOUS


ServiceDep = Annotated[ReviewApiService, Depends(get_service)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "The project (or the object in it) does not exist"},
    422: {"model": ErrorBody, "description": "The request is not valid"},
}
_QUEUE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorBody, "description": "The caller's lease is lost, or the task is already closed"},
}

# -- projects ------------------------------------------------------------------------------------------------

projects = APIRouter(prefix="/v1/projects", tags=["projects"], responses=_ERRORS)


@projects.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "A project with this id exists"}},
)
async def create_project(body: ProjectCreate, service: ServiceDep, principal: PrincipalDep) -> ProjectPublic:
    """Create a project (guideline version 1)."""
    return await service.create_project(principal, body)


@projects.get("")
async def list_projects(service: ServiceDep, principal: PrincipalDep) -> list[ProjectPublic]:
    return await service.list_projects(principal)


@projects.get("/{project_id}")
async def get_project(project_id: str, service: ServiceDep, principal: PrincipalDep) -> ProjectPublic:
    return await service.get_project(principal, project_id)


@projects.patch("/{project_id}")
async def update_project(
    project_id: str, body: ProjectUpdate, service: ServiceDep, principal: PrincipalDep
) -> ProjectPublic:
    """Change the name, the data owner or the licence: only the fields given (null clears the last two)."""
    return await service.update_project(principal, project_id, body)


@projects.put("/{project_id}/guidelines")
async def update_guidelines(
    project_id: str, body: GuidelinesUpdate, service: ServiceDep, principal: PrincipalDep
) -> GuidelinesResult:
    """Replace the guidelines: the project's guideline version goes up by one.

    With ``requeue`` (`all`, or a list of label names), the items finalized under an older version (all, or
    those whose final labels include a named one) go back to review with reason `guideline_change`; their
    new final replaces the old, which the item keeps in `earlier_finals`. An item already in the queue is not
    queued twice, so a retried request queues nothing new."""
    return await service.update_guidelines(principal, project_id, body)


@projects.patch("/{project_id}/routing")
async def update_routing(
    project_id: str, body: RoutingUpdate, service: ServiceDep, principal: PrincipalDep
) -> ProjectPublic:
    """Change the threshold and/or the audit rate for items submitted from now on."""
    return await service.update_routing(principal, project_id, body)


@projects.get("/{project_id}/stats")
async def project_stats(project_id: str, service: ServiceDep, principal: PrincipalDep) -> ProjectStats:
    return await service.stats(principal, project_id)


@projects.get("/{project_id}/reviewers")
async def project_reviewers(project_id: str, service: ServiceDep, principal: PrincipalDep) -> list[ReviewerPublic]:
    """Everyone who answered review tasks in the project, with their accuracy on its gold items. Gold items whose
    proposal duplicates a training item (leakage) are left out of the accuracy and counted in
    `leaked_gold_items`."""
    return await service.reviewers(principal, project_id)


@projects.get("/{project_id}/agreement")
async def project_agreement(project_id: str, service: ServiceDep, principal: PrincipalDep) -> AgreementPublic:
    """Human-vs-human agreement on overlapped items (answered by several reviewers; see the routing settings
    `overlap_rate` and `overlap_k`): Cohen's kappa, Fleiss' kappa and Krippendorff's alpha, agreement per label,
    and the labels whose guidelines reviewers read differently (`ambiguous_labels`); the same per guideline
    version (`by_guideline_version`, with human-vs-AI agreement under each version), and each reviewer's agreement
    with the AI's proposed labels (`reviewers_vs_ai`: Cohen's kappa and raw agreement, classification and
    multi-label projects)."""
    return await service.agreement(principal, project_id)


# -- items ---------------------------------------------------------------------------------------------------

items = APIRouter(prefix="/v1/projects/{project_id}", tags=["items"], responses=_ERRORS)


@items.post(
    "/items",
    status_code=status.HTTP_202_ACCEPTED,
    responses={413: {"model": ErrorBody, "description": "Too many items, or image bytes, in one request"}},
)
async def submit_items(
    project_id: str, body: ItemsSubmit, service: ServiceDep, principal: PrincipalDep
) -> SubmitResult:
    """Submit up to ``max_batch`` items for labeling, all or nothing.

    Retries are safe for items that carry an ``idempotency_key``: a key the project already knows returns
    the existing item with ``created: false``. Items without a key get one from the server, so sending them
    again creates them again."""
    return await service.submit_items(principal, project_id, body)


@items.get("/items")
async def list_items(
    project_id: str,
    service: ServiceDep,
    principal: PrincipalDep,
    state: ItemState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=200, description="The `next_after` of the previous page")] = None,
) -> ItemPage:
    return await service.list_items(principal, project_id, state=state, limit=limit, after=after)


@items.get("/items/{item_id}")
async def get_item(project_id: str, item_id: str, service: ServiceDep, principal: PrincipalDep) -> ItemPublic:
    """The item with its whole history: the routing decision, the reviews and the final label."""
    return await service.get_item(principal, project_id, item_id)


@items.get(
    "/items/{item_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}, "description": "The uploaded image's bytes"},
        307: {"description": "The image was given by URL: a redirect there"},
    },
)
async def get_item_image(project_id: str, item_id: str, service: ServiceDep, principal: PrincipalDep) -> Response:
    """The image of a boxes item: the uploaded bytes, or a redirect to the URL it was submitted with."""
    where, data = await service.get_image(principal, project_id, item_id)
    if data is None:
        return RedirectResponse(where, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    # Uploads are content-addressed: the bytes behind an item's image never change.
    return Response(data, media_type=where, headers={"Cache-Control": "private, max-age=86400"})


@items.get(
    "/export.jsonl",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One final label per line"}},
)
async def export_finals(project_id: str, service: ServiceDep, principal: PrincipalDep) -> StreamingResponse:
    """Every final label of the project as JSON lines, streamed (the same as ``/export?format=jsonl``)."""
    export = await service.open_training_export(principal, project_id, ExportFormat.jsonl)
    return StreamingResponse(export.body, media_type=export.media_type)


@items.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/plain": {}, "application/json": {}},
            "description": "The final labels in the format asked for, streamed",
        },
        400: {"model": ErrorBody, "description": "The format does not fit the project's task type"},
    },
)
async def export_training_data(
    project_id: str,
    service: ServiceDep,
    principal: PrincipalDep,
    format: Annotated[
        ExportFormat,
        Query(
            description="`jsonl`: Labelgate's lines; `hf`: Hugging Face datasets-style lines (text, label or"
            " labels, spans, boxes); `openai`: chat fine-tuning lines (system = the guidelines at the label's"
            " guideline version, user = the item, assistant = the label as JSON); `conll`: entities as"
            " token<TAB>BIO-tag lines; `coco`: boxes as one COCO document. The JSON-lines formats carry"
            " `data_owner` and `license` on every line, CoNLL in `#` comments at the top, COCO in `info` and"
            " `licenses`."
        ),
    ] = ExportFormat.jsonl,
) -> StreamingResponse:
    """Every final label of the project, for training, streamed."""
    export = await service.open_training_export(principal, project_id, format)
    return StreamingResponse(
        export.body,
        media_type=export.media_type,
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )


# -- the review queue ----------------------------------------------------------------------------------------

queue = APIRouter(prefix="/v1/projects/{project_id}", tags=["review queue"], responses=_QUEUE_ERRORS)


@queue.post(
    "/queue/lease",
    response_model=LeasedTask,
    responses={204: {"description": "Nothing is waiting for review"}},
)
async def lease_task(project_id: str, body: LeaseCreate, service: ServiceDep, principal: PrincipalDep) -> Any:
    """Lease the next task (highest expected value of a review first, then oldest) to one reviewer until the
    lease expires. Tasks that require a skill go only to reviewers who list it in ``skills`` (self-declared
    until reviewers authenticate); an overlapped task is never given twice to one reviewer."""
    task = await service.queue.lease(principal, project_id, body)
    if task is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return task


@queue.post("/tasks/{task_id}/heartbeat")
async def heartbeat(
    project_id: str, task_id: str, body: HeartbeatCreate, service: ServiceDep, principal: PrincipalDep
) -> LeasePublic:
    """Keep holding the task: the lease now ends ``lease_seconds`` from now."""
    return await service.queue.heartbeat(principal, project_id, task_id, body)


@queue.post("/tasks/{task_id}/release", status_code=status.HTTP_204_NO_CONTENT)
async def release(
    project_id: str, task_id: str, body: ReleaseCreate, service: ServiceDep, principal: PrincipalDep
) -> Response:
    """Give the task back to the queue at once."""
    await service.queue.release(principal, project_id, task_id, body)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@queue.post(
    "/tasks/{task_id}/review",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ReviewResult, "description": "This review was already recorded (a retry)"}},
)
async def submit_review(
    project_id: str,
    task_id: str,
    body: ReviewCreate,
    response: Response,
    service: ServiceDep,
    principal: PrincipalDep,
) -> ReviewResult:
    """Review a leased task: the labels become the item's final label.

    Safe to retry: the same review sent again under the same lease returns the review already recorded,
    with status 200, and records nothing new."""
    result, created = await service.queue.review(principal, project_id, task_id, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return result


ROUTERS: Sequence[APIRouter] = (projects, items, queue)

# -- errors --------------------------------------------------------------------------------------------------


def _error(status_code: int, code: str, message: str, details: Any = None) -> JSONResponse:
    REJECTED.labels(code).inc()
    body = ErrorBody.model_validate({"error": {"code": code, "message": message, "details": details}})
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code)


def _path(loc: Sequence[int | str]) -> str:
    parts = list(loc)
    where = ""
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = "" if parts[0] == "body" else f"{parts[0]} parameter "
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return where + (out or "body")


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            loc = error.get("loc", ())
            position = loc[-1] if len(loc) > 1 else None
            reason = (error.get("ctx") or {}).get("error", "malformed")
            return _error(
                400,
                "invalid_json",
                f"the request body is not valid JSON: {reason} at position {position}",
                {"position": position},
            )
        if error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",):
            return _error(422, "validation_error", "the request needs a JSON body")
    details = []
    for error in errors:
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        details.append({"field": _path(error.get("loc", ())), "message": message, "type": error.get("type")})
    shown = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    if len(details) > 5:
        shown += f" (and {len(details) - 5} more)"
    return _error(422, "validation_error", shown, details)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, ours and the framework's, as ``{"error": {"code", "message", "details"}}``."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        error = cast(ApiError, exc)
        return _error(error.status_code, error.code, error.message, error.details)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        return _validation_error(cast(RequestValidationError, exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        error = cast(StarletteHTTPException, exc)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        if error.status_code < 400:
            return Response(status_code=error.status_code, headers=error.headers)
        response = _error(error.status_code, code, str(error.detail))
        if error.headers:
            response.headers.update(error.headers)
        return response

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The store is unreachable or kept conflicting: nothing was applied, and the same request may be sent
        # again (creating items and reviews is idempotent).
        log.warning("store unavailable", extra={"error": str(exc)})
        response = _error(503, "unavailable", "the store is busy or unreachable; retry the request shortly")
        response.headers["Retry-After"] = "1"
        return response

    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _error(500, "internal", "internal server error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RetriableError, unavailable)
    app.add_exception_handler(Exception, internal_error)
