"""Typed keys for what the web app holds, and the request helpers every route uses."""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from app.auth import Identity, TokenVerifier
from app.errors import BadRequest, PayloadTooLarge, StoreUnavailable, Unauthorized, Unavailable
from app.models import first_error
from app.settings import Settings
from app.stores.feeds import FeedStore
from app.stores.groups import GroupStore
from app.stores.history import HistoryStore
from app.stores.inbox import InboxStore
from app.stores.kafka import InboundProducer
from app.stores.push import PresenceStore
from app.stores.ratelimit import RateLimiter
from app.stores.redis_client import RedisClient
from app.web.admission import Admission
from app.web.push_hub import PushHub

M = TypeVar("M", bound=BaseModel)
_INTEGER = re.compile(r"-?[0-9]{1,20}")

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey[RedisClient]("redis")
PRODUCER = web.AppKey("producer", InboundProducer)
ADMISSION = web.AppKey("admission", Admission)
INBOX = web.AppKey("inbox", InboxStore)
FEEDS = web.AppKey("feeds", FeedStore)
HISTORY = web.AppKey("history", HistoryStore)
PRESENCE = web.AppKey("presence", PresenceStore)
PUSH_HUB = web.AppKey("push_hub", PushHub)
GROUPS = web.AppKey("groups", GroupStore)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
TOKENS = web.AppKey("tokens", TokenVerifier)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def identity(request: web.Request) -> Identity:
    """The caller, from `Authorization: Bearer <jwt>` (or `?token=` for WebSockets)."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not token:
        token = request.query.get("token", "") if request.path == "/v1/ws" else ""
    if not token:
        raise Unauthorized("missing bearer token", code="missing_token")
    return request.app[TOKENS].verify(token)


async def json_body(request: web.Request, limit: int | None = None) -> dict[str, Any]:
    """The request's JSON object, within the size limit (413) and well-formed (400).

    The default limit is a message's: its body plus the envelope."""
    if limit is None:
        limit = request.app[SETTINGS].max_body_bytes + 4096
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    if length is not None:  # the common case: a body of known size
        content = request.content
        try:
            # Mostly the whole body came in with the headers: take it without a coroutine.
            raw = (content.read_nowait() if content.is_eof()
                   else await content.readexactly(length) if length else b"")
        except asyncio.IncompleteReadError:
            raw = b""
        if len(raw) != length:
            raise BadRequest("request body is shorter than its Content-Length",
                             code="invalid_json")
    else:
        raw = await _read_chunked(request, limit)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return data


async def _read_chunked(request: web.Request, limit: int) -> bytes:
    """A body of unknown size (chunked), refused as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):  # read() may return less
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def append_inbound(app: web.Application, cid: str, record: bytes, *,
                         failure: str) -> None:
    """Append one encoded record (`app.models.encode_*`) to `imflow.inbound` (key: its
    conversation) and wait for the ack;
    503 with Retry-After, saying `failure`, when Kafka does not ack in time."""
    try:
        await app[PRODUCER].send(app[SETTINGS].topic_inbound, cid, record)
    except StoreUnavailable:
        raise Unavailable(failure, code="kafka_unavailable", retry_after=1) from None


def int_query(request: web.Request, name: str, *, default: int | None,
              minimum: int, maximum: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):  # int() would also take " 5", "+5" and "5_0"
        raise BadRequest(f"{name} must be an integer", code=f"invalid_{name}")
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise BadRequest(f"{name} must be {bounds}", code=f"invalid_{name}")
    return value


def validated(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model`, or 400 with a code naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, problem = first_error(exc, "body")
        raise BadRequest(f"{field}: {problem}", code=f"invalid_{field}") from None
