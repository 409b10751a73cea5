"""The HTTP contract in-process (aiohttp's test client, no services): what the web
refuses before it touches a store answers the SPEC's error body with the right status
and code. The real-services e2e tests cover the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.auth import mint_token
from app.settings import Settings
from app.web.app import create_app

SECRET = "s" * 48


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    settings = Settings(_env_file=None, secret=SECRET, max_body_bytes=1024)
    async with TestClient(TestServer(create_app(settings, stores=False))) as test_client:
        yield test_client


def bearer(user: str = "alice", secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, user)}"}


async def error_of(resp: Any, status: int) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    code: str = body["error"]["code"]
    return code


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "missing_token"),
    ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
    (bearer(secret="x" * 48), "invalid_token"),
])
async def test_a_send_without_a_valid_token_is_401(client: TestClient[Any, Any],
                                                   headers: dict[str, str], code: str) -> None:
    resp = await client.post("/v1/messages", json={"to": "bob", "client_msg_id": "1"},
                             headers=headers)
    assert await error_of(resp, 401) == code


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b'{"to": "bob"}', "invalid_client_msg_id"),
    (b'{"to": "bob", "client_msg_id": ""}', "invalid_client_msg_id"),
    (b'{"to": "b b", "client_msg_id": "1"}', "invalid_to"),
    (b'{"to": "bob", "conversation": "g:x", "client_msg_id": "1"}', "invalid_target"),
    (b'{"client_msg_id": "1"}', "invalid_target"),
])
async def test_a_malformed_send_is_400_with_its_code(client: TestClient[Any, Any],
                                                     body: bytes, code: str) -> None:
    resp = await client.post("/v1/messages", data=body, headers=bearer())
    assert await error_of(resp, 400) == code


async def test_a_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/messages", headers=bearer(),
                             json={"to": "bob", "client_msg_id": "1", "body": "x" * 2000})
    assert await error_of(resp, 413) == "payload_too_large"


async def test_a_body_that_arrives_in_parts_is_read_whole(
        client: TestClient[Any, Any]) -> None:
    """Content-Length known, body not yet all in when the handler starts: it waits for
    the rest (parsed whole: 413 for the encoded body's size, not 400 invalid_json)."""
    raw = orjson.dumps({"to": "bob", "client_msg_id": "1", "body": "x" * 2000})

    async def in_two_parts() -> AsyncIterator[bytes]:
        yield raw[:100]
        await asyncio.sleep(0.02)  # nothing observable to await: let the first part go alone
        yield raw[100:]

    resp = await client.post("/v1/messages", data=in_two_parts(),
                             headers={**bearer(), "Content-Length": str(len(raw))})
    assert await error_of(resp, 413) == "payload_too_large"


@pytest.mark.parametrize(("path", "code"), [
    ("/v1/sync?limit=0", "invalid_limit"),
    ("/v1/sync?limit=501", "invalid_limit"),
    ("/v1/sync?limit=ten", "invalid_limit"),
    ("/v1/groups/bad%20id/members", "invalid_group_id"),
])
async def test_bad_query_and_path_values_are_400(client: TestClient[Any, Any], path: str,
                                                 code: str) -> None:
    resp = await client.get(path, headers=bearer())
    assert await error_of(resp, 400) == code


async def test_an_empty_membership_change_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/groups/team/members", json={}, headers=bearer())
    assert await error_of(resp, 400) == "invalid_members"


async def test_an_unknown_path_is_404_in_the_same_shape(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/nothing-here", headers=bearer())
    assert await error_of(resp, 404) == "not_found"


async def test_liveness_and_the_api_document(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    doc = await (await client.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/v1/messages" in doc["paths"]
