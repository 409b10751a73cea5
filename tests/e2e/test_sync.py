"""Offline pull (`GET /v1/sync`): pages, exact has_more, cursor chains, per-device cursors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from app.apiclient import Client
from tests.e2e.conftest import await_inbox, direct

pytestmark = pytest.mark.services


async def send_many(sender: Client, to: str, count: int, prefix: str = "m",
                    in_flight: int = 20) -> list[str]:
    """Send `count` messages, `in_flight` at a time (so their order is only defined with
    in_flight=1); returns their message ids."""
    ids: list[str] = []
    for start in range(0, count, in_flight):
        batch = range(start, min(start + in_flight, count))
        answers = await asyncio.gather(*(sender.send(to=to, client_msg_id=f"{prefix}{i}",
                                                     body={"n": i}) for i in batch))
        ids.extend(a["message_id"] for a in answers)
    return ids


@pytest.mark.parametrize(("count", "pages"), [
    (0, [0]), (1, [1]), (199, [199]), (200, [200]), (201, [200, 1]), (450, [200, 200, 50]),
])
async def test_offline_pull_pages_the_whole_inbox_once_in_order(
    count: int, pages: list[int], names: Callable[..., list[str]],
    client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    sender, phone = client_for(alice), client_for(bob, "phone", web=1)
    sent = await send_many(sender, bob, count)
    await await_inbox(client_for(bob, "watcher"), count, f"{count} messages in bob's inbox")

    seen: list[dict] = []
    sizes: list[int] = []
    more_flags: list[bool] = []
    cursor = None
    while True:  # no `since`: the server continues from this device's cursor
        page = await phone.sync()
        sizes.append(len(page["messages"]))
        more_flags.append(page["has_more"])
        seen.extend(page["messages"])
        if cursor is not None and page["messages"]:
            assert page["cursor"] != cursor
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert sizes == pages
    assert more_flags == [True] * (len(pages) - 1) + [False]
    assert sorted(m["message_id"] for m in seen) == sorted(sent)
    assert len({m["message_id"] for m in seen}) == count  # no duplicates
    assert [m["seq"] for m in seen] == list(range(1, count + 1))  # oldest first, no gaps
    assert all(m["conversation_id"] == direct(alice, bob) for m in seen)

    again = await phone.sync()  # caught up: nothing new, cursor unchanged
    assert again == {"messages": [], "cursor": cursor, "has_more": False}


async def test_each_device_keeps_its_own_cursor_and_since_zero_restarts(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    sender = client_for(alice)
    phone, laptop = client_for(bob, "phone", web=0), client_for(bob, "laptop", web=1)
    watcher = client_for(bob, "watcher")
    await send_many(sender, bob, 5, prefix="a", in_flight=1)
    await await_inbox(watcher, 5, "the first five")

    first = await phone.sync(limit=3)
    assert [m["body"]["n"] for m in first["messages"]] == [0, 1, 2] and first["has_more"]
    assert [m["body"]["n"] for m in (await laptop.sync(limit=2))["messages"]] == [0, 1]

    await send_many(sender, bob, 2, prefix="b", in_flight=1)
    await await_inbox(watcher, 7, "seven messages")
    rest_phone = await phone.sync()
    rest_laptop = await laptop.sync()
    assert [m["client_msg_id"] for m in rest_phone["messages"]] == ["a3", "a4", "b0", "b1"]
    assert [m["client_msg_id"] for m in rest_laptop["messages"]] == ["a2", "a3", "a4", "b0", "b1"]
    assert rest_phone["has_more"] is False and rest_laptop["has_more"] is False

    fresh = await phone.sync(since=0)
    assert len(fresh["messages"]) == 7 and fresh["messages"][0]["client_msg_id"] == "a0"
    explicit = await laptop.sync(since=first["cursor"])
    assert [m["client_msg_id"] for m in explicit["messages"]] == ["a3", "a4", "b0", "b1"]


async def test_the_senders_inbox_holds_what_they_sent(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    await send_many(client_for(alice, "phone"), bob, 3)
    other_device = client_for(alice, "laptop", web=1)
    mine = await await_inbox(other_device, 3, "alice's own copies")
    assert [m["sender"] for m in mine] == [alice] * 3


async def test_bad_sync_parameters_get_400(client_for: Callable[..., Client]) -> None:
    client = client_for("someone")
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"since": "garbage"}):
        status, body = await client.request("GET", "/v1/sync", params=params)
        assert status == 400, params
        assert set(body["error"]) == {"code", "message"}
