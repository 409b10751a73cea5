"""History (`GET /v1/conversations/{cid}/messages`): backwards pages, before_ts, access."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.apiclient import Client
from app.devstack import Stack, produce
from app.models import encode_send
from tests.e2e.conftest import await_history, direct
from tests.e2e.test_sync import send_many

pytestmark = pytest.mark.services


async def pages_backwards(client: Client, cid: str, **params: int) -> list[dict]:
    pages = []
    while True:
        page = await client.history(cid, **params)
        pages.append(page)
        if not page["has_more"]:
            assert page["next_before"] is None
            return pages
        assert page["next_before"] == page["messages"][-1]["seq"]
        params = {**params, "before": page["next_before"]}
        params.pop("before_ts", None)


@pytest.mark.parametrize(("count", "sizes"), [(20, [20]), (40, [20, 20]), (45, [20, 20, 5])])
async def test_history_pages_backwards_across_page_boundaries(
    count: int, sizes: list[int], names: Callable[..., list[str]],
    client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    await send_many(client_for(alice), bob, count)
    cid = direct(alice, bob)
    reader = client_for(bob, web=1)
    await await_history(reader, cid, count)

    pages = await pages_backwards(reader, cid)
    assert [len(p["messages"]) for p in pages] == sizes
    seqs = [m["seq"] for p in pages for m in p["messages"]]
    assert seqs == list(range(count, 0, -1))  # newest first, every seq once

    middle = await reader.history(cid, before=11, limit=5)
    assert [m["seq"] for m in middle["messages"]] == [10, 9, 8, 7, 6]
    assert middle["has_more"] is True and middle["next_before"] == 6
    assert (await reader.history(cid, before=1))["messages"] == []


async def test_before_ts_with_many_messages_in_the_same_millisecond(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    """35 messages share one ms; before_ts then next_before must page through all of them
    without skipping or repeating any."""
    alice, bob = names("alice", "bob")
    cid = direct(alice, bob)
    t = 1_700_000_000_000
    stamps = [t - 1] * 5 + [t] * 35 + [t + 1] * 5
    records = [
        (cid, encode_send(cid, alice, f"same-ms-{i}", body_json=str(i).encode(),
                          accepted_at=ts))
        for i, ts in enumerate(stamps)
    ]
    await produce(stack, stack.settings.topic_inbound, records)
    reader = client_for(bob)
    await await_history(reader, cid, len(records))

    pages = await pages_backwards(reader, cid, before_ts=t + 1)
    got = [m for p in pages for m in p["messages"]]
    assert [len(p["messages"]) for p in pages] == [20, 20]
    assert [m["body"] for m in got] == list(range(39, -1, -1))
    assert all(m["ts"] < t + 1 for m in got)
    only_older = await reader.history(cid, before_ts=t)
    assert [m["body"] for m in only_older["messages"]] == [4, 3, 2, 1, 0]


async def test_history_is_refused_to_non_members(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob, mallory = names("alice", "bob", "mallory")
    await send_many(client_for(alice), bob, 1)
    outsider = client_for(mallory)
    status, body = await outsider.request("GET", f"/v1/conversations/{direct(alice, bob)}/messages")
    assert status == 403 and body["error"]["code"] == "not_a_member"
    status, body = await outsider.request("GET", "/v1/conversations/g:nope-x/messages")
    assert status == 404 and body["error"]["code"] == "no_such_group"
    status, body = await outsider.request("GET", "/v1/conversations/bogus/messages")
    assert status == 400 and body["error"]["code"] == "invalid_conversation"
