"""An async, typed client for Labelgate's REST API (``/v1``).

Calls that are safe to repeat (reads, heartbeats, project and routing updates, item submission with idempotency
keys, reviews) are retried on connection errors; the others are sent once. Options left at ``None`` are not
sent: the server's defaults apply, and a server older than an option still accepts calls that do not use it."""

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
    Agreement,
    Box,
    ConsensusMethod,
    ExportFormat,
    FinalLabel,
    GuidelinesResult,
    Item,
    ItemIn,
    ItemPage,
    ItemState,
    LabelDef,
    Lease,
    Project,
    RequeueScope,
    Review,
    Reviewer,
    Span,
    Stats,
    SubmitResult,
    Task,
    TaskType,
)

_PROJECTS = TypeAdapter(list[Project])
_REVIEWERS = TypeAdapter(list[Reviewer])


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
        exclude_unreliable_labels: bool | None = None,
        overlap_rate: float | None = None,
        overlap_k: int | None = None,
        consensus: ConsensusMethod | None = None,
        data_owner: str | None = None,
        license: str | None = None,
    ) -> Project:
        """Create a project. With ``target_precision``, the router derives the auto-accept threshold from
        reviewed items instead of using ``threshold``. ``overlap_rate`` of the review tasks go to ``overlap_k``
        reviewers whose ``consensus`` is the final label; ``data_owner`` and ``license`` travel with every
        export."""
        routing: dict[str, Any] = {
            "threshold": threshold,
            "audit_rate": audit_rate,
            "target_precision": target_precision,
            **_given(
                exclude_unreliable_labels=exclude_unreliable_labels,
                overlap_rate=overlap_rate,
                overlap_k=overlap_k,
                consensus=consensus,
            ),
        }
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
            "routing": routing,
            **_given(data_owner=data_owner, license=license),
        }
        response = await self._send("POST", "/v1/projects", json=body, idempotent=False)
        return Project.model_validate_json(response.content)

    async def get_project(self, project_id: str) -> Project:
        response = await self._send("GET", f"/v1/projects/{_segment(project_id)}", idempotent=True)
        return Project.model_validate_json(response.content)

    async def list_projects(self) -> list[Project]:
        response = await self._send("GET", "/v1/projects", idempotent=True)
        return _PROJECTS.validate_json(response.content)

    async def update_project(
        self,
        project_id: str,
        *,
        name: str | None = None,
        data_owner: str | None = None,
        license: str | None = None,
        clear_data_owner: bool = False,
        clear_license: bool = False,
    ) -> Project:
        """Change the fields given (None leaves one as it is); ``clear_data_owner`` and ``clear_license`` remove
        them."""
        body: dict[str, Any] = _given(name=name, data_owner=data_owner, license=license)
        for field, clear in (("data_owner", clear_data_owner), ("license", clear_license)):
            if clear:
                _refuse_both(field, body)
                body[field] = None
        response = await self._send("PATCH", f"/v1/projects/{_segment(project_id)}", json=body, idempotent=True)
        return Project.model_validate_json(response.content)

    async def update_guidelines(
        self, project_id: str, text: str, *, requeue: RequeueScope | Sequence[str] = "none"
    ) -> GuidelinesResult:
        """New guidelines; the project's guideline version goes up by one (not retried: each call is a version).

        ``requeue`` sends items finalized under an older version back to review: ``"all"`` of them, or those
        whose final labels include one of the label names given; ``requeued`` in the answer counts them. Their
        new final label replaces the old, which the item keeps in ``earlier_finals``."""
        body: dict[str, Any] = {"text": text}
        if isinstance(requeue, str):
            if requeue != "none":
                body["requeue"] = requeue  # anything but "all" is the server's to refuse, with its message
        else:
            body["requeue"] = list(requeue)
        response = await self._send(
            "PUT", f"/v1/projects/{_segment(project_id)}/guidelines", json=body, idempotent=False
        )
        return GuidelinesResult.model_validate_json(response.content)

    async def update_routing(
        self,
        project_id: str,
        *,
        threshold: float | None = None,
        audit_rate: float | None = None,
        target_precision: float | None = None,
        clear_target_precision: bool = False,
        exclude_unreliable_labels: bool | None = None,
        overlap_rate: float | None = None,
        overlap_k: int | None = None,
        consensus: ConsensusMethod | None = None,
    ) -> Project:
        """Change the fields given (None leaves one as it is); ``clear_target_precision`` goes back to the fixed
        threshold. The new values apply to items submitted afterwards."""
        body: dict[str, Any] = _given(
            threshold=threshold,
            audit_rate=audit_rate,
            target_precision=target_precision,
            exclude_unreliable_labels=exclude_unreliable_labels,
            overlap_rate=overlap_rate,
            overlap_k=overlap_k,
            consensus=consensus,
        )
        if clear_target_precision:
            _refuse_both("target_precision", body)
            body["target_precision"] = None
        response = await self._send(
            "PATCH", f"/v1/projects/{_segment(project_id)}/routing", json=body, idempotent=True
        )
        return Project.model_validate_json(response.content)

    async def stats(self, project_id: str) -> Stats:
        response = await self._send("GET", f"/v1/projects/{_segment(project_id)}/stats", idempotent=True)
        return Stats.model_validate_json(response.content)

    async def reviewers(self, project_id: str) -> list[Reviewer]:
        """Everyone who answered review tasks in the project, with their accuracy on its gold items."""
        response = await self._send("GET", f"/v1/projects/{_segment(project_id)}/reviewers", idempotent=True)
        return _REVIEWERS.validate_json(response.content)

    async def agreement(self, project_id: str) -> Agreement:
        """Human-vs-human agreement on the project's overlapped items (see ``overlap_rate``): Cohen's and
        Fleiss' kappa, Krippendorff's alpha, agreement per label and the labels read differently."""
        response = await self._send("GET", f"/v1/projects/{_segment(project_id)}/agreement", idempotent=True)
        return Agreement.model_validate_json(response.content)

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
        """The project's final labels, gold items included (``gold`` says which), read line by line as the
        server streams them."""
        async for line in self._stream_lines(f"/v1/projects/{_segment(project_id)}/export.jsonl"):
            if line.strip():
                yield FinalLabel.model_validate_json(line)

    async def export_bytes(self, project_id: str, format: ExportFormat = "jsonl") -> AsyncIterator[bytes]:
        """The project's export in ``format``, as the raw bytes the server streams (to write to a file as they
        come). The training formats (``hf``, ``openai``, ``conll``, ``coco``) leave gold items out; a format
        that does not fit the project's task type is a 400 ``unsupported_export_format``."""
        async with self._http.stream("GET", self._export_path(project_id), params={"format": format}) as response:
            await _raise_for_error(response)
            async for chunk in response.aiter_bytes():
                yield chunk

    async def export_lines(self, project_id: str, format: ExportFormat = "jsonl") -> AsyncIterator[str]:
        """The project's export in ``format``, line by line as the server streams it, without line endings:
        one JSON document per line for ``jsonl``, ``hf`` and ``openai``; the CoNLL lines as they are (blank
        lines between items); COCO is one JSON document, possibly on one line."""
        async for line in self._stream_lines(self._export_path(project_id), params={"format": format}):
            yield line

    @staticmethod
    def _export_path(project_id: str) -> str:
        return f"/v1/projects/{_segment(project_id)}/export"

    async def _stream_lines(self, path: str, params: Mapping[str, str] | None = None) -> AsyncIterator[str]:
        async with self._http.stream("GET", path, params=params) as response:
            await _raise_for_error(response)
            async for line in response.aiter_lines():
                yield line

    # -- the review queue ----------------------------------------------------------------------------------

    async def lease(
        self,
        project_id: str,
        reviewer_id: str,
        lease_seconds: int | None = None,
        *,
        skills: Sequence[str] | None = None,
    ) -> Task | None:
        """The next task for ``reviewer_id``, or None when nothing waits (not retried: a lost answer would
        leave a task leased to nobody until the lease expires). Tasks that require a skill go only to reviewers
        who list it in ``skills``."""
        body: dict[str, Any] = {"reviewer_id": reviewer_id}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        if skills is not None:
            body["skills"] = list(skills)
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


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None: what a request says of the options the caller chose."""
    return {name: value for name, value in fields.items() if value is not None}


def _refuse_both(field: str, body: Mapping[str, Any]) -> None:
    if field in body:
        raise ValueError(f"give either {field} or clear_{field}, not both")


async def _raise_for_error(response: httpx.Response) -> None:
    """In a streamed response, an error answer is read whole and raised as the API's error."""
    if response.is_error:
        await response.aread()
        raise _error_from(response)


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
