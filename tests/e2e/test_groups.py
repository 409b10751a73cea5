"""Groups, membership causality (G4), retries (G2), order (G1), unread counts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from app.apiclient import Client
from tests.e2e.conftest import await_history, await_inbox, direct

pytestmark = pytest.mark.services


def texts(inbox: list[dict], cid: str) -> list[str]:
    return [m["body"] for m in inbox if m["conversation_id"] == cid and m["type"] == "text"]


async def test_group_lifecycle_and_who_may_change_it(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    owner, bob, carol, gid = names("owner", "bob", "carol", "team")
    alice = client_for(owner)
    created = await alice.ok("POST", "/v1/groups", expect=201,
                             json={"group_id": gid, "members": [bob]})
    assert created["owner"] == owner and created["members"] == sorted([owner, bob])
    assert created["conversation_id"] == f"g:{gid}"

    again = await alice.request("POST", "/v1/groups", json={"group_id": gid, "members": []})
    assert again[0] == 409 and again[1]["error"]["code"] == "group_exists"

    listed = await client_for(bob).ok("GET", f"/v1/groups/{gid}/members")
    assert listed["members"] == sorted([owner, bob]) and listed["owner"] == owner
    status, body = await client_for(carol).request("GET", f"/v1/groups/{gid}/members")
    assert status == 403 and body["error"]["code"] == "not_a_member"
    status, body = await client_for(bob).request("POST", f"/v1/groups/{gid}/members",
                                                 json={"add": [carol]})
    assert status == 403 and body["error"]["code"] == "not_owner"
    status, body = await client_for(carol).request("POST", "/v1/messages",
                                                   json={"conversation": f"g:{gid}",
                                                         "client_msg_id": "x", "body": "hi"})
    assert status == 403

    changed = await alice.ok("POST", f"/v1/groups/{gid}/members", json={"add": [carol]})
    assert changed["members"] == sorted([owner, bob, carol])
    status, body = await alice.request("POST", f"/v1/groups/{gid}/members",
                                       json={"remove": [owner]})
    # a well-formed change that the group's state refuses (the document's 409)
    assert status == 409 and body["error"]["code"] == "invalid_remove"


async def test_a_message_reaches_exactly_the_members_at_its_point_in_the_log(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    owner, bob, carol, gid = names("owner", "bob", "carol", "team")
    cid = f"g:{gid}"
    alice = client_for(owner)
    await alice.ok("POST", "/v1/groups", expect=201, json={"group_id": gid, "members": [bob]})
    await alice.send(conversation=cid, client_msg_id="m1", body="before carol")
    await alice.ok("POST", f"/v1/groups/{gid}/members", json={"add": [carol]})
    await alice.send(conversation=cid, client_msg_id="m2", body="with everyone")
    await alice.ok("POST", f"/v1/groups/{gid}/members", json={"remove": [bob]})
    await alice.send(conversation=cid, client_msg_id="m3", body="after bob")

    owner_inbox = await await_inbox(client_for(owner, "watch"), 6, "all six log entries")
    assert texts(owner_inbox, cid) == ["before carol", "with everyone", "after bob"]
    assert [m["seq"] for m in owner_inbox] == [1, 2, 3, 4, 5, 6]

    bob_inbox = await await_inbox(client_for(bob, "watch"), 5, "bob's entries")
    carol_inbox = await await_inbox(client_for(carol, "watch"), 4, "carol's entries")
    assert texts(bob_inbox, cid) == ["before carol", "with everyone"]
    assert texts(carol_inbox, cid) == ["with everyone", "after bob"]
    events = [m["body"]["op"] for m in bob_inbox if m["type"] == "system.members"]
    assert events == ["create", "add", "remove"]  # bob learns he was removed

    status, _ = await client_for(bob).request("POST", "/v1/messages", json={
        "conversation": cid, "client_msg_id": "late", "body": "still here?"})
    assert status == 403
    status, _ = await client_for(bob).request("GET", f"/v1/conversations/{cid}/messages")
    assert status == 403
    history = await await_history(client_for(carol), cid, 6)
    assert [m["seq"] for m in history] == [6, 5, 4, 3, 2, 1]


async def test_a_client_retry_is_stored_once_and_answers_the_same_id(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    first_web, second_web = client_for(alice, web=0), client_for(alice, web=1)
    first = await first_web.send(to=bob, client_msg_id="retry-me", body="once")
    retried = await asyncio.gather(*(second_web.send(to=bob, client_msg_id="retry-me",
                                                     body="once") for _ in range(3)))
    assert {r["message_id"] for r in retried} == {first["message_id"]}
    await first_web.send(to=bob, client_msg_id="after", body="next")

    inbox = await await_inbox(client_for(bob, "watch"), 2, "both messages")
    history = await await_history(client_for(bob), direct(alice, bob), 2)
    assert [m["client_msg_id"] for m in inbox] == ["retry-me", "after"]
    assert [m["seq"] for m in inbox] == [1, 2]
    assert [m["client_msg_id"] for m in history] == ["after", "retry-me"]
    late = await first_web.send(to=bob, client_msg_id="retry-me", body="once")
    assert late["message_id"] == first["message_id"]


@pytest.mark.parametrize("kind", ["direct", "group"])
async def test_unread_counts_and_the_read_marker(
    kind: str, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    """In a direct chat and in a group of three (on read fan-out when `make
    test-read-fanout` sets the threshold to 2)."""
    alice, bob, carol, gid = names("alice", "bob", "carol", "team")
    sender, reader = client_for(alice), client_for(bob)
    if kind == "direct":
        cid, to, first_seq = direct(alice, bob), {"to": bob}, 1
    else:
        cid, to, first_seq = f"g:{gid}", {"conversation": f"g:{gid}"}, 2
        await sender.ok("POST", "/v1/groups", expect=201,
                        json={"group_id": gid, "members": [bob, carol]})
    for i in range(3):
        await sender.send(**to, client_msg_id=f"u{i}", body=f"unread {i}")
    await await_inbox(client_for(bob, "watch"), first_seq + 2, "three messages")

    convs = (await reader.ok("GET", "/v1/conversations"))["conversations"]
    assert [(c["conversation_id"], c["unread"]) for c in convs] == [(cid, 3)]
    assert convs[0]["last_message"]["body"] == "unread 2"
    mine = (await sender.ok("GET", "/v1/conversations"))["conversations"]
    assert [(c["conversation_id"], c["unread"]) for c in mine] == [(cid, 0)]

    assert (await reader.ok("POST", f"/v1/conversations/{cid}/read",
                            json={"seq": first_seq + 1}))["unread"] == 1
    assert (await reader.ok("POST", f"/v1/conversations/{cid}/read",
                            json={"seq": first_seq}))["unread"] == 1  # never moves back
    reply = {"to": alice} if kind == "direct" else to
    await reader.send(**reply, client_msg_id="reply", body="replying reads it all")
    await await_inbox(client_for(alice, "watch"), first_seq + 3, "bob's reply")
    convs = (await reader.ok("GET", "/v1/conversations"))["conversations"]
    assert convs[0]["unread"] == 0 and convs[0]["last_message"]["body"] == "replying reads it all"
    theirs = (await sender.ok("GET", "/v1/conversations"))["conversations"]
    assert theirs[0]["unread"] == 1
    status, _ = await client_for("mallory").request(
        "POST", f"/v1/conversations/{cid}/read", json={"seq": 1})
    assert status == 403


async def test_concurrent_senders_into_one_group_get_one_gap_free_order(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    people = names("p0", "p1", "p2", "p3", "p4")
    gid = names("crowd")[0]
    cid = f"g:{gid}"
    await client_for(people[0]).ok("POST", "/v1/groups", expect=201,
                                   json={"group_id": gid, "members": people[1:]})
    per_sender = 25

    async def talk(user: str, web: int) -> None:
        client = client_for(user, web=web)
        for i in range(per_sender):  # each sender waits for its 202: its own order holds
            await client.send(conversation=cid, client_msg_id=f"{user}-{i}", body=[user, i])

    await asyncio.gather(*(talk(u, n % 2) for n, u in enumerate(people[1:])))
    total = 1 + 4 * per_sender
    views = [await await_inbox(client_for(u, "watch"), total, f"{u}'s inbox") for u in people]
    reference = [(m["seq"], m["message_id"]) for m in views[0] if m["conversation_id"] == cid]
    assert [seq for seq, _ in reference] == list(range(1, total + 1))
    for view in views[1:]:
        assert [(m["seq"], m["message_id"]) for m in view] == reference
    for sender in people[1:]:
        own = [m["body"][1] for m in views[0] if m["sender"] == sender and m["type"] == "text"]
        assert own == list(range(per_sender))
    history = await await_history(client_for(people[0]), cid, total)
    assert [(m["seq"], m["message_id"]) for m in reversed(history)] == reference
