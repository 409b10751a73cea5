"""The one error hierarchy of imflow.

`ApiError`s are requests imflow refuses, each kind with a stable machine-readable code;
the web layer renders them as `{"error": {"code", "message"}}` with the HTTP status it
maps each kind to (app/web/app.py), so the core knows no HTTP. `RecordError` is why an
agent sends a record to the dead-letter topic; `StoreUnavailable` is what every store
raises when its backing service does not answer (no client library's exception leaves
app/stores).
"""

from __future__ import annotations


class ImflowError(Exception):
    """Base of every error imflow raises on purpose."""


class ApiError(ImflowError):
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class BadRequest(ApiError):
    code = "bad_request"


class Unauthorized(ApiError):
    code = "unauthorized"


class Forbidden(ApiError):
    code = "forbidden"


class NotFound(ApiError):
    code = "not_found"


class Conflict(ApiError):
    code = "conflict"


class PayloadTooLarge(ApiError):
    code = "payload_too_large"


class RateLimited(ApiError):
    code = "rate_limited"


class Unavailable(ApiError):
    code = "unavailable"


class Overloaded(Unavailable):
    """The pipeline is behind (or this process has too many messages in flight): refused
    at once, so a request is answered instead of queued."""

    code = "overloaded"


class RecordError(ImflowError):
    """A record on a topic that imflow cannot accept; the reason goes to dead-letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreUnavailable(ImflowError):
    """A backing store (Redis, HBase, Kafka) did not answer; the caller retries."""


class Fenced(ImflowError):
    """A newer producer took this one's transactional id over (another process owns the
    partition now): this one must stop writing."""
