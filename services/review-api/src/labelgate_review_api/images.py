"""Images of boxes items: what an item of each task type may carry, reading an upload (is it the image its
media type and size say?), and the documents that store an upload and describe an item's image."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

from PIL import Image, UnidentifiedImageError

from labelgate_core.events import ImageRef, TaskSpec, TaskType
from labelgate_core.store.port import Doc

from .errors import ImageTooLargeError, InvalidImageError, InvalidItemError
from .schemas import IMAGE_MEDIA_TYPES, ImageCreate, ImagePublic, ItemCreate

_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
"""Pillow's format name of each media type an upload may have (``IMAGE_MEDIA_TYPES``)."""
_MEDIA_TYPES = {fmt: media_type for media_type, fmt in _FORMATS.items()}


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An item's image, checked: the reference its events carry, and the uploaded bytes (None for a URL)."""

    ref: ImageRef
    data: bytes | None = None


def check_item_fits(spec: TaskSpec, item: ItemCreate, where: str) -> None:
    """``InvalidItemError`` unless the item has what its project's task type needs: an image for boxes, text
    (and no image) for the other types."""
    if spec.type is TaskType.boxes:
        if item.image is None:
            raise InvalidItemError(
                f"{where}: the items of a boxes project need an `image` (a `url` with `width` and `height`, or"
                " `data_base64` with its `media_type`)",
                details={"field": f"{where}.image"},
            )
        return
    if item.image is not None:
        raise InvalidItemError(
            f"{where}: only the items of a boxes project take an `image`; this project's task is {spec.type.value}",
            details={"field": f"{where}.image"},
        )


def prepare_images(items: Sequence[ItemCreate], *, max_bytes: int, max_total: int) -> list[PreparedImage | None]:
    """Every item's image, read and checked (None for items without one); the first bad one raises."""
    prepared: list[PreparedImage | None] = []
    total = 0
    for index, item in enumerate(items):
        if item.image is None:
            prepared.append(None)
            continue
        image = prepare_image(item.image, f"items[{index}].image", max_bytes=max_bytes)
        total += len(image.data or b"")
        if total > max_total:
            raise ImageTooLargeError(
                f"the request's uploaded images exceed {max_total} bytes in all: send fewer items per request",
                details={"limit": max_total},
            )
        prepared.append(image)
    return prepared


def prepare_image(image: ImageCreate, where: str, *, max_bytes: int) -> PreparedImage:
    """The image's reference; for an upload, its bytes too, once they prove to be an image of the declared
    media type and size (width and height, when not given, are read from the image)."""
    if image.url is not None:
        # ImageCreate makes sure a URL comes with its size.
        media_type = image.media_type or mimetypes.guess_type(urlsplit(image.url).path)[0]
        return PreparedImage(
            ImageRef(
                url=image.url,
                width=image.width or 0,
                height=image.height or 0,
                media_type=media_type or "application/octet-stream",
            )
        )
    encoded = image.data_base64 or ""
    size = len(encoded.rstrip("=")) * 3 // 4  # what it decodes to, if it is base64 at all
    if size > max_bytes:  # refused before spending the time to decode it
        raise _too_large(where, size, max_bytes)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(
            f"{where}.data_base64 is not valid base64 ({exc})", details={"field": f"{where}.data_base64"}
        ) from exc
    if len(data) > max_bytes:
        raise _too_large(where, len(data), max_bytes)
    media_type, width, height = _read(data, where)
    if media_type != image.media_type:
        raise InvalidImageError(
            f"{where}: the bytes are a {media_type} image, not {image.media_type}",
            details={"field": f"{where}.media_type", "actual": media_type},
        )
    for name, given, actual in (("width", image.width, width), ("height", image.height, height)):
        if given is not None and given != actual:
            raise InvalidImageError(
                f"{where}.{name} is {given} but the image is {actual} pixels {'wide' if name == 'width' else 'high'}",
                details={"field": f"{where}.{name}", "actual": actual},
            )
    blob_id = hashlib.sha256(data).hexdigest()
    return PreparedImage(ImageRef(blob_id=blob_id, width=width, height=height, media_type=media_type), data)


def _read(data: bytes, where: str) -> tuple[str, int, int]:
    """The media type and size of the image ``data`` holds (only its header is parsed)."""
    try:
        with Image.open(io.BytesIO(data), formats=[_FORMATS[t] for t in IMAGE_MEDIA_TYPES]) as img:
            fmt, (width, height) = img.format, img.size
        # A few kilobytes can declare billions of pixels; whoever decodes the image later must not be asked to.
        if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(f"{width}x{height} pixels")
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(
            f"{where}.data_base64 is not an image of a supported type ({', '.join(IMAGE_MEDIA_TYPES)}) or is too"
            f" large to decode safely ({exc})",
            details={"field": f"{where}.data_base64"},
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow reports a corrupt header with any of these
        raise InvalidImageError(
            f"{where}.data_base64 is not a readable image ({exc})", details={"field": f"{where}.data_base64"}
        ) from exc
    media_type = _MEDIA_TYPES.get(fmt or "")
    if media_type is None or width <= 0 or height <= 0:
        raise InvalidImageError(f"{where}.data_base64 is not a readable image", details={"field": where})
    return media_type, width, height


def _too_large(where: str, size: int, limit: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{where} is {size} bytes, over the limit of {limit} bytes per image", details={"limit": limit}
    )


# -- documents -----------------------------------------------------------------------------------------------


def blob_key(project_id: str, blob_id: str) -> str:
    return f"{project_id}/{blob_id}"


def blob_doc(project_id: str, ref: ImageRef, data: bytes, now: datetime) -> Doc:
    """The stored upload. The bytes are kept base64-encoded, which every store adapter holds as plain text."""
    blob_id = ref.blob_id or hashlib.sha256(data).hexdigest()
    return {
        "_id": blob_key(project_id, blob_id),
        "project_id": project_id,
        "blob_id": blob_id,
        "media_type": ref.media_type,
        "width": ref.width,
        "height": ref.height,
        "size": len(data),
        "data_base64": base64.b64encode(data).decode("ascii"),
        "created_at": now.isoformat(),
    }


def blob_bytes(doc: Doc) -> bytes:
    return base64.b64decode(doc["data_base64"])


def image_doc(ref: ImageRef) -> Doc:
    return ref.model_dump(mode="json", exclude_none=True)


def image_href(project_id: str, item_id: str) -> str:
    return f"/v1/projects/{quote(project_id, safe='')}/items/{quote(item_id, safe='')}/image"


def image_public(project_id: str, item_id: str, doc: Doc | None) -> ImagePublic | None:
    if not doc:
        return None
    return ImagePublic.model_validate({**doc, "href": image_href(project_id, item_id)})
