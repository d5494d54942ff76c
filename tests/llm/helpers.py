"""Builders shared by the language-model tests."""

from __future__ import annotations

from collections.abc import Sequence

from labelgate_core.events import LabelDef, TaskSpec, TaskType
from labelgate_labeler.llm.config import LLMProviderConfig, Price
from labelgate_labeler.llm.openai_client import OpenAIChatClient
from labelgate_labeler.llm.prompt import Example, Guidelines
from labelgate_labeler.llm.provider import LLMProvider
from labelgate_labeler.provider import LabelRequest

TASK = TaskSpec(labels=(LabelDef(name="billing", description="invoices, refunds"), LabelDef(name="shipping"),
                        LabelDef(name="other")))
MULTI = TaskSpec(type=TaskType.multi_label, labels=TASK.labels)
PRICE = Price(input=0.15, cached_input=0.075, output=0.60)


def config(base_url: str, **fields: object) -> LLMProviderConfig:
    base: dict[str, object] = {
        "base_url": base_url, "model": "double-1", "price": PRICE, "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05, "timeout_s": 1.0, "max_attempts": 4,
    }
    return LLMProviderConfig.model_validate(base | fields)


def request(text: str, task: TaskSpec = TASK, item_id: str = "item-1") -> LabelRequest:
    return LabelRequest(project_id="acme", item_id=item_id, text=text, task=task, guideline_version=2)


class FixedContext:
    def __init__(self, guidelines: Guidelines | None = None, examples: Sequence[Example] = ()) -> None:
        self._guidelines = guidelines
        self._examples = list(examples)

    async def guidelines(self, project_id: str) -> Guidelines | None:
        return self._guidelines

    async def examples(self, project_id: str, task: TaskSpec, text: str, k: int) -> Sequence[Example]:
        return self._examples[:k]


def provider(base_url: str, **fields: object) -> LLMProvider:
    cfg = config(base_url, **fields)
    return LLMProvider(cfg, OpenAIChatClient(cfg))
