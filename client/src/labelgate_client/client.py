"""An async, typed client for Labelgate's REST API (``/v1``).

Calls that are safe to repeat (reads, heartbeats, routing updates, item submission with idempotency keys,
reviews) are retried on connection errors; the others are sent once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from .models import (
    Box,
    FinalLabel,
    Item,
    ItemIn,
    ItemPage,
    ItemState,
    LabelDef,
    Lease,
    Project,
    Review,
    Span,
    Stats,
    SubmitResult,
    Task,
    TaskType,
)

_PROJECTS = TypeAdapter(list[Project])


class LabelgateAPIError(Exception):
    """The API answered with an error: ``status`` is the HTTP status, ``code`` the API's stable error code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _segment(value: str) -> str:
    return quote(value, safe="")


def _error_from(response: httpx.Response) -> LabelgateAPIError:
    try:
        error = response.json()["error"]
        return LabelgateAPIError(
            response.status_code, str(error["code"]), str(error["message"]), error.get("details")
        )
    except (ValueError, KeyError, TypeError):
        return LabelgateAPIError(
            response.status_code, "http_error", response.text or response.reason_phrase or "error"
        )


class LabelgateClient:
    """Use as ``async with LabelgateClient("http://localhost:8000") as client: ...``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers, transport=transport)
        self._retries = retries

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool,
    ) -> httpx.Response:
        attempts = self._retries + 1 if idempotent else 1
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.1, max=2.0),
            retry=retry_if_exception_type(httpx.TransportError),
            reraise=True,
        ):
            with attempt:
                response = await self._http.request(method, path, json=json, params=params)
        if response.is_error:
            raise _error_from(response)
        return response

    @staticmethod
    def _body(model: BaseModel) -> Any:
        return model.model_dump(mode="json", exclude_none=True)

    # -- projects ------------------------------------------------------------------------------------------

    async def create_project(
        self,
        project_id: str,
        *,
        name: str,
        labels: Sequence[str | LabelDef],
        task_type: TaskType = "classification",
        subjective: bool = False,
        guidelines: str = "",
        threshold: float = 0.9,
        audit_rate: float = 0.05,
        target_precision: float | None = None,
    ) -> Project:
        """Create a project. With ``target_precision``, the router derives the auto-accept threshold from
        reviewed items instead of using ``threshold``."""
        body = {
            "id": project_id,
            "name": name,
            "task": {
                "type": task_type,
                "labels": [
                    {"name": label} if isinstance(label, str) else label.model_dump(mode="json") for label in labels
                ],
                "subjective": subjective,
            },
            "guidelines": guidelines,
            "routing": {"threshold": threshold, "audit_rate": audit_rate, "target_precision": target_precision},
        }
        response = await self._send("POST", "/v1/projects", json=body, idempotent=False)
        return Project.model_validate_json(response.content)

    async def get_project(self, project_id: str) -> Project:
        response = await self._send("GET", f"/v1/projects/{_segment(project_id)}", idempotent=True)
        return Project.model_validate_json(response.content)

    async def list_projects(self) -> list[Project]:
        response = await self._send("GET", "/v1/projects", idempotent=True)
        return _PROJECTS.validate_json(response.content)

    async def update_guidelines(self, project_id: str, text: str) -> Project:
        """New guidelines; the project's guideline version goes up by one (not retried: each call is a version)."""
        response = await self._send(
            "PUT", f"/v1/projects/{_segment(project_id)}/guidelines", json={"text": text}, idempotent=False
        )
        return Project.model_validate_json(response.content)

    async def update_routing(
        self,
        project_id: str,
        *,
        threshold: float | None = None,
        audit_rate: float | None = None,
        target_precision: float | None = None,
        clear_target_precision: bool = False,
    ) -> Project:
        """Change the fields given (None leaves one as it is); ``clear_target_precision`` goes back to the fixed
        threshold."""
        fields = {"threshold": threshold, "audit_rate": audit_rate, "target_precision": target_precision}
        body: dict[str, float | None] = {k: v for k, v in fields.items() if v is not None}
        if clear_target_precision:
            body["target_precision"] = None
        response = await self._send(
            "PATCH", f"/v1/projects/{_segment(project_id)}/routing", json=body, idempotent=True
        )
        return Project.model_validate_json(response.content)

    async def stats(self, project_id: str) -> Stats:
        response = await self._send("GET", f"/v1/projects/{_segment(project_id)}/stats", idempotent=True)
        return Stats.model_validate_json(response.content)

    # -- items ---------------------------------------------------------------------------------------------

    async def submit_items(
        self, project_id: str, items: Sequence[ItemIn | str | Mapping[str, Any]]
    ) -> SubmitResult:
        """Submit a batch (a string is an item's text). Items without an idempotency key get a random one here,
        before the first attempt, so retrying after a lost connection never creates an item twice."""
        batch: list[ItemIn] = []
        for item in items:
            parsed = (
                ItemIn(text=item) if isinstance(item, str)
                else item if isinstance(item, ItemIn)
                else ItemIn.model_validate(item)
            )
            if parsed.idempotency_key is None:
                parsed = parsed.model_copy(update={"idempotency_key": f"client-{uuid.uuid4()}"})
            batch.append(parsed)
        response = await self._send(
            "POST",
            f"/v1/projects/{_segment(project_id)}/items",
            json={"items": [self._body(item) for item in batch]},
            idempotent=True,
        )
        return SubmitResult.model_validate_json(response.content)

    async def get_item(self, project_id: str, item_id: str) -> Item:
        response = await self._send(
            "GET", f"/v1/projects/{_segment(project_id)}/items/{_segment(item_id)}", idempotent=True
        )
        return Item.model_validate_json(response.content)

    async def list_items(
        self, project_id: str, *, state: ItemState | None = None, limit: int = 100, after: str | None = None
    ) -> ItemPage:
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        if after is not None:
            params["after"] = after
        response = await self._send(
            "GET", f"/v1/projects/{_segment(project_id)}/items", params=params, idempotent=True
        )
        return ItemPage.model_validate_json(response.content)

    async def export(self, project_id: str) -> AsyncIterator[FinalLabel]:
        """The project's final labels, read line by line as the server streams them."""
        path = f"/v1/projects/{_segment(project_id)}/export.jsonl"
        async with self._http.stream("GET", path) as response:
            if response.is_error:
                await response.aread()
                raise _error_from(response)
            async for line in response.aiter_lines():
                if line.strip():
                    yield FinalLabel.model_validate_json(line)

    # -- the review queue ----------------------------------------------------------------------------------

    async def lease(self, project_id: str, reviewer_id: str, lease_seconds: int | None = None) -> Task | None:
        """The next task for ``reviewer_id``, or None when nothing waits (not retried: a lost answer would
        leave a task leased to nobody until the lease expires)."""
        body: dict[str, Any] = {"reviewer_id": reviewer_id}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        response = await self._send(
            "POST", f"/v1/projects/{_segment(project_id)}/queue/lease", json=body, idempotent=False
        )
        if response.status_code == 204:
            return None
        return Task.model_validate_json(response.content)

    async def heartbeat(
        self, project_id: str, task_id: str, lease_token: str, lease_seconds: int | None = None
    ) -> Lease:
        body: dict[str, Any] = {"lease_token": lease_token}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        response = await self._send(
            "POST",
            f"/v1/projects/{_segment(project_id)}/tasks/{_segment(task_id)}/heartbeat",
            json=body,
            idempotent=True,
        )
        return Lease.model_validate_json(response.content)

    async def release(self, project_id: str, task_id: str, lease_token: str) -> None:
        await self._send(
            "POST",
            f"/v1/projects/{_segment(project_id)}/tasks/{_segment(task_id)}/release",
            json={"lease_token": lease_token},
            idempotent=False,
        )

    async def review(
        self,
        project_id: str,
        task_id: str,
        lease_token: str,
        reviewer_id: str,
        labels: Sequence[str] | None = None,
        duration_s: float | None = None,
        spans: Sequence[Span | Mapping[str, Any]] | None = None,
        boxes: Sequence[Box | Mapping[str, Any]] | None = None,
    ) -> Review:
        """Review a leased task: ``labels`` for classification projects, ``spans`` for entities projects and
        ``boxes`` for boxes projects (their labels are those of the spans or boxes, so ``labels`` can be left
        out). The answer becomes the item's final label. Retried safely: the server returns the review it
        already recorded under this lease."""
        body: dict[str, Any] = {"lease_token": lease_token, "reviewer_id": reviewer_id}
        if labels is not None:
            body["labels"] = list(labels)
        if duration_s is not None:
            body["duration_s"] = duration_s
        if spans is not None:
            body["spans"] = [_span_body(span) for span in spans]
        if boxes is not None:
            body["boxes"] = [_box_body(box) for box in boxes]
        response = await self._send(
            "POST",
            f"/v1/projects/{_segment(project_id)}/tasks/{_segment(task_id)}/review",
            json=body,
            idempotent=True,
        )
        return Review.model_validate_json(response.content)

    async def image(self, project_id: str, item_id: str) -> tuple[bytes, str]:
        """A boxes item's image: its bytes and media type (an image given by URL is fetched from there)."""
        path = f"/v1/projects/{_segment(project_id)}/items/{_segment(item_id)}/image"
        response = await self._send("GET", path, idempotent=True)
        if response.is_redirect and "location" in response.headers:
            response = await self._http.get(response.headers["location"])  # another host: no API error body
            response.raise_for_status()
        return response.content, response.headers.get("content-type", "").split(";")[0].strip()

    # -- operations ----------------------------------------------------------------------------------------

    async def healthz(self) -> bool:
        """Whether the server process answers."""
        try:
            response = await self._http.get("/healthz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def readyz(self) -> bool:
        """Whether the server and its store and bus are ready for traffic."""
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200


def _span_body(span: Span | Mapping[str, Any]) -> dict[str, Any]:
    """What a review says of a span: its place and label (and its text, which the server checks, if known)."""
    given = span.model_dump(mode="json") if isinstance(span, Span) else dict(span)
    body = {key: given[key] for key in ("start", "end", "label")}
    if given.get("text"):
        body["text"] = given["text"]
    return body


def _box_body(box: Box | Mapping[str, Any]) -> dict[str, Any]:
    given = box.model_dump(mode="json") if isinstance(box, Box) else dict(box)
    return {key: given[key] for key in ("label", "x", "y", "width", "height")}
