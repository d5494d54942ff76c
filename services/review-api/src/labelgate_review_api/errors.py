"""The review API's typed errors: each carries the HTTP status and the stable code its response shows."""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """An error the caller caused or must know about; rendered as ``{"error": {code, message, details}}``."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFoundError(ApiError):
    status_code = 404
    code = "not_found"


class ProjectNotFoundError(NotFoundError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"project '{project_id}' not found")


class ItemNotFoundError(NotFoundError):
    def __init__(self, project_id: str, item_id: str) -> None:
        super().__init__(f"item '{item_id}' not found in project '{project_id}'")


class TaskNotFoundError(NotFoundError):
    def __init__(self, project_id: str, task_id: str) -> None:
        super().__init__(f"task '{task_id}' not found in project '{project_id}'")


class ConflictError(ApiError):
    status_code = 409
    code = "conflict"


class ProjectExistsError(ConflictError):
    code = "project_exists"

    def __init__(self, project_id: str) -> None:
        super().__init__(f"project '{project_id}' already exists")


class LeaseLostError(ConflictError):
    """The caller no longer holds the task: the lease expired, was released, or belongs to someone else."""

    code = "lease_lost"


class TaskClosedError(ConflictError):
    code = "task_closed"


class InvalidLabelsError(ApiError):
    status_code = 422
    code = "invalid_labels"


class BatchTooLargeError(ApiError):
    status_code = 413
    code = "batch_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"batch of {size} items exceeds the limit of {limit}", details={"limit": limit})


class InvalidItemError(ApiError):
    """An item that does not fit its project's task type (an image where none belongs, or none where one must)."""

    status_code = 422
    code = "invalid_item"


class InvalidImageError(ApiError):
    """An uploaded image that cannot be read, or that is not what its media type and size say."""

    status_code = 422
    code = "invalid_image"


class ImageTooLargeError(ApiError):
    status_code = 413
    code = "image_too_large"


class ImageNotFoundError(NotFoundError):
    def __init__(self, project_id: str, item_id: str) -> None:
        super().__init__(f"item '{item_id}' of project '{project_id}' has no image")


class InvalidSpansError(ApiError):
    status_code = 422
    code = "invalid_spans"


class InvalidBoxesError(ApiError):
    status_code = 422
    code = "invalid_boxes"
