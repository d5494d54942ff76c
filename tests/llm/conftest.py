"""Fixtures for the language-model tests: the OpenAI-compatible test double on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .openai_double import DoubleConfig, OpenAIDouble, ServedDouble


@pytest.fixture
def double() -> OpenAIDouble:
    return OpenAIDouble(DoubleConfig())


@pytest.fixture
def served(double: OpenAIDouble) -> Iterator[ServedDouble]:
    with ServedDouble(double) as server:
        yield server
