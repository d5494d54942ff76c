"""Builds the label provider the settings name: the composition root's one way into this subpackage."""

from __future__ import annotations

from labelgate_core.store.port import Store

from ..provider import LabelProvider, LocalModelProvider
from ..settings import LabelerSettings
from .cache import StoreResponseCache
from .context import StoreContext
from .ensemble import EnsembleProvider
from .openai_client import OpenAIChatClient
from .provider import LLMProvider


def build_provider(settings: LabelerSettings, store: Store, local: LocalModelProvider) -> LabelProvider:
    if settings.provider == "local":
        return local
    context = StoreContext(store)
    cache = StoreResponseCache(store)
    llms = {
        config.name: LLMProvider(config, OpenAIChatClient(config), context=context, cache=cache,
                                 projects=settings.llm_projects)
        for config in (settings.llm, *settings.llm_extra)
    }
    if settings.provider == "openai":
        return llms[settings.llm.name]
    members: list[LabelProvider] = [local if name == "local" else llms[name] for name in settings.ensemble]
    return EnsembleProvider(members)
