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
from labelgate_core.events import Proposal, TaskSpec

from ..provider import LabelRequest
from .cache import ResponseCache
from .chat import ChatCall, ChatClient, ChatReply, FatalChatError, TransientChatError, UnsupportedRequestError
from .confidence import logprob_scores, vote
from .config import ConfidenceMethod, LLMProviderConfig, ProjectLLMConfig, StructuredOutput
from .limits import Limits, estimate_tokens
from .output import Answer, InvalidOutputError, parse_answer
from .pricing import Usage, cost_usd
from .prompt import SUPPORTED_TASKS, Example, Guidelines, Prompt, build_prompt

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
        limits: Limits | None = None,
        sleep: Any = asyncio.sleep,
    ) -> None:
        self.config = config
        self.client = client
        self.context: PromptContext = context or NoContext()
        self.cache = cache
        self.projects = dict(projects or {})
        self.limits = limits or Limits(
            concurrency=config.concurrency,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
        )
        self._sleep = sleep
        wants_logprobs = config.confidence in (ConfidenceMethod.auto, ConfidenceMethod.logprobs)
        modes = _MODE_ORDER if config.structured_output is StructuredOutput.auto else (config.structured_output,)
        # Negotiation: the first (mode, logprobs) pair the endpoint accepts is kept for later calls.
        self._shapes = [(m, True) for m in modes if wants_logprobs] + [(m, False) for m in modes]
        self._shape = 0

    @property
    def model_id(self) -> str:
        return self.config.model

    @property
    def structured_output(self) -> StructuredOutput:
        """The structured-output mode in use (after negotiation)."""
        return self._shapes[self._shape][0]

    async def close(self) -> None:
        await self.client.close()

    def _model(self, project_id: str) -> str:
        override = self.projects.get(project_id)
        return override.model if override is not None and override.model else self.config.model

    def _few_shot(self, project_id: str) -> int:
        override = self.projects.get(project_id)
        return override.few_shot if override is not None and override.few_shot is not None else self.config.few_shot

    async def prompt(self, request: LabelRequest) -> Prompt:
        verbalized = self.config.confidence in (ConfidenceMethod.auto, ConfidenceMethod.verbalized)
        guidelines = await self.context.guidelines(request.project_id)
        examples = await self.context.examples(
            request.project_id, request.task, request.text, self._few_shot(request.project_id)
        )
        return build_prompt(request.task, request.text, guidelines=guidelines, examples=examples,
                            verbalized=verbalized)

    async def propose(self, request: LabelRequest) -> Proposal:
        model = self._model(request.project_id)
        if request.task.type not in SUPPORTED_TASKS:
            return Proposal(model_id=model, model_version=0, labels=(), confidence=None,
                            error=f"the language-model provider does not handle {request.task.type.value} tasks")
        prompt = await self.prompt(request)
        key = prompt.cache_key(model, temperature=self.config.temperature, confidence=self.config.confidence.value,
                               samples=self.config.samples, max_tokens=self.config.max_output_tokens)
        base: dict[str, Any] = {"model_id": model, "model_version": 0, "guideline_version": prompt.guideline_version}
        if self.cache is not None and self.config.cache_responses:
            hit = await self.cache.get(key)
            if hit is not None:
                CACHE.labels(self.config.name, "hit").inc()
                return Proposal(**base, labels=tuple(hit["labels"]), confidence=hit["confidence"],
                                scores=hit["scores"], method=hit["method"])
            CACHE.labels(self.config.name, "miss").inc()
        spend = _Spend(Usage())
        reply = await self._call(model, prompt, spend, temperature=self.config.temperature, n=1)
        spent = {
            "cost_usd": spend.cost, "attempts": spend.attempts, "input_tokens": spend.usage.input_tokens,
            "cached_tokens": spend.usage.cached_tokens, "output_tokens": spend.usage.output_tokens,
        }
        choice = reply.choices[0] if reply.choices else None
        try:
            answer = parse_answer(choice.content if choice else None, request.task)
        except InvalidOutputError as exc:
            INVALID.labels(self.config.name).inc()
            return Proposal(**base, labels=(), confidence=None, invalid=True, error=str(exc)[:500], **spent)
        labels, confidence, scores, method = await self._confidence(request.task, model, prompt, answer,
                                                                    choice, spend)
        spent = {
            "cost_usd": spend.cost, "attempts": spend.attempts, "input_tokens": spend.usage.input_tokens,
            "cached_tokens": spend.usage.cached_tokens, "output_tokens": spend.usage.output_tokens,
        }
        if self.cache is not None and self.config.cache_responses:
            await self.cache.put(key, {"labels": list(labels), "confidence": confidence, "scores": scores,
                                       "method": method})
        return Proposal(**base, labels=labels, confidence=confidence, scores=scores, method=method, **spent)

    async def _confidence(
        self, task: TaskSpec, model: str, prompt: Prompt, answer: Answer, choice: Any, spend: _Spend
    ) -> tuple[tuple[str, ...], float | None, dict[str, float], str | None]:
        method = self.config.confidence
        if method in (ConfidenceMethod.auto, ConfidenceMethod.logprobs) and choice.tokens and answer.labels:
            scores = logprob_scores(choice.content or "", choice.tokens, answer.labels[0], task)
            if scores is not None:
                return answer.labels, scores[answer.labels[0]], scores, "logprobs"
        wants_samples = method is ConfidenceMethod.self_consistency or (
            method is ConfidenceMethod.auto and self.config.samples > 1
        )
        if wants_samples and self.config.samples > 1:
            votes = await self._samples(task, model, prompt, spend)
            scored = vote(votes, task)
            if scored.labels or task.type.value == "multi_label":
                return scored.labels, scored.confidence, scored.scores, "self_consistency"
        if method in (ConfidenceMethod.auto, ConfidenceMethod.verbalized) and answer.verbalized is not None:
            return answer.labels, answer.verbalized, {}, "verbalized"
        return answer.labels, None, {}, None

    async def _samples(self, task: TaskSpec, model: str, prompt: Prompt, spend: _Spend) -> list[tuple[str, ...] | None]:
        wanted = self.config.samples
        answers: list[tuple[str, ...] | None] = []
        calls = 0
        while len(answers) < wanted and calls < wanted:  # an endpoint that ignores ``n`` answers one at a time
            calls += 1
            reply = await self._call(model, prompt, spend, temperature=self.config.sample_temperature,
                                     n=wanted - len(answers))
            for choice in reply.choices[: wanted - len(answers)]:
                try:
                    answers.append(parse_answer(choice.content, task).labels)
                except InvalidOutputError:
                    answers.append(None)
        return answers

    async def _call(self, model: str, prompt: Prompt, spend: _Spend, *, temperature: float, n: int) -> ChatReply:
        """One answer, with bounded retries: 429 (after Retry-After when given), 5xx, timeouts and dropped
        connections are retried with full-jitter exponential backoff up to ``max_attempts`` calls; a request
        shape the endpoint refuses moves negotiation to the next shape (not counted as a failed attempt)."""
        config = self.config
        failures = 0
        last: Exception | None = None
        while failures < config.max_attempts:
            mode, logprobs = self._shapes[self._shape]
            call = ChatCall(
                model=model,
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
                    reply = await self.client.complete(call, timeout_s=config.timeout_s)
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
                if self._shape + 1 < len(self._shapes):
                    self._shape += 1
                    log.info("endpoint refused a request shape; trying the next",
                             extra={"provider": config.name, "mode": self.structured_output.value,
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
