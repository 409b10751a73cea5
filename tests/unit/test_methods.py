"""Undeclared methods answer 405 with the `Allow` header RFC 9110 requires, and the
JSON error body; in-process, so no services: routing refuses before any handler runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.settings import Settings
from app.web.app import create_app
from app.web.openapi import build


def offline_app(**settings: object) -> web.Application:
    """The real app and router, without its Redis/Kafka/HBase clients (never reached)."""
    app = create_app(Settings(_env_file=None, secret="s" * 32, **settings))  # type: ignore[arg-type]
    app.cleanup_ctx.clear()
    return app


@pytest_asyncio.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(offline_app())) as c:
        yield c


UNDECLARED = [
    ("GET", "/v1/messages", {"POST"}),
    ("PUT", "/v1/messages", {"POST"}),
    ("DELETE", "/v1/sync", {"GET", "HEAD"}),
    ("PATCH", "/v1/conversations", {"GET", "HEAD"}),
    ("POST", "/v1/conversations/u:a:b/messages", {"GET", "HEAD"}),
    ("GET", "/v1/conversations/u:a:b/read", {"POST"}),
    ("DELETE", "/v1/groups", {"POST"}),
    ("PUT", "/v1/groups/team/members", {"GET", "HEAD", "POST"}),
    ("POST", "/v1/ws", {"GET", "HEAD"}),
    ("POST", "/healthz", {"GET", "HEAD"}),
    ("DELETE", "/v1/openapi.json", {"GET", "HEAD"}),
]


@pytest.mark.parametrize(("method", "path", "allowed"), UNDECLARED)
async def test_an_undeclared_method_gets_405_with_allow(
    client: TestClient[web.Request, web.Application], method: str, path: str,
    allowed: set[str],
) -> None:
    resp = await client.request(method, path)
    assert resp.status == 405
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed
    body = await resp.json()
    assert body["error"]["code"] == "method_not_allowed"


def test_allow_lists_exactly_the_documented_methods_plus_head() -> None:
    """What `Allow` advertises is what the document declares (HEAD comes with GET)."""
    app = offline_app()
    for path, ops in build()["paths"].items():
        resource = next(r for r in app.router.resources() if r.canonical == path)
        methods = {route.method for route in resource}
        declared = {m.upper() for m in ops}
        assert methods - {"HEAD"} == declared, path


async def test_the_websocket_route_refuses_a_plain_get_with_the_documented_400(
    client: TestClient[web.Request, web.Application],
) -> None:
    from app.auth import mint_token

    assert (await client.get("/v1/ws")).status == 401  # no token: before anything else
    token = mint_token("s" * 32, "alice")
    resp = await client.get("/v1/ws", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "not_a_websocket_request"
    assert "400" in build()["paths"]["/v1/ws"]["get"]["responses"]
