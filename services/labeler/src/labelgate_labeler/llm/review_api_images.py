"""The image source over the review API's REST endpoint ``GET /v1/projects/{p}/items/{item_id}/image``."""

from __future__ import annotations

from urllib.parse import quote

import httpx
from pydantic import SecretStr

from .images import ImageFetchError, ImageUnavailableError


class ReviewApiImages:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: SecretStr | None = None,
        timeout_s: float = 30.0,
        max_bytes: int = 20_000_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            follow_redirects=True,
            transport=transport,
        )
        self._max_bytes = max_bytes

    async def fetch(self, project_id: str, item_id: str) -> tuple[bytes, str]:
        path = f"/v1/projects/{quote(project_id, safe='')}/items/{quote(item_id, safe='')}/image"
        try:
            response = await self._client.get(path)
        except httpx.HTTPError as exc:
            raise ImageFetchError(f"review API unreachable for the item's image: {type(exc).__name__}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ImageFetchError(f"review API answered {response.status_code} for the item's image")
        if response.status_code != 200:
            raise ImageUnavailableError(f"review API answered {response.status_code} for the item's image")
        if len(response.content) > self._max_bytes:
            raise ImageUnavailableError(f"the item's image is larger than {self._max_bytes} bytes")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return response.content, media_type

    async def close(self) -> None:
        await self._client.aclose()
