"""Running a short store transaction again when it lost a race, for callers that are waiting on it (REST
requests). Consumers need none of this: their runner already runs a handler again on ``RetriableError``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ..errors import RetriableError

P = ParamSpec("P")
T = TypeVar("T")

ATTEMPTS = 5


def retry_conflicts(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run ``fn`` again (up to 5 attempts, jittered backoff up to 0.5 s) while it raises ``RetriableError``:
    a write conflict with a concurrent transaction, or a store that blinked. ``fn`` must be one whole
    transaction, so that a failed attempt left nothing behind; the last error is re-raised as it is."""
    wrapped: Callable[P, Awaitable[T]] = retry(
        retry=retry_if_exception_type(RetriableError),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.02, max=0.5),
        reraise=True,
    )(fn)
    return wrapped
