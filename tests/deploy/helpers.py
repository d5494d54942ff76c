"""Helpers of the deployment tests: the repository's root, the programs they run, and reading YAML."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]

# The service folder, its package (distribution) name, its import name, and the settings class's module.
SERVICES: dict[str, tuple[str, str]] = {
    "review-api": ("labelgate-review-api", "labelgate_review_api"),
    "labeler": ("labelgate-labeler", "labelgate_labeler"),
    "router": ("labelgate-router", "labelgate_router"),
    "metrics": ("labelgate-metrics", "labelgate_metrics"),
}


def program(name: str, package: str) -> str:
    """The path of a program the test runs; fails (not skips) with what to install when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: it comes with the Debian package {package!r}. "
            "scripts/ensure-system-packages.sh installs it (make test runs that script first).",
            pytrace=False,
        )
    return path


def run(command: list[str], *, cwd: Path = ROOT, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``command``; fails with its output unless it exits 0."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` exited with {result.returncode}:\n{result.stdout}\n{result.stderr}", pytrace=False
        )
    return result


def load_yaml(text: str) -> Any:
    return yaml.safe_load(text)


def read_yaml(path: Path) -> Any:
    return load_yaml(path.read_text(encoding="utf-8"))
