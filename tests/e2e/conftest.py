"""Fixtures of the end-to-end tests: real `labelgate run` processes, reaped whatever the test did."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from .procs import PipelineProcess

PipelineFactory = Callable[..., PipelineProcess]


@pytest.fixture
def pipeline_process(tmp_path: Path) -> Iterator[PipelineFactory]:
    """Makes (not starts) pipeline processes on data folders under the test's tmp_path; any still running at
    the end of the test is killed."""
    made: list[PipelineProcess] = []

    def make(name: str = "data", env: Mapping[str, str] | None = None) -> PipelineProcess:
        pipeline = PipelineProcess(tmp_path / name, env=env)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.kill()
