"""The Dockerfile: one target per service, each image with only its service's package, the core and their locked
dependencies, running unprivileged; and the lock itself keeps every service deployable on its own."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

import pytest

from .helpers import ROOT, SERVICES

pytestmark = pytest.mark.unit


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, each with its instructions (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), flags=re.IGNORECASE)
            assert match, f"unreadable FROM: {args}"
            base, name = match.group(1), match.group(2) or f"stage-{len(found)}"
            current = found[name] = Stage(name, base)
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return found


def chain(name: str) -> list[Stage]:
    """The stage and the stages it is built on, nearest first."""
    everything = stages()
    out = [everything[name]]
    while out[-1].base in everything:
        out.append(everything[out[-1].base])
    return out


def scripts_of(package_folder: str) -> dict[str, str]:
    project = tomllib.loads((ROOT / "services" / package_folder / "pyproject.toml").read_text())["project"]
    scripts: dict[str, str] = project.get("scripts", {})
    return scripts


def locked_dependencies(package: str) -> set[str]:
    """Every package that installing ``package`` from uv.lock brings in (its closure, extras and dev excluded)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    requires = {entry["name"]: [dep["name"] for dep in entry.get("dependencies", [])] for entry in lock["package"]}
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(requires.get(name, []))
    return seen


def workspace() -> dict[str, str]:
    """The workspace's packages: distribution name -> folder (relative to the root)."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(ROOT.glob(pattern)):
            if (folder / "pyproject.toml").is_file():
                project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
                found[project["name"]] = folder.relative_to(ROOT).as_posix()
    return found


def not_for(service: str) -> set[str]:
    """Workspace packages a service must never need: the other services, the CLI and the HTTP client."""
    others = {package for name, (package, _) in SERVICES.items() if name != service}
    return others | {"labelgate", "labelgate-client"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_has_a_target_that_starts_it_unprivileged(service: str) -> None:
    target = stages()[service]
    command = target.all("CMD")
    assert len(command) == 1
    assert command[0].startswith("["), "the exec form: the service is PID 1 and gets SIGTERM itself"
    assert command[0].strip('[]" ') in scripts_of(service)
    users = [args for stage in chain(service) for args in stage.all("USER")]
    assert users, f"{service} runs as root"
    uid = users[0].split(":")[0]
    assert uid.isdigit(), "a numeric id, which Kubernetes' runAsNonRoot can verify"
    assert int(uid) != 0, f"{service} runs as root"
    assert any("/readyz" in check for check in target.all("HEALTHCHECK"))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_image_installs_only_its_own_package_and_the_core(service: str) -> None:
    package = SERVICES[service][0]
    target = stages()[service]
    copies = target.all("COPY")
    sources = {m.group(1) for args in copies if (m := re.search(r"--from=(\S+)", args))}
    assert len(sources) == 1, f"{service} copies from {sources}"
    builder = chain(sources.pop())
    syncs = [args for stage in builder for args in stage.all("RUN") if "uv sync" in args]
    assert syncs, f"{service}'s build stage runs no uv sync"
    for args in syncs:
        assert "--frozen" in args, "installs exactly what uv.lock says"
        assert "--no-dev" in args
        assert re.search(rf"--package {re.escape(package)}(\s|$)", args), args
        assert "--all-packages" not in args
    copied = {args.split()[0] for stage in builder for args in stage.all("COPY") if "/src" in args.split()[0]}
    members = workspace()
    needed = {f"{members[name]}/src" for name in locked_dependencies(package) if name in members}
    assert needed <= copied, "uv builds every workspace package the service needs from its source"
    forbidden = {f"{members[name]}/src" for name in not_for(service) if name in members}
    assert copied & forbidden == set(), "the image gets no other service's code"


def test_the_build_reads_the_whole_workspace() -> None:
    """uv refuses a workspace whose members' pyproject.toml files are missing, even to install one package."""
    sources = {source for args in stages()["build"].all("COPY") for source in args.split()[:-1]}
    wanted = {"uv.lock", "pyproject.toml"} | {f"{folder}/pyproject.toml" for folder in workspace().values()}
    assert wanted - sources == set(), "add a COPY line to the build stage for each new workspace member"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_lock_lets_each_service_be_deployed_without_the_others(service: str) -> None:
    package = SERVICES[service][0]
    assert package in workspace()
    needs = locked_dependencies(package)
    assert "labelgate-core" in needs
    assert needs & not_for(service) == set()


def test_the_image_uses_the_uv_version_of_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    wanted = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, flags=re.MULTILINE)
    assert wanted, "the Makefile pins no UV_VERSION"
    args = [args for stage in stages().values() for args in stage.all("ARG") if args.startswith("UV_VERSION=")]
    assert args == [f"UV_VERSION={wanted.group(1)}"]


def test_the_build_context_has_what_the_dockerfile_copies_and_leaves_out_the_rest() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: only what the images need is sent to the builder"
    included = [re.compile(re.escape(p[1:]).replace(r"\*", "[^/]+")) for p in patterns if p.startswith("!")]

    def sent(path: str) -> bool:
        parts = path.split("/")
        return any(rule.fullmatch("/".join(parts[:n])) for rule in included for n in range(1, len(parts) + 1))

    for path in (".venv", ".git", ".cache", ".tools", ".labelgate", "tests", "benchmarks", "docs", "cli/src"):
        assert not sent(path), f"{path} is sent to the builder"
    copied = {
        source
        for stage in stages().values()
        for args in stage.all("COPY")
        if "--from=" not in args
        for source in args.split()[:-1]
    }
    assert {source for source in copied if not sent(source)} == set(), "COPY sources that .dockerignore leaves out"
