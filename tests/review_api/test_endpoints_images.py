"""Items of entities and boxes projects over REST: what each task type accepts, uploaded images stored and
served, and a clear 4xx for every mistake (nothing of a rejected batch is kept)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest
from PIL import Image

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import ItemSubmitted
from labelgate_core.topics import ITEM_SUBMITTED
from labelgate_review_api.settings import ReviewApiSettings

from .annotation_helpers import TEXT, create_ner, create_pets, image_bytes, submit_one, upload
from .helpers import create_project, published, wait_published

pytestmark = pytest.mark.integration

MAX_IMAGE = 3000


@pytest.fixture
def settings() -> ReviewApiSettings:
    return ReviewApiSettings(queue_depth_refresh_s=0.5, max_image_bytes=MAX_IMAGE, max_batch_image_bytes=2 * MAX_IMAGE)


async def test_an_entities_item_is_text(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_ner(api)

    item_id = await submit_one(api, "ner", {"text": TEXT})

    [event] = await wait_published(bus, ITEM_SUBMITTED, 1)
    assert isinstance(event, ItemSubmitted)
    assert event.task.type == "entities"
    assert event.text == TEXT
    assert event.image is None
    item = (await api.get(f"/v1/projects/ner/items/{item_id}")).json()
    assert item["image"] is None


async def test_an_uploaded_image_is_stored_served_and_referenced(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_pets(api)
    data = image_bytes(64, 48)

    item_id = await submit_one(api, "pets", {"image": upload(data, width=64, height=48)})  # no text is fine
    again = await submit_one(api, "pets", {"text": "the same photo", "image": upload(data)})  # size read from it

    events = {e.item_id: e for e in await wait_published(bus, ITEM_SUBMITTED, 2)}
    blob_id = hashlib.sha256(data).hexdigest()
    for submitted in (item_id, again):
        event = events[submitted]
        assert isinstance(event, ItemSubmitted)
        assert event.image is not None
        assert (event.image.blob_id, event.image.url) == (blob_id, None)
        assert (event.image.width, event.image.height, event.image.media_type) == (64, 48, "image/png")
        response = await api.get(f"/v1/projects/pets/items/{submitted}/image")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content == data
    item = (await api.get(f"/v1/projects/pets/items/{item_id}")).json()
    assert item["text"] == ""
    assert item["image"] == {
        "url": None,
        "blob_id": blob_id,
        "width": 64,
        "height": 48,
        "media_type": "image/png",
        "href": f"/v1/projects/pets/items/{item_id}/image",
    }


async def test_a_jpeg_upload_is_recognised(api: httpx.AsyncClient) -> None:
    await create_pets(api)

    item_id = await submit_one(api, "pets", {"image": upload(image_bytes(30, 20, "JPEG"), "image/jpeg")})

    response = await api.get(f"/v1/projects/pets/items/{item_id}/image")
    assert response.headers["content-type"] == "image/jpeg"
    item = (await api.get(f"/v1/projects/pets/items/{item_id}")).json()
    assert (item["image"]["width"], item["image"]["height"]) == (30, 20)


async def test_an_image_by_url_is_referenced_and_redirected_to(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_pets(api)
    url = "https://images.example.org/pets/cat-17.jpg"

    item_id = await submit_one(api, "pets", {"text": "cat?", "image": {"url": url, "width": 800, "height": 600}})

    [event] = await wait_published(bus, ITEM_SUBMITTED, 1)
    assert isinstance(event, ItemSubmitted)
    assert event.image is not None
    assert (event.image.url, event.image.blob_id, event.image.media_type) == (url, None, "image/jpeg")
    response = await api.get(f"/v1/projects/pets/items/{item_id}/image")
    assert response.status_code == 307
    assert response.headers["location"] == url


async def test_image_of_an_item_without_one_or_of_another_project_is_404(api: httpx.AsyncClient) -> None:
    await create_ner(api)
    await create_pets(api)
    text_item = await submit_one(api, "ner", {"text": TEXT})
    image_item = await submit_one(api, "pets", {"image": upload(image_bytes())})

    no_image = await api.get(f"/v1/projects/ner/items/{text_item}/image")
    elsewhere = await api.get(f"/v1/projects/ner/items/{image_item}/image")
    missing = await api.get("/v1/projects/pets/items/nope/image")

    assert no_image.status_code == 404
    assert no_image.json()["error"]["message"] == f"item '{text_item}' of project 'ner' has no image"
    assert elsewhere.status_code == 404
    assert missing.status_code == 404


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PNG = image_bytes(64, 48)


@pytest.mark.parametrize(
    ("project", "item", "status", "code", "words"),
    [
        ("ner", {"text": "  "}, 422, "validation_error", "items[3].text: text is empty"),
        (
            "ner",
            {"text": TEXT, "image": upload(PNG)},
            422,
            "invalid_item",
            "items[3]: only the items of a boxes project take an `image`; this project's task is entities",
        ),
        ("news", {"text": "x", "image": upload(PNG)}, 422, "invalid_item", "this project's task is classification"),
        ("pets", {"text": "a cat"}, 422, "invalid_item", "items[3]: the items of a boxes project need an `image`"),
        (
            "pets",
            {"image": {"url": "https://x.org/a.png"}},
            422,
            "validation_error",
            "items[3].image: an image given by `url` needs its `width` and `height` in pixels",
        ),
        (
            "pets",
            {"image": {"url": "file:///etc/passwd", "width": 1, "height": 1}},
            422,
            "validation_error",
            "`url` must be an absolute http(s) URL",
        ),
        (
            "pets",
            {"image": {"url": "https://x.org/a.png", "width": 0, "height": 5}},
            422,
            "validation_error",
            "items[3].image.width",
        ),
        (
            "pets",
            {"image": {"width": 5, "height": 5}},
            422,
            "validation_error",
            "an image needs exactly one of `url` and `data_base64`",
        ),
        (
            "pets",
            {"image": {**upload(PNG), "url": "https://x.org/a.png"}},
            422,
            "validation_error",
            "an image needs exactly one of `url` and `data_base64`",
        ),
        (
            "pets",
            {"image": {"data_base64": _b64(PNG)}},
            422,
            "validation_error",
            "an uploaded image needs a `media_type` among image/png, image/jpeg",
        ),
        ("pets", {"image": upload(PNG, "image/svg+xml")}, 422, "validation_error", "needs a `media_type` among"),
        (
            "pets",
            {"image": {**upload(PNG), "colour": "red"}},
            422,
            "validation_error",
            "items[3].image.colour: Extra inputs are not permitted",
        ),
        (
            "pets",
            {"image": {**upload(PNG), "data_base64": "not base64!"}},
            422,
            "invalid_image",
            "items[3].image.data_base64 is not valid base64",
        ),
        (
            "pets",
            {"image": upload(b"GIF? no, just text")},
            422,
            "invalid_image",
            "items[3].image.data_base64 is not an image of a supported type",
        ),
        ("pets", {"image": upload(PNG[:40])}, 422, "invalid_image", "items[3].image.data_base64 is not a"),
        (
            "pets",
            {"image": upload(PNG, "image/jpeg")},
            422,
            "invalid_image",
            "items[3].image: the bytes are a image/png image, not image/jpeg",
        ),
        (
            "pets",
            {"image": upload(PNG, width=65, height=48)},
            422,
            "invalid_image",
            "items[3].image.width is 65 but the image is 64 pixels wide",
        ),
        (
            "pets",
            {"image": upload(PNG, width=64, height=50)},
            422,
            "invalid_image",
            "items[3].image.height is 50 but the image is 48 pixels high",
        ),
        (
            "pets",
            {"image": upload(b"\x89PNG" + bytes(MAX_IMAGE))},
            413,
            "image_too_large",
            f"items[3].image is {MAX_IMAGE + 4} bytes, over the limit of {MAX_IMAGE} bytes per image",
        ),
    ],
)
async def test_a_bad_item_is_a_clear_4xx_and_rejects_the_whole_batch(
    api: httpx.AsyncClient, bus: MemoryBus, project: str, item: dict[str, Any], status: int, code: str, words: str
) -> None:
    await create_project(api)
    await create_ner(api)
    await create_pets(api)
    good: dict[str, Any] = {"text": TEXT} if project != "pets" else {"image": upload(image_bytes(8, 8))}
    items = [{**good, "idempotency_key": f"g{n}"} for n in range(3)]

    response = await api.post(f"/v1/projects/{project}/items", json={"items": [*items, item]})

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert (await api.get(f"/v1/projects/{project}/stats")).json()["items"] == 0
    assert await published(bus, ITEM_SUBMITTED) == []


async def test_the_image_bytes_of_one_request_are_limited(api: httpx.AsyncClient) -> None:
    await create_pets(api)
    big = image_bytes(300, 300)  # an incompressible-enough PNG below the per-image limit
    noisy = [{"image": upload(big)} for _ in range(1 + 2 * MAX_IMAGE // len(big))]
    assert len(big) <= MAX_IMAGE

    response = await api.post("/v1/projects/pets/items", json={"items": noisy})

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "image_too_large"
    assert "send fewer items per request" in response.json()["error"]["message"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_an_image_of_too_many_pixels_is_refused(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # A few kilobytes of PNG can declare billions of pixels; the limit is Pillow's (lowered here to keep it small).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 - 1)
    await create_pets(api)

    response = await api.post("/v1/projects/pets/items", json={"items": [{"image": upload(PNG)}]})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_image"
    assert "too large to decode safely (64x48 pixels)" in response.json()["error"]["message"]
