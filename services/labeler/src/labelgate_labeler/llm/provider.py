"""The language-model label provider: prompt, structured output negotiated per endpoint, validation,
confidence, bounded retries under rate limits, response cache, and the cost of every billed call."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from labelgate_core.errors import RetriableError
from labelgate_core.events import Box, ImageRef, Proposal, Span, TaskSpec, TaskType

from ..provider import LabelRequest
from .cache import ResponseCache
from .chat import ChatCall, ChatClient, ChatReply, FatalChatError, TransientChatError, UnsupportedRequestError
from .confidence import (
    box_agreement,
    item_value_probabilities,
    logprob_scores,
    membership_scores,
    span_agreement,
    vote,
)
from .config import ConfidenceMethod, LLMProviderConfig, ProjectLLMConfig, StructuredOutput
from .images import ImageSource, ImageUnavailableError, image_url
from .limits import Limits, estimate_tokens
from .output import Answer, InvalidOutputError, parse_answer
from .pricing import Usage, cost_usd
from .prompt import MAX_ITEM_CHARS, SUPPORTED_TASKS, Example, Guidelines, Prompt, build_prompt

log = logging.getLogger(__name__)

REQUESTS = Counter("labelgate_llm_requests_total", "Calls to a language-model endpoint, by result",
                   ["provider", "result"])
REQUEST_SECONDS = Histogram(
    "labelgate_llm_request_seconds", "Duration of one call to a language-model endpoint", ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TOKENS = Counter("labelgate_llm_tokens_total", "Tokens billed by language-model endpoints", ["provider", "kind"])
COST = Counter("labelgate_llm_cost_usd_total", "USD spent on language-model calls (usage x price table)",
               ["provider"])
CACHE = Counter("labelgate_llm_cache_total", "Response-cache lookups, by result", ["provider", "result"])
INVALID = Counter("labelgate_llm_invalid_outputs_total", "Answers that failed validation (sent to review)",
                  ["provider"])
REPAIRED = Counter("labelgate_llm_repaired_offsets_total",
                   "Entities whose offsets did not match the text and were repaired from their quoted text",
                   ["provider"])

_MODE_ORDER = (StructuredOutput.json_schema, StructuredOutput.json_object_schema, StructuredOutput.json)


class PromptContext(Protocol):
    """What the prompt needs besides the item: the project's guidelines and its reviewed examples."""

    async def guidelines(self, project_id: str) -> Guidelines | None: ...

    async def examples(self, project_id: str, task: TaskSpec, text: str, k: int) -> Sequence[Example]: ...


class NoContext:
    async def guidelines(self, project_id: str) -> Guidelines | None:
        return None

    async def examples(self, project_id: str, task: TaskSpec, text: str, k: int) -> Sequence[Example]:
        return ()


class ProviderUnavailableError(RetriableError):
    """Every attempt failed with a transient (or configuration) error. Carries what was billed meanwhile."""

    def __init__(self, message: str, *, usage: Usage, cost_usd: float, attempts: int) -> None:
        super().__init__(message)
        self.usage = usage
        self.cost_usd = cost_usd
        self.attempts = attempts


@dataclass
class _Spend:
    usage: Usage
    cost: float = 0.0
    attempts: int = 0

    def fields(self) -> dict[str, Any]:
        return {
            "cost_usd": self.cost, "attempts": self.attempts, "input_tokens": self.usage.input_tokens,
            "cached_tokens": self.usage.cached_tokens, "output_tokens": self.usage.output_tokens,
        }


@dataclass(frozen=True, slots=True)
class _Call:
    """One item's prompt as sent to one endpoint, and what its answers are checked against."""

    project_id: str
    model: str
    prompt: Prompt
    text: str
    """The item's text as the model saw it (entity offsets count in it)."""
    image: ImageRef | None
    task: TaskSpec


