"""Fixtures shared by the whole suite: the real servers tests talk to, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running Apache Kafka broker (KRaft); yields its bootstrap address."""
    from labelgate_core.testing.servers.kafka import kafka_for_tests

    with kafka_for_tests() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """A running MongoDB-protocol server that supports transactions; yields its connection URL."""
    from labelgate_core.testing.servers.mongo import mongo_for_tests

    with mongo_for_tests() as url:
        yield url
