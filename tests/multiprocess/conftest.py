"""The cluster the multi-process tests share: the four services as separate processes on the session's Kafka
broker and MongoDB server, started once for this folder's tests.

One cluster at a time: the services read and write the real topic names and consumer groups. So that it is not
fed what earlier tests left on those topics, every group starts at the topics' end offsets as they were when
the cluster started (its ``origin``), and every service's database has a prefix of this cluster's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelgate_core.topics import all_topics

from .observe import commit_offsets, end_offsets, ensure_topics, per_topic
from .processes import GROUPS, Cluster


async def _origin(bootstrap: str) -> dict[tuple[str, int], int]:
    await ensure_topics(bootstrap)
    origin = await end_offsets(bootstrap, all_topics())
    for groups in GROUPS.values():
        for group, topics in groups.items():
            await commit_offsets(bootstrap, group, per_topic(origin, topics))
    return origin


@pytest.fixture(scope="package")
def cluster(kafka_bootstrap: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    log_dir: Path = tmp_path_factory.mktemp("cluster")
    running = Cluster.create(kafka_bootstrap, mongo_url, f"mp{uuid.uuid4().hex[:8]}", log_dir)
    running.origin = asyncio.run(_origin(kafka_bootstrap))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def services(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with all four services running and ready (a test that stopped one and failed before it
    restarted it leaves it to this fixture); after the test, none of them may have died on its own."""
    for process in cluster.processes.values():
        if not process.running:
            process.start()
    yield cluster
    cluster.check_alive()
