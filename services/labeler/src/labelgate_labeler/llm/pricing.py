"""Token usage and its price: what each billed call cost."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Price


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens served from the endpoint's prompt cache (part of ``input_tokens``)."""
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_tokens + other.cached_tokens,
            self.output_tokens + other.output_tokens,
        )

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def cost_usd(usage: Usage, price: Price) -> float:
    """(input - cached) x input price + cached x cached price + output x output price."""
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return (
        (usage.input_tokens - cached) * price.input + cached * cached_price + usage.output_tokens * price.output
    ) / 1_000_000
