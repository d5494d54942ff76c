"""The chat-completion port: what the provider asks an endpoint, what comes back, and how calls fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .confidence import TokenLogprob
from .pricing import Usage


@dataclass(frozen=True, slots=True)
class ChatCall:
    model: str
    messages: tuple[dict[str, Any], ...]
    """Chat messages; a message's ``content`` is text, or a list of parts (text and ``image_url``)."""
    response_format: dict[str, Any] | None = None
    temperature: float = 0.0
    max_tokens: int = 200
    logprobs: bool = False
    top_logprobs: int | None = None
    n: int = 1
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Choice:
    content: str | None
    tokens: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ChatReply:
    choices: tuple[Choice, ...]
    usage: Usage


class ChatError(Exception):
    """A call that returned no answer."""


class TransientChatError(ChatError):
    """429, 5xx, a timeout or a dropped connection: worth another try, after ``retry_after_s`` if the server
    said so."""

    def __init__(self, message: str, *, kind: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


class UnsupportedRequestError(ChatError):
    """The endpoint refused the request's shape (400/422): e.g. a ``response_format`` it does not know."""


class FatalChatError(ChatError):
    """Authentication, an unknown model, or another refusal that retrying cannot fix."""


class ChatClient(Protocol):
    async def complete(self, call: ChatCall, *, timeout_s: float) -> ChatReply:
        """Raise ``TransientChatError``, ``UnsupportedRequestError`` or ``FatalChatError`` on failure."""
        ...

    async def close(self) -> None: ...
