"""The smallest true path: one message through Kafka, the agents, Redis, HBase and push."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from app.apiclient import Client
from app.devstack import Stack, wait_for

pytestmark = pytest.mark.services
DELIVERY_TIMEOUT_S = 30


def users(*names: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{n}-{tag}" for n in names]


async def test_one_message_reaches_inboxes_history_and_the_open_websocket(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    alice, bob = users("alice", "bob")
    sender = Client(http, stack.web_urls[0], stack.token(alice))
    receiver = Client(http, stack.web_urls[1], stack.token(bob, device="phone"))
    cid = f"u:{min(alice, bob)}:{max(alice, bob)}"

    async with receiver.ws() as ws:
        ready = await ws.receive_json(timeout=10)
        assert ready == {"type": "ready", "user": bob, "device": "phone"}

        accepted = await sender.send(to=bob, client_msg_id="m-1", body={"text": "hello"})
        assert accepted["conversation_id"] == cid
        assert accepted["client_msg_id"] == "m-1"
        assert isinstance(accepted["accepted_at"], int)

        pushed = await ws.receive_json(timeout=DELIVERY_TIMEOUT_S)
    expected = {
        "message_id": accepted["message_id"], "conversation_id": cid, "seq": 1,
        "sender": alice, "type": "text", "body": {"text": "hello"}, "client_msg_id": "m-1",
    }
    assert pushed["type"] == "message"
    assert {k: pushed["message"][k] for k in expected} == expected
    assert pushed["message"]["ts"] >= accepted["accepted_at"]

    async def bob_inbox() -> dict | None:
        page = await receiver.sync()
        return page if page["messages"] else None

    page = await wait_for(bob_inbox, within=DELIVERY_TIMEOUT_S, what="bob's inbox")
    assert page["has_more"] is False
    assert [m["message_id"] for m in page["messages"]] == [accepted["message_id"]]
    assert page["messages"][0] == pushed["message"]

    # the sender's own inbox holds it too (for their other devices)
    alice_page = await sender.sync(since=0)
    assert [m["message_id"] for m in alice_page["messages"]] == [accepted["message_id"]]

    async def in_history() -> dict | None:
        page = await sender.history(cid)
        return page if page["messages"] else None

    history = await wait_for(in_history, within=DELIVERY_TIMEOUT_S, what="the history row")
    assert history == {"messages": [pushed["message"]], "has_more": False, "next_before": None}


async def test_health_and_readiness(stack: Stack, http: aiohttp.ClientSession) -> None:
    for url in stack.web_urls:
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok"}
        async with http.get(url + "/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["checks"] == {"kafka": "ok", "redis": "ok", "hbase": "ok"}
