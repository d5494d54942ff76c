"""The prompt's context from the labeler's own store: the project's latest guidelines and its reviewed items."""

from __future__ import annotations

from collections.abc import Sequence

from labelgate_core.events import Span, TaskSpec
from labelgate_core.store.port import Store

from .fewshot import FewShotBank
from .prompt import Example, Guidelines


class StoreContext:
    def __init__(self, store: Store, *, examples: str = "examples", projects: str = "projects",
                 refresh_s: float = 5.0) -> None:
        self._store = store
        self._examples = examples
        self._projects = projects
        self.bank = FewShotBank(self._load, refresh_s=refresh_s)

    async def guidelines(self, project_id: str) -> Guidelines | None:
        project = await self._store.find_one(self._projects, {"_id": project_id})
        if project is None or not project.get("guidelines"):
            return None
        version = project.get("guidelines_version")
        return Guidelines(int(version) if version is not None else None, str(project["guidelines"]))

    async def examples(self, project_id: str, task: TaskSpec, text: str, k: int) -> Sequence[Example]:
        allowed = set(task.label_names)
        chosen = await self.bank.select(project_id, task.type.value, text, k * 2 if k else 0)
        # Examples labeled under an older label set would teach labels the schema no longer has.
        return [
            e for e in chosen
            if all(label in allowed for label in e.labels) and all(s.label in allowed for s in e.spans)
        ][:k]

    async def _load(self, project_id: str, task_type: str) -> Sequence[Example]:
        docs = await self._store.find(
            self._examples, {"project_id": project_id, "task_type": task_type},
            sort=[("first_reviewed_ts", 1), ("_id", 1)],
        )
        return [
            Example(
                str(doc["text"]),
                tuple(str(x) for x in doc["labels"]),
                doc.get("action") == "correct",
                spans=tuple(Span.model_validate(x) for x in doc.get("spans") or ()),
            )
            for doc in docs
        ]
