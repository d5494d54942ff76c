"""Builds the label provider the settings name: the composition root's one way into this subpackage."""

from __future__ import annotations

from labelgate_core.store.port import Store

from ..provider import LabelProvider, LocalModelProvider
from ..settings import LabelerSettings
from .cache import StoreResponseCache
from .chat import ChatClient
from .config import LLMProviderConfig
from .context import StoreContext
from .ensemble import EnsembleProvider
from .images import ImageSource
from .openai_client import OpenAIChatClient
from .provider import LLMProvider
from .review_api_images import ReviewApiImages


def project_clients(config: LLMProviderConfig, settings: LabelerSettings) -> dict[str, ChatClient]:
    """A client for every project with an endpoint of its own (``llm_projects``), on the provider's settings
    otherwise (timeouts, structured output, limits)."""
    clients: dict[str, ChatClient] = {}
    for project_id, own in settings.llm_projects.items():
        if not own.own_endpoint:
            continue
        update: dict[str, object] = {}
        if own.base_url is not None:
            update["base_url"] = own.base_url
        if own.api_key is not None:
            update["api_key"] = own.api_key
        clients[project_id] = OpenAIChatClient(config.model_copy(update=update))
    return clients


def image_source(settings: LabelerSettings) -> ImageSource | None:
    if settings.review_api_url is None:
        return None
    return ReviewApiImages(settings.review_api_url, api_key=settings.review_api_key,
                           max_bytes=settings.image_max_bytes)


def build_provider(settings: LabelerSettings, store: Store, local: LocalModelProvider) -> LabelProvider:
    if settings.provider == "local":
        return local
    context = StoreContext(store)
    cache = StoreResponseCache(store)
    llms = {
        config.name: LLMProvider(config, OpenAIChatClient(config), context=context, cache=cache,
                                 projects=settings.llm_projects, clients=project_clients(config, settings),
                                 images=image_source(settings))
        for config in (settings.llm, *settings.llm_extra)
    }
    if settings.provider == "openai":
        return llms[settings.llm.name]
    members: list[LabelProvider] = [local if name == "local" else llms[name] for name in settings.ensemble]
    return EnsembleProvider(members)
