"""The aiohttp app factory: routes, error rendering, metrics, and client lifetimes.

Clients live in `cleanup_ctx` and are reached through typed `AppKey`s; nothing is
module-level, so tests can build several apps (several "web processes") in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from app.auth import TokenVerifier
from app.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
    Unavailable,
)
from app.settings import Settings
from app.stores.feeds import FeedStore
from app.stores.groups import GroupStore
from app.stores.history import HistoryStore
from app.stores.inbox import InboxStore
from app.stores.kafka import InboundProducer
from app.stores.push import PresenceStore
from app.stores.ratelimit import RateLimiter
from app.stores.redis_client import create_redis
from app.web import demo, groups, live, messages, ops, reads
from app.web.admission import Admission
from app.web.context import (
    ADMISSION,
    FEEDS,
    GROUPS,
    HISTORY,
    INBOX,
    PRESENCE,
    PRODUCER,
    PUSH_HUB,
    RATE_LIMITER,
    REDIS,
    SETTINGS,
    TOKENS,
    json_response,
)
from app.web.push_hub import PushHub
from app.web.request_metrics import REQUEST_METRICS

log = logging.getLogger(__name__)
OPENAPI_PATH = Path(__file__).with_name("openapi.json")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str,
           retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return json_response({"error": {"code": code, "message": message}}, status=status,
                         headers=headers)


# The HTTP status of each kind of refusal (the most specific class that matches wins).
STATUS: dict[type[ApiError], int] = {
    BadRequest: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
    PayloadTooLarge: 413, RateLimited: 429, Unavailable: 503,
}


def status_of(exc: ApiError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]  # type: ignore[index]
    return 400


def served(route: str, handler: Handler) -> Handler:
    """`handler` with every failure rendered as the SPEC's JSON error body and every
    request counted under `route`. Each route's handler is wrapped when it is added,
    instead of by an aiohttp middleware: aiohttp calls a middleware through two partials
    with keyword arguments and a coroutine of its own, which cost a tenth of the
    ingress's CPU per request."""

    @functools.wraps(handler)
    async def serve(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _error(status_of(exc), exc.code, exc.message, exc.retry_after)
        except StoreUnavailable as exc:
            log.warning("store unavailable on %s: %r", route, exc)
            response = _error(503, "store_unavailable", "a backing store is unavailable; retry",
                              retry_after=1)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = exc.reason.lower().replace(" ", "_")
            response = _error(exc.status, code, exc.reason)
            if "Allow" in exc.headers:  # 405: RFC 9110 requires the methods the target allows
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            log.exception("unhandled error on %s", route)
            response = _error(500, "internal", "internal server error")
        REQUEST_METRICS.observe(route, response.status, time.perf_counter() - started)
        return response

    return serve


async def unmatched(request: web.Request) -> web.StreamResponse:
    """What no route takes (the last route matches every path and method): 405 with the
    methods the path allows, else 404, as aiohttp's router would answer them."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_PATH.read_bytes(), content_type="application/json")


# The API (and its OpenAPI document's paths). The demo page adds its own when enabled.
ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/messages", messages.post_message),
    ("GET", "/v1/sync", reads.sync),
    ("GET", "/v1/conversations", reads.conversations),
    ("GET", "/v1/conversations/{cid}/messages", reads.history),
    ("POST", "/v1/conversations/{cid}/read", reads.mark_read),
    ("POST", "/v1/groups", groups.create_group),
    ("POST", "/v1/groups/{gid}/members", groups.change_members),
    ("GET", "/v1/groups/{gid}/members", groups.list_members),
    ("GET", "/v1/ws", live.websocket),
    ("GET", "/v1/openapi.json", openapi),
    ("GET", "/healthz", ops.healthz),
    ("GET", "/readyz", ops.readyz),
    ("GET", "/metrics", ops.metrics),
]


def create_app(settings: Settings, *, stores: bool = True) -> web.Application:
    """The web app. `stores=False` leaves out the Redis, Kafka and HBase clients: the
    fast tests of the HTTP contract (tests/unit/test_http_contract.py) use it for what
    the web refuses before it touches a store (auth, validation, limits)."""
    app = web.Application(client_max_size=2 * 1024 * 1024)  # routes set tighter limits
    app[SETTINGS] = settings
    app[TOKENS] = TokenVerifier(settings.jwt_secret())  # no secret: fail at start-up
    app[ADMISSION] = Admission(settings, probe=None)  # the stores' context adds the probe
    if stores:
        app.cleanup_ctx.extend([_redis_ctx, _producer_ctx, _history_ctx])
    for method, path, handler in [*ROUTES, *(demo.ROUTES if settings.demo else [])]:
        if method == "GET":
            app.router.add_get(path, served(path, handler))  # and HEAD
        else:
            app.router.add_route(method, path, served(path, handler))
    app.router.add_route("*", "/{path:.*}", served("unmatched", unmatched))
    return app


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = create_redis(settings)
    app[REDIS] = client
    app[INBOX] = InboxStore(client, retention_s=settings.inbox_retention_s)
    app[FEEDS] = FeedStore(client, retention_s=settings.inbox_retention_s)
    app[PRESENCE] = PresenceStore(client, ttl_s=settings.presence_ttl_s)
    app[GROUPS] = GroupStore(client)
    app[RATE_LIMITER] = RateLimiter(client, per_second=settings.send_rate_per_s)
    hub = PushHub(client, settings.node_id or f"{settings.host}:{settings.port}")
    await hub.start()
    app[PUSH_HUB] = hub
    yield
    await app[RATE_LIMITER].stop()
    await hub.stop()
    await client.aclose()


async def _producer_ctx(app: web.Application) -> AsyncIterator[None]:
    producer = InboundProducer(app[SETTINGS])
    await producer.start()
    app[PRODUCER] = producer
    admission = app[ADMISSION] = Admission.for_pipeline(app[SETTINGS])
    watcher = asyncio.create_task(admission.watch(), name="imflow-admission")
    yield
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await producer.stop()


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    store = HistoryStore(app[SETTINGS])
    app[HISTORY] = store
    yield
    await store.close()
