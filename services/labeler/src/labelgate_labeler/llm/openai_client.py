"""The chat port over the ``openai`` SDK: any OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
llama.cpp's servers, LiteLLM).

The SDK's own retries are switched off (``max_retries=0``): the provider retries, so that every attempt is
counted, limited by the rate limiters, and priced when it was billed."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import openai
from openai import AsyncOpenAI

from .chat import ChatCall, ChatReply, Choice, FatalChatError, TransientChatError, UnsupportedRequestError
from .confidence import TokenLogprob
from .config import LLMProviderConfig
from .pricing import Usage


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms``, or ``retry-after`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _tokens(logprobs: Any) -> tuple[TokenLogprob, ...] | None:
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None
    out: list[TokenLogprob] = []
    for entry in content:
        top = tuple((str(alt.token), float(alt.logprob)) for alt in (getattr(entry, "top_logprobs", None) or ()))
        out.append(TokenLogprob(str(entry.token), float(entry.logprob), top))
    return tuple(out)


class OpenAIChatClient:
    def __init__(self, config: LLMProviderConfig) -> None:
        self._client = AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key.get_secret_value() or "unused",
            max_retries=0,
            timeout=config.timeout_s,
        )

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, call: ChatCall, *, timeout_s: float) -> ChatReply:
        params: dict[str, Any] = {
            "model": call.model,
            "messages": list(call.messages),
            "temperature": call.temperature,
            "max_tokens": call.max_tokens,
            "timeout": timeout_s,
        }
        if call.n != 1:
            params["n"] = call.n
        if call.response_format is not None:
            params["response_format"] = call.response_format
        if call.logprobs:
            params["logprobs"] = True
            if call.top_logprobs is not None:
                params["top_logprobs"] = call.top_logprobs
        if call.extra_body:
            params["extra_body"] = call.extra_body
        try:
            completion = await self._client.chat.completions.create(**params)
        except openai.APITimeoutError as exc:
            raise TransientChatError(str(exc), kind="timeout") from exc
        except openai.APIConnectionError as exc:
            raise TransientChatError(str(exc), kind="connection") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 429:
                raise TransientChatError(str(exc), kind="rate_limited",
                                         retry_after_s=retry_after_s(exc.response.headers)) from exc
            if status == 500 and _rejected_request_field(exc.message):
                # llama-cpp-python's server answers a request it fails to validate (a response_format type it
                # does not know) with a 500: that is a refusal of the request's shape, not an outage.
                raise UnsupportedRequestError(f"{status}: {exc.message}") from exc
            if status >= 500 or status in (408, 409):
                raise TransientChatError(str(exc), kind="server_error",
                                         retry_after_s=retry_after_s(exc.response.headers)) from exc
            if status in (400, 422):
                raise UnsupportedRequestError(f"{status}: {exc.message}") from exc
            raise FatalChatError(f"{status}: {exc.message}") from exc
        usage = completion.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
        return ChatReply(
            choices=tuple(
                Choice(choice.message.content, _tokens(choice.logprobs), choice.finish_reason)
                for choice in completion.choices or ()
            ),
            usage=Usage(
                input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
        )


def _rejected_request_field(message: str) -> bool:
    """Whether a server error is a validation error about the request's own fields (response_format, logprobs)."""
    return "validation error" in message and ("'body'" in message or '"body"' in message)