@dataclass(frozen=True, slots=True)
class _Scoring:
    labels: tuple[str, ...]
    confidence: float | None
    scores: dict[str, float]
    method: str | None
    spans: tuple[Span, ...] = ()
    boxes: tuple[Box, ...] = ()


def _least_certain(scores: Mapping[str, float]) -> float | None:
    return min((max(p, 1.0 - p) for p in scores.values()), default=None)


def response_format(mode: StructuredOutput, schema: dict[str, Any]) -> dict[str, Any] | None:
    if mode is StructuredOutput.json_schema:
        return {"type": "json_schema", "json_schema": {"name": "labels", "schema": schema, "strict": True}}
    if mode is StructuredOutput.json_object_schema:
        return {"type": "json_object", "schema": schema}
    return None


class LLMProvider:
    """One OpenAI-compatible endpoint and model. ``propose`` does network I/O: the labeler calls it outside
    any store transaction."""

    runs_in_transaction = False

    def __init__(
        self,
        config: LLMProviderConfig,
        client: ChatClient,
        *,
        context: PromptContext | None = None,
        cache: ResponseCache | None = None,
        projects: Mapping[str, ProjectLLMConfig] | None = None,
        clients: Mapping[str, ChatClient] | None = None,
        images: ImageSource | None = None,
        limits: Limits | None = None,
        sleep: Any = asyncio.sleep,
    ) -> None:
        self.config = config
        self.client = client
        self.context: PromptContext = context or NoContext()
        self.cache = cache
        self.projects = dict(projects or {})
        self.clients = dict(clients or {})
        """Project → the client of the project's own endpoint (``ProjectLLMConfig.base_url``/``api_key``)."""
        self.images = images
        self.limits = limits or Limits(
            concurrency=config.concurrency,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
        )
        self._sleep = sleep
        wants_logprobs = config.confidence in (ConfidenceMethod.auto, ConfidenceMethod.logprobs)
        modes = _MODE_ORDER if config.structured_output is StructuredOutput.auto else (config.structured_output,)
        # Negotiation: the first (mode, logprobs) pair an endpoint accepts is kept for its later calls. Each
        # endpoint negotiates on its own ("" is the provider's own, a project id one of a project's).
        self._shapes = [(m, True) for m in modes if wants_logprobs] + [(m, False) for m in modes]
        self._shape_at: dict[str, int] = {}

    @property
    def model_id(self) -> str:
        return self.config.model

    @property
    def structured_output(self) -> StructuredOutput:
        """The structured-output mode in use on the provider's own endpoint (after negotiation)."""
        return self._shapes[self._shape_at.get("", 0)][0]

    async def close(self) -> None:
        await self.client.close()
        for client in self.clients.values():
            await client.close()
        if self.images is not None:
            await self.images.close()

    def _endpoint(self, project_id: str) -> str:
        return project_id if project_id in self.clients else ""

    def _model(self, project_id: str) -> str:
        override = self.projects.get(project_id)
        return override.model if override is not None and override.model else self.config.model

    def _few_shot(self, project_id: str) -> int:
        override = self.projects.get(project_id)
        return override.few_shot if override is not None and override.few_shot is not None else self.config.few_shot

    async def prompt(self, request: LabelRequest, image_url: str | None = None) -> Prompt:
        verbalized = self.config.confidence in (ConfidenceMethod.auto, ConfidenceMethod.verbalized)
        guidelines = await self.context.guidelines(request.project_id)
        examples = await self.context.examples(
            request.project_id, request.task, request.text, self._few_shot(request.project_id)
        )
        return build_prompt(request.task, request.text, guidelines=guidelines, examples=examples,
                            verbalized=verbalized, image_url=image_url)

    async def propose(self, request: LabelRequest) -> Proposal:
        model = self._model(request.project_id)
        task = request.task
        if task.type not in SUPPORTED_TASKS:
            return Proposal(model_id=model, model_version=0, labels=(), confidence=None,
                            error=f"the language-model provider does not handle {task.type.value} tasks")
        url: str | None = None
        if task.type is TaskType.boxes:
            try:
                if request.image is None:
                    raise ImageUnavailableError("a boxes item needs an image, and this one has none")
                url = await image_url(request.project_id, request.item_id, request.image, self.images)
            except ImageUnavailableError as exc:
                return Proposal(model_id=model, model_version=0, labels=(), confidence=None, error=str(exc)[:500])
        prompt = await self.prompt(request, url)
        endpoint = self.projects.get(request.project_id)
        own = {"endpoint": endpoint.base_url} if endpoint is not None and endpoint.base_url else {}
        key = prompt.cache_key(model, temperature=self.config.temperature, confidence=self.config.confidence.value,
                               samples=self.config.samples, max_tokens=self.config.max_output_tokens, **own)
        base: dict[str, Any] = {"model_id": model, "model_version": 0, "guideline_version": prompt.guideline_version}
        if self.cache is not None and self.config.cache_responses:
            hit = await self.cache.get(key)
            if hit is not None:
                CACHE.labels(self.config.name, "hit").inc()
                return Proposal(**base, labels=tuple(hit["labels"]), confidence=hit["confidence"],
                                scores=hit["scores"], method=hit["method"],
                                spans=tuple(Span.model_validate(x) for x in hit.get("spans") or ()),
                                boxes=tuple(Box.model_validate(x) for x in hit.get("boxes") or ()))
            CACHE.labels(self.config.name, "miss").inc()
        spend = _Spend(Usage())
        call = _Call(request.project_id, model, prompt, request.text[:MAX_ITEM_CHARS], request.image, task)
        reply = await self._call(call, spend, temperature=self.config.temperature, n=1)
        choice = reply.choices[0] if reply.choices else None
        try:
            answer = parse_answer(choice.content if choice else None, task, text=call.text, image=call.image)
        except InvalidOutputError as exc:
            INVALID.labels(self.config.name).inc()
            return Proposal(**base, labels=(), confidence=None, invalid=True, error=str(exc)[:500], **spend.fields())
        if answer.repaired:
            REPAIRED.labels(self.config.name).inc(answer.repaired)
        scoring = await self._confidence(task, call, answer, choice, spend)
        if self.cache is not None and self.config.cache_responses:
            await self.cache.put(key, {
                "labels": list(scoring.labels), "confidence": scoring.confidence, "scores": scoring.scores,
                "method": scoring.method, "spans": [x.model_dump(mode="json") for x in scoring.spans],
                "boxes": [x.model_dump(mode="json") for x in scoring.boxes],
            })
        return Proposal(**base, labels=scoring.labels, confidence=scoring.confidence, scores=scoring.scores,
                        method=scoring.method, spans=scoring.spans, boxes=scoring.boxes, **spend.fields())

    def _wants_samples(self) -> bool:
        method = self.config.confidence
        wants = method is ConfidenceMethod.self_consistency or (
            method is ConfidenceMethod.auto and self.config.samples > 1
        )
        return wants and self.config.samples > 1

    def _allows(self, method: ConfidenceMethod) -> bool:
        return self.config.confidence in (ConfidenceMethod.auto, method)

    async def _confidence(self, task: TaskSpec, call: _Call, answer: Answer, choice: Any, spend: _Spend) -> _Scoring:
        if task.type in (TaskType.entities, TaskType.boxes):
            return await self._objects_confidence(task, call, answer, choice, spend)
        if task.type is TaskType.multi_label:
            return await self._membership_confidence(task, call, answer, choice, spend)
        if self._allows(ConfidenceMethod.logprobs) and choice.tokens and answer.labels:
            scores = logprob_scores(choice.content or "", choice.tokens, answer.labels[0], task)
            if scores is not None:
                return _Scoring(answer.labels, scores[answer.labels[0]], scores, "logprobs")
        if self._wants_samples():
            scored = vote([a.labels if a is not None else None for a in await self._samples(call, spend)], task)
            if scored.labels:
                return _Scoring(scored.labels, scored.confidence, scored.scores, "self_consistency")
        if self._allows(ConfidenceMethod.verbalized) and answer.verbalized is not None:
            return _Scoring(answer.labels, answer.verbalized, {}, "verbalized")
        return _Scoring(answer.labels, None, {}, None)

    async def _membership_confidence(
        self, task: TaskSpec, call: _Call, answer: Answer, choice: Any, spend: _Spend
    ) -> _Scoring:
        """Multi-label: P(label applies) per label in ``scores``; the item's confidence is that of its least
        certain label (see ``confidence``)."""
        if self._allows(ConfidenceMethod.logprobs) and choice.tokens:
            scores = membership_scores(choice.content or "", choice.tokens, task)
            if scores is not None:
                return _Scoring(answer.labels, _least_certain(scores), scores, "logprobs")
        if self._wants_samples():
            scored = vote([a.labels if a is not None else None for a in await self._samples(call, spend)], task)
            return _Scoring(scored.labels, scored.confidence, scored.scores, "self_consistency")
        if self._allows(ConfidenceMethod.verbalized) and answer.label_confidence:
            chosen = set(answer.labels)
            scores = {name: (p if name in chosen else 1.0 - p)
                      for name, p in answer.label_confidence.items() if name in task.label_names}
            if len(scores) == len(task.label_names):
                return _Scoring(answer.labels, _least_certain(scores), scores, "verbalized")
        if self._allows(ConfidenceMethod.verbalized) and answer.verbalized is not None:
            return _Scoring(answer.labels, answer.verbalized, {}, "verbalized")
        return _Scoring(answer.labels, None, {}, None)

    async def _objects_confidence(
        self, task: TaskSpec, call: _Call, answer: Answer, choice: Any, spend: _Spend
    ) -> _Scoring:
        """Entities and boxes: a confidence per span or box, and one for the item (see ``confidence``)."""
        boxes = task.type is TaskType.boxes
        objects: Sequence[Span | Box] = answer.boxes if boxes else answer.spans
        each: list[float] | None = None
        whole: float | None = None
        method: str | None = None
        if self._wants_samples():
            samples = await self._samples(call, spend)
            if boxes:
                each, whole = box_agreement(answer.boxes, [a.boxes if a is not None else None for a in samples])
            else:
                each, whole = span_agreement(answer.spans, [a.spans if a is not None else None for a in samples])
            method = "self_consistency"
        stated = [o.confidence for o in objects]
        if method is None and self._allows(ConfidenceMethod.verbalized) and objects and None not in stated:
            each, method = [float(c) for c in stated if c is not None], "verbalized"
        if method is None and self._allows(ConfidenceMethod.logprobs) and choice.tokens and objects:
            raw = item_value_probabilities(choice.content or "", choice.tokens, "label" if boxes else "type",
                                           answer.raw_labels, task.label_names)
            if raw is not None:
                each, method = [min(raw[i] for i in sources) for sources in answer.sources], "logprobs"
        if each is None:
            return _Scoring(answer.labels, None, {}, None, answer.spans, answer.boxes)
        if whole is None:
            whole = min(each, default=None)
        scored = [o.model_copy(update={"confidence": c}) for o, c in zip(objects, each, strict=True)]
        scores: dict[str, float] = {}
        for o in scored:
            scores[o.label] = min(scores.get(o.label, 1.0), float(o.confidence or 0.0))
        spans = () if boxes else tuple(o for o in scored if isinstance(o, Span))
        out_boxes = tuple(o for o in scored if isinstance(o, Box)) if boxes else ()
        return _Scoring(answer.labels, whole, scores, method, spans, out_boxes)

    async def _samples(self, call: _Call, spend: _Spend) -> list[Answer | None]:
        wanted = self.config.samples
        answers: list[Answer | None] = []
        calls = 0
        while len(answers) < wanted and calls < wanted:  # an endpoint that ignores ``n`` answers one at a time
            calls += 1
            reply = await self._call(call, spend, temperature=self.config.sample_temperature,
                                     n=wanted - len(answers))
            for choice in reply.choices[: wanted - len(answers)]:
                try:
                    answers.append(parse_answer(choice.content, call.task, text=call.text,
                                                image=call.image))
                except InvalidOutputError:
                    answers.append(None)
        return answers

    async def _call(self, target: _Call, spend: _Spend, *, temperature: float, n: int) -> ChatReply:
        """One answer, with bounded retries: 429 (after Retry-After when given), 5xx, timeouts and dropped
        connections are retried with full-jitter exponential backoff up to ``max_attempts`` calls; a request
        shape the endpoint refuses moves negotiation to the next shape (not counted as a failed attempt)."""
        config = self.config
        prompt = target.prompt
        endpoint = self._endpoint(target.project_id)
        client = self.clients.get(endpoint, self.client)
        failures = 0
        last: Exception | None = None
        while failures < config.max_attempts:
            shape = self._shape_at.get(endpoint, 0)
            mode, logprobs = self._shapes[shape]
            call = ChatCall(
                model=target.model,
                messages=prompt.messages,
                response_format=response_format(mode, prompt.schema),
                temperature=temperature,
                max_tokens=config.max_output_tokens,
                logprobs=logprobs,
                top_logprobs=config.top_logprobs if logprobs else None,
                n=n,
            )
            started = time.perf_counter()
            try:
                async with self.limits.slot(estimate_tokens(prompt.messages, config.max_output_tokens) * n):
                    spend.attempts += 1
                    reply = await client.complete(call, timeout_s=config.timeout_s)
            except TransientChatError as exc:
                REQUESTS.labels(config.name, exc.kind).inc()
                failures += 1
                last = exc
                if failures < config.max_attempts:
                    await self._sleep(self._wait_s(failures, exc.retry_after_s))
                continue
            except UnsupportedRequestError as exc:
                REQUESTS.labels(config.name, "unsupported").inc()
                last = exc
                if shape + 1 < len(self._shapes):
                    self._shape_at[endpoint] = max(self._shape_at.get(endpoint, 0), shape + 1)
                    log.info("endpoint refused a request shape; trying the next",
                             extra={"provider": config.name, "project_id": endpoint or None,
                                    "mode": self._shapes[self._shape_at[endpoint]][0].value,
                                    "error": str(exc)[:300]})
                    continue
                failures = config.max_attempts
                continue
            except FatalChatError as exc:
                REQUESTS.labels(config.name, "error").inc()
                last = exc
                break
            finally:
                REQUEST_SECONDS.labels(config.name).observe(time.perf_counter() - started)
            REQUESTS.labels(config.name, "ok").inc()
            self._bill(reply.usage, spend)
            return reply
        raise ProviderUnavailableError(
            f"{config.name}: no answer after {spend.attempts} call(s): {last!r}"[:1000],
            usage=spend.usage, cost_usd=spend.cost, attempts=spend.attempts,
        )

    def _bill(self, usage: Usage, spend: _Spend) -> None:
        cost = cost_usd(usage, self.config.price)
        spend.usage = spend.usage + usage
        spend.cost += cost
        name = self.config.name
        TOKENS.labels(name, "input").inc(usage.input_tokens)
        TOKENS.labels(name, "cached").inc(usage.cached_tokens)
        TOKENS.labels(name, "output").inc(usage.output_tokens)
        COST.labels(name).inc(cost)

    def _wait_s(self, failures: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.config.max_retry_after_s)
        ceiling = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (failures - 1))
        return random.uniform(0, ceiling)  # noqa: S311 -- jitter spreads retries; it guards no secret
