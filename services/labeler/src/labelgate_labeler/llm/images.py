"""Where a boxes item's image comes from, as the model is given it: an ``https:``/``http:`` URL is passed on
as it is, a ``data:`` URL too, and bytes stored by the review API (``ImageRef.blob_id``) are fetched through an
``ImageSource`` and sent inline as a ``data:`` URL."""

from __future__ import annotations

import base64
from typing import Protocol

from labelgate_core.errors import RetriableError
from labelgate_core.events import ImageRef


class ImageUnavailableError(ValueError):
    """The image cannot be had (none stored for the item, no review API configured, too large): the item goes
    to a person with an unscored proposal saying why."""


class ImageFetchError(RetriableError):
    """The review API could not be reached or failed (5xx): worth another round later."""


class ImageSource(Protocol):
    async def fetch(self, project_id: str, item_id: str) -> tuple[bytes, str]:
        """The item's stored image bytes and their media type. Raise ``ImageUnavailableError`` or
        ``ImageFetchError``."""
        ...

    async def close(self) -> None: ...


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


async def image_url(project_id: str, item_id: str, image: ImageRef, source: ImageSource | None) -> str:
    """The URL to put in the item's ``image_url`` content part."""
    if image.url is not None and image.url.startswith(("https://", "http://", "data:")):
        return image.url
    if image.blob_id is None:
        raise ImageUnavailableError(f"the item's image has neither a usable URL nor stored bytes: {image.url!r}")
    if source is None:
        raise ImageUnavailableError(
            "the item's image is stored by the review API, and no review API URL is configured "
            "(LABELGATE_LABELER_REVIEW_API_URL)"
        )
    data, media_type = await source.fetch(project_id, item_id)
    return data_url(data, media_type or image.media_type)
