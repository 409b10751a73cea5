"""Auth (G5) and bad input (G6): clear 4xx errors, nothing produced, dead-letters."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import jwt
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from app.apiclient import Client
from app.devstack import Stack, produce
from app.models import encode_batch, encode_send
from app.stores.kafka import end_offsets
from tests.e2e.conftest import DELIVERY_TIMEOUT_S, await_inbox

pytestmark = pytest.mark.services


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


async def inbound_end(stack: Stack) -> int:
    """The total end offset of imflow.inbound: grows with every produced record."""
    return sum((await end_offsets(stack.settings, stack.settings.topic_inbound)).values())


@pytest_asyncio.fixture
async def nothing_produced(stack: Stack) -> AsyncIterator[None]:
    before = await inbound_end(stack)
    yield
    assert await inbound_end(stack) == before, "a rejected request produced a record"


def bad_tokens(stack: Stack) -> dict[str, tuple[str, str]]:
    secret = stack.env["IMFLOW_SECRET"]
    now = int(time.time())
    good_claims = {"sub": "eve", "dev": "d", "exp": now + 600}
    return {
        "missing": ("", "missing_token"),
        "malformed": ("not.a.jwt", "invalid_token"),
        "wrong secret": (jwt.encode(good_claims, "y" * 40, algorithm="HS256"), "invalid_token"),
        "expired": (jwt.encode({**good_claims, "exp": now - 5}, secret, algorithm="HS256"),
                    "token_expired"),
        "alg none": (f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(good_claims)}.",
                     "invalid_token"),
        "HS512": (jwt.encode(good_claims, secret, algorithm="HS512"), "invalid_token"),
        "no exp": (jwt.encode({"sub": "eve"}, secret, algorithm="HS256"), "invalid_token"),
        "bad sub": (jwt.encode({**good_claims, "sub": "eve/../x"}, secret, algorithm="HS256"),
                    "invalid_token"),
    }


@pytest.mark.usefixtures("nothing_produced")
async def test_bad_tokens_get_401_everywhere(stack: Stack,
                                             client_for: Callable[..., Client]) -> None:
    routes = [("POST", "/v1/messages", {"to": "bob", "client_msg_id": "x"}),
              ("GET", "/v1/sync", None), ("GET", "/v1/conversations", None),
              ("GET", "/v1/conversations/u:bob:eve/messages", None),
              ("POST", "/v1/groups", {"group_id": "g", "members": []})]
    for label, (token, code) in bad_tokens(stack).items():
        client = client_for("eve")
        client.token = token
        for method, path, body in routes:
            status, answer = await client.request(method, path, json=body)
            assert status == 401, (label, path)
            assert answer["error"]["code"] == code, (label, path)


@pytest.mark.usefixtures("nothing_produced")
async def test_bad_requests_get_a_clear_400_or_413(client_for: Callable[..., Client]) -> None:
    client = client_for("eve")
    big = "x" * (64 * 1024)
    cases: list[tuple[Any, int, str]] = [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        ({"to": "bob"}, 400, "invalid_client_msg_id"),
        ({"to": "bob", "client_msg_id": ""}, 400, "invalid_client_msg_id"),
        ({"to": "bob", "client_msg_id": "c" * 65}, 400, "invalid_client_msg_id"),
        ({"to": "bob", "client_msg_id": 5}, 400, "invalid_client_msg_id"),
        ({"to": "b ob", "client_msg_id": "c"}, 400, "invalid_to"),
        ({"to": "bob", "client_msg_id": "c", "type": 3}, 400, "invalid_type"),
        ({"client_msg_id": "c"}, 400, "invalid_target"),
        ({"to": "bob", "conversation": "g:x", "client_msg_id": "c"}, 400, "invalid_target"),
        ({"conversation": "x:y", "client_msg_id": "c"}, 400, "invalid_conversation"),
        ({"conversation": "u:bob:carol", "client_msg_id": "c"}, 403, "not_a_member"),
        ({"conversation": "g:does-not-exist", "client_msg_id": "c"}, 404, "no_such_group"),
        ({"to": "bob", "client_msg_id": "c", "body": big}, 413, "payload_too_large"),
        (b"{" + b" " * (200 * 1024) + b"}", 413, "payload_too_large"),
    ]
    for body, status, code in cases:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        got, answer = await client.request("POST", "/v1/messages", **kwargs)
        assert (got, answer["error"]["code"]) == (status, code), str(body)[:80]
        assert answer["error"]["message"]


async def test_a_body_just_under_the_limit_is_accepted_whole(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    text = "y" * (64 * 1024 - 16)  # with its JSON quotes, just under 64 KiB encoded
    await client_for(alice).send(to=bob, client_msg_id="big", body={"t": text})
    (got,) = await await_inbox(client_for(bob, "watch"), 1, "the large message")
    assert got["body"] == {"t": text}


async def test_a_user_sends_only_as_themselves(
    names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    eve, bob = names("eve", "bob")
    await client_for(eve).ok("POST", "/v1/messages", expect=202,
                             json={"to": bob, "client_msg_id": "spoof", "sender": "alice",
                                   "body": "from whom?"})
    (got,) = await await_inbox(client_for(bob, "watch"), 1, "the message")
    assert got["sender"] == eve


async def test_the_send_rate_limit_answers_429_with_retry_after(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    (chatty,) = names("chatty")
    client = client_for(chatty, web=2)  # the web process limited to 3 sends per second
    answers = []
    for i in range(8):
        async with client.session.post(client.base_url + "/v1/messages", headers=client.headers,
                                       json={"to": "bob", "client_msg_id": f"r{i}"}) as resp:
            answers.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
    limited = [a for a in answers if a[0] == 429]
    assert limited, answers
    assert len([a for a in answers if a[0] == 202]) <= 6  # at most two 1 s windows' worth
    assert all(a[1] == "1" and a[2]["error"]["code"] == "rate_limited" for a in limited)


@asynccontextmanager
async def dead_letters_from_now(stack: Stack) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of the dead-letter topic positioned at its end (before the test writes)."""
    consumer = AIOKafkaConsumer(stack.settings.topic_dead_letter,
                                bootstrap_servers=stack.settings.kafka_bootstrap,
                                auto_offset_reset="latest", enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)
        yield consumer
    finally:
        await consumer.stop()


