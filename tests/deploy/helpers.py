"""Helpers of the deployment tests: the repository's root, the programs they run, and reading YAML."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

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
    """Parse YAML with PyYAML from this environment, or else with the Python that runs docker-compose (its Debian
    package depends on python3-yaml): PyYAML is no declared dependency of the workspace."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return _load_yaml_elsewhere(text)
    return yaml.safe_load(text)


def _load_yaml_elsewhere(text: str) -> Any:
    compose = Path(program("docker-compose", "docker-compose"))
    shebang = compose.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    interpreter = shebang.removeprefix("#!").split()
    code = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    result = subprocess.run([*interpreter, "-c", code], input=text, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def read_yaml(path: Path) -> Any:
    return load_yaml(path.read_text(encoding="utf-8"))
