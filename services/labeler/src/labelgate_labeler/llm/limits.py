"""Per-provider limits: calls in flight, requests per minute and tokens per minute (leaky buckets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter


class Limits:
    def __init__(
        self, *, concurrency: int, requests_per_minute: float | None = None, tokens_per_minute: float | None = None
    ) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._requests = AsyncLimiter(requests_per_minute, 60.0) if requests_per_minute else None
        self._tokens = AsyncLimiter(tokens_per_minute, 60.0) if tokens_per_minute else None
        self._tpm = tokens_per_minute

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[None]:
        """Hold one call's place: the rate buckets are drawn before the concurrency slot is taken, so a call
        waiting for its minute does not keep another from running."""
        if self._requests is not None:
            await self._requests.acquire()
        if self._tokens is not None and self._tpm is not None:
            # A call larger than the whole minute's allowance still runs, alone, once the bucket is full.
            await self._tokens.acquire(min(float(estimated_tokens), self._tpm))
        async with self._slots:
            yield


def estimate_tokens(messages: tuple[dict[str, str], ...], max_output_tokens: int) -> int:
    """About four characters a token: enough to pace a tokens-per-minute budget without a tokenizer."""
    return sum(len(m.get("content", "")) for m in messages) // 4 + max_output_tokens