async def letters_keyed(consumer: AIOKafkaConsumer, key: str, count: int) -> list[dict[str, Any]]:
    """The next `count` dead letters whose record key was `key`, in topic order."""
    letters: list[dict[str, Any]] = []
    async with asyncio.timeout(DELIVERY_TIMEOUT_S):
        while len(letters) < count:
            batch = await consumer.getmany(timeout_ms=500)
            decoded = (orjson.loads(m.value) for ms in batch.values() for m in ms)
            letters += [letter for letter in decoded if letter["key"] == key]
    return letters


async def test_malformed_topic_records_go_to_dead_letter_and_the_agent_keeps_going(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    cid = f"u:{alice}:{bob}"
    valid: dict[str, Any] = {"v": 1, "kind": "send", "conversation_id": cid, "sender": alice,
                             "client_msg_id": "ok"}
    bad = {
        b"not json at all": "not JSON",
        orjson.dumps([1, 2, 3]): "not a JSON object",
        orjson.dumps({**valid, "v": 2}): "unknown record version",
        orjson.dumps({**valid, "kind": "shout"}): "unknown record kind",
        orjson.dumps({k: v for k, v in valid.items() if k != "sender"}): "invalid field sender",
        orjson.dumps({**valid, "conversation_id": "nope"}): "not a conversation id",
        orjson.dumps({**valid, "sender": "mallory"}): "is not in",
        orjson.dumps({**valid, "body": "x" * 70_000}): "exceeds",
    }
    async with dead_letters_from_now(stack) as consumer:
        await produce(stack, stack.settings.topic_inbound, [(cid, raw) for raw in bad])
        await client_for(alice).send(to=bob, client_msg_id="after-the-junk", body="still flows")
        letters = await letters_keyed(consumer, cid, len(bad))
    by_value = {base64.b64decode(letter["value_b64"]): letter for letter in letters}
    assert set(by_value) == set(bad)
    for raw, reason in bad.items():
        letter = by_value[raw]
        assert reason in letter["reason"], (letter["reason"], reason)
        assert letter["topic"] == stack.settings.topic_inbound
        assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
    (flowed,) = await await_inbox(client_for(bob, "watch"), 1, "the valid message after")
    assert flowed["client_msg_id"] == "after-the-junk" and flowed["seq"] == 1


async def test_an_outside_batch_record_keeps_its_order_and_dead_letters_bad_items_alone(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    cid = f"u:{alice}:{bob}"

    def send(n: int, **changes: Any) -> bytes:
        return encode_send(cid, changes.get("sender", alice), f"b{n}", body_json=b"%d" % n)
    items = [send(0), b'{"v":1,"kind":"send","conversation_id":"' + cid.encode() + b'"}',
             send(2), send(3, sender="mallory"), send(4)]
    async with dead_letters_from_now(stack) as consumer:
        await produce(stack, stack.settings.topic_inbound, [(cid, encode_batch(items))])
        letters = await letters_keyed(consumer, cid, 2)
    inbox = await await_inbox(client_for(bob, "watch"), 3, "the batch's good messages")
    assert [(m["client_msg_id"], m["seq"], m["body"]) for m in inbox] == [
        ("b0", 1, 0), ("b2", 2, 2), ("b4", 3, 4)]
    assert [letter["index"] for letter in letters] == [1, 3]
    assert letters[0]["offset"] == letters[1]["offset"]  # both in the one batch record
    assert "invalid field sender" in letters[0]["reason"]
    assert "is not in" in letters[1]["reason"]
    assert orjson.loads(letters[1]["value"])["client_msg_id"] == "b3"  # the item, not the batch
