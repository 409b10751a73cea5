"""Push (`GET /v1/ws`): every connected device of every recipient, across web processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from app.apiclient import Client
from app.devstack import Stack, wait_for
from app.stores import keys
from app.stores.push import PresenceStore
from app.stores.redis_client import create_redis, is_cluster
from tests.e2e.conftest import DELIVERY_TIMEOUT_S

pytestmark = pytest.mark.services


async def test_push_reaches_every_device_on_both_web_processes(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    devices = {
        "bob/phone": client_for(bob, "phone", web=0),
        "bob/laptop": client_for(bob, "laptop", web=1),
        "alice/tablet": client_for(alice, "tablet", web=1),  # the sender's other device
    }
    sockets = {}
    try:
        for name, client in devices.items():
            sockets[name] = await client.ws().__aenter__()
            assert (await sockets[name].receive_json(timeout=10))["type"] == "ready"
        accepted = await client_for(alice, "phone", web=0).send(
            to=bob, client_msg_id="push-1", body="to all devices")
        for name, ws in sockets.items():
            frame = await ws.receive_json(timeout=DELIVERY_TIMEOUT_S)
            assert frame["type"] == "message", name
            assert frame["message"]["message_id"] == accepted["message_id"], name
    finally:
        for ws in sockets.values():
            await ws.close()


async def test_presence_follows_connections(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    (carol,) = names("carol")
    redis = create_redis(stack.settings)
    presence = PresenceStore(redis, ttl_s=stack.settings.presence_ttl_s)
    try:
        async with client_for(carol, "phone", web=1).ws() as ws:
            await ws.receive_json(timeout=10)
            online = await presence.devices(carol)
            assert list(online) == ["phone"]
            assert await redis.ttl(keys.presence(carol)) > 0
            await ws.send_str('{"type":"ping"}')
            assert await ws.receive_json(timeout=10) == {"type": "pong"}

        async def gone() -> bool:
            return await presence.devices(carol) == {}
        await wait_for(gone, within=10, what="presence removed after close")
    finally:
        await redis.aclose()


async def test_websocket_needs_a_valid_token(
    stack: Stack, client_for: Callable[..., Client]
) -> None:
    client = client_for("dave")
    client.token = "not-a-token"
    async with client.session.get(client.base_url + "/v1/ws", headers=client.headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_token"
    good = client_for("dave")
    url = f"{good.base_url}/v1/ws?token={good.token}"
    async with good.session.ws_connect(url) as ws:
        assert (await ws.receive_json(timeout=10))["user"] == "dave"


async def test_group_push_follows_membership(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    """A member added later gets no earlier message; a removed one no message until added
    back. (`make test-read-fanout` runs this on a read fan-out group, where the push agent
    picks online members by their feed spans.)"""
    owner, bob, carol, gid = names("owner", "bob", "carol", "team")
    cid = f"g:{gid}"
    alice = client_for(owner)
    created = await alice.ok("POST", "/v1/groups", expect=201,
                             json={"group_id": gid, "members": [bob]})
    sockets = {u: await client_for(u, "ws").ws().__aenter__() for u in (bob, carol)}

    async def pushed_until(user: str, last: str) -> list[str]:
        """What is pushed to `user` in this group (texts, and ops of membership events), up
        to the text `last`. One conversation is pushed in log order. The group's creation
        is pushed to bob on its own time (before or after his socket is ready): not counted."""
        seen: list[str] = []
        while not seen or seen[-1] != last:
            frame = await sockets[user].receive_json(timeout=DELIVERY_TIMEOUT_S)
            message = frame.get("message", {})
            if (frame["type"] == "message" and message["conversation_id"] == cid
                    and message["seq"] > created["seq"]):
                body = message["body"]
                seen.append(body if message["type"] == "text" else f"{body['op']}:"
                            + ",".join(body["members"]))
        return seen

    try:
        for ws in sockets.values():
            assert (await ws.receive_json(timeout=10))["type"] == "ready"
        await alice.send(conversation=cid, client_msg_id="m1", body="before carol")
        await alice.ok("POST", f"/v1/groups/{gid}/members", json={"add": [carol]})
        await alice.send(conversation=cid, client_msg_id="m2", body="with carol")
        await alice.ok("POST", f"/v1/groups/{gid}/members", json={"remove": [bob]})
        await alice.send(conversation=cid, client_msg_id="m3", body="without bob")
        await alice.ok("POST", f"/v1/groups/{gid}/members", json={"add": [bob]})
        await alice.send(conversation=cid, client_msg_id="m4", body="bob is back")
        assert await pushed_until(carol, "bob is back") == [
            f"add:{carol}", "with carol", f"remove:{bob}", "without bob", f"add:{bob}",
            "bob is back"]
        assert await pushed_until(bob, "bob is back") == [
            "before carol", f"add:{carol}", "with carol", f"remove:{bob}", f"add:{bob}",
            "bob is back"]
    finally:
        for ws in sockets.values():
            await ws.close()


async def test_ready_is_the_first_frame_while_pushes_race_the_handshake(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    """A client syncs after `ready`; a push written before it would arrive before the
    client knows the socket is live. Records are published on the user's channel without
    pause while devices connect: each socket's first frame is `ready`, and the records
    published after it reach the socket."""
    (erin,) = names("erin")
    redis = create_redis(stack.settings)
    command = "SPUBLISH" if is_cluster(redis) else "PUBLISH"
    frame = orjson.dumps({"type": "message", "message": {"body": "racing"}})
    stop = asyncio.Event()

    async def publish_without_pause() -> None:
        while not stop.is_set():
            await redis.execute_command(command, keys.push_channel(erin), frame)

    publisher = asyncio.create_task(publish_without_pause())
    try:
        for attempt in range(5):
            async with client_for(erin, f"d{attempt}", web=attempt % 2).ws() as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "ready", attempt
                assert (await ws.receive_json(timeout=10))["type"] == "message", attempt
    finally:
        stop.set()
        await publisher
        await redis.aclose()
