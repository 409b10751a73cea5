"""Fixtures for end-to-end tests: fresh user names and API clients on either web process."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from app.apiclient import Client
from app.devstack import Stack, wait_for

DELIVERY_TIMEOUT_S = 30


@pytest.fixture
def names() -> Callable[..., list[str]]:
    """Unique user/group ids per test, so tests never see each other's messages."""
    tag = uuid.uuid4().hex[:8]
    return lambda *base: [f"{b}-{tag}" for b in base]


@pytest.fixture
def client_for(stack: Stack, http: aiohttp.ClientSession) -> Callable[..., Client]:
    def make(user: str, device: str = "default", web: int = 0) -> Client:
        return Client(http, stack.web_urls[web], stack.token(user, device=device))
    return make


def direct(a: str, b: str) -> str:
    return f"u:{min(a, b)}:{max(a, b)}"


async def inbox_all(client: Client) -> list[dict[str, Any]]:
    """The user's whole inbox from the start, page by page (moves this device's cursor:
    use a device of its own for watching)."""
    messages: list[dict[str, Any]] = []
    cursor: str = "0"
    while True:
        page = await client.sync(since=cursor, limit=500)
        messages.extend(page["messages"])
        cursor = page["cursor"]
        if not page["has_more"]:
            return messages


async def await_inbox(client: Client, count: int, what: str) -> list[dict[str, Any]]:
    """Wait until the user's inbox holds at least `count` entries; return them all."""
    if count == 0:
        return await inbox_all(client)

    async def enough() -> list[dict[str, Any]] | None:
        messages = await inbox_all(client)
        return messages if len(messages) >= count else None
    return await wait_for(enough, within=DELIVERY_TIMEOUT_S, what=what)


async def await_history(client: Client, cid: str, count: int) -> list[dict[str, Any]]:
    """Wait until `cid` has at least `count` history rows; return them newest first."""
    async def enough() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            params = {"limit": 100} if before is None else {"limit": 100, "before": before}
            page = await client.history(cid, **params)
            rows.extend(page["messages"])
            if not page["has_more"]:
                break
            before = page["next_before"]
        return rows if len(rows) >= count else None
    return await wait_for(enough, within=DELIVERY_TIMEOUT_S, what=f"{count} rows of {cid}")
