"""Who may touch which project: the one place authorization will live once callers authenticate.

Until then every caller is the anonymous operator, who sees every project. A project the caller may not see
is reported exactly like a project that does not exist (404), so ids of other tenants never leak."""

from __future__ import annotations

from dataclasses import dataclass

from labelgate_core.store.port import Doc

from .errors import ProjectNotFoundError
from .repository import ReviewRepository


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    projects: frozenset[str] | None = None
    """The projects the caller may use; None means all of them."""

    def can_access(self, project_id: str) -> bool:
        return self.projects is None or project_id in self.projects


ANONYMOUS = Principal(subject="anonymous")


async def project_for(principal: Principal, repo: ReviewRepository, project_id: str) -> Doc:
    """The project's document, or ``ProjectNotFoundError`` when it is missing or not the caller's."""
    if not principal.can_access(project_id):
        raise ProjectNotFoundError(project_id)
    project = await repo.get_project(project_id)
    if project is None:
        raise ProjectNotFoundError(project_id)
    return project
