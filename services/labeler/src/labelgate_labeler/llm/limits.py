"""Per-provider limits: calls in flight, requests per minute and tokens per minute (leaky buckets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiolimiter import AsyncLimiter


class Limits:
    def __init__(
        self, *, concurrency: int, requests_per_minute: float | None = None, tokens_per_minute: float | None = None
    ) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._requests = _per_second(requests_per_minute) if requests_per_minute else None
        self._tokens = _per_second(tokens_per_minute) if tokens_per_minute else None
        self._token_burst = self._tokens.max_rate if self._tokens is not None else 0.0

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[None]:
        """Hold one call's place: the rate buckets are drawn before the concurrency slot is taken, so a call
        waiting for its minute does not keep another from running."""
        if self._requests is not None:
            await self._requests.acquire()
        if self._tokens is not None:
            # A call larger than the bucket still runs, alone, once the bucket is full.
            await self._tokens.acquire(min(float(estimated_tokens), self._token_burst))
        async with self._slots:
            yield


def _per_second(per_minute: float) -> AsyncLimiter:
    """A bucket that holds one second's worth (so a fresh limiter cannot burst a whole minute's quota at
    once), or one unit refilled every 60/rate seconds below one a second."""
    if per_minute >= 60:
        return AsyncLimiter(per_minute / 60.0, 1.0)
    return AsyncLimiter(1, 60.0 / per_minute)


IMAGE_TOKENS = 1_000
"""What one image part is counted as: vision endpoints bill a few hundred to a few thousand tokens each."""


def estimate_tokens(messages: tuple[dict[str, Any], ...], max_output_tokens: int) -> int:
    """About four characters a token: enough to pace a tokens-per-minute budget without a tokenizer."""
    chars = images = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, str):
            chars += len(content)
            continue
        for part in content:
            if part.get("type") == "image_url":
                images += 1
            else:
                chars += len(str(part.get("text", "")))
    return chars // 4 + images * IMAGE_TOKENS + max_output_tokens
