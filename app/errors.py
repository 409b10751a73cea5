"""The one error hierarchy of imflow.

`ApiError`s carry the HTTP status and the stable machine-readable code that the web
layer renders as `{"error": {"code", "message"}}`; `RecordError` is why an agent sends a
record to the dead-letter topic.
"""

from __future__ import annotations


class ImflowError(Exception):
    """Base of every error imflow raises on purpose."""


class ApiError(ImflowError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class RecordError(ImflowError):
    """A record on a topic that imflow cannot accept; the reason goes to dead-letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreUnavailable(ImflowError):
    """A backing store (Redis, HBase, Kafka) did not answer; the caller retries."""
