"""Inbox delivery split over several Lua calls: every inbox gets each record once, with
its own payload, in seq order (the split is invisible)."""

from __future__ import annotations

import uuid
from typing import Any, cast

import orjson
import pytest

import app.stores.inbox as inbox_module
from app.models import Message, SequencedRecord
from app.stores import keys
from app.stores.inbox import InboxStore
from app.stores.redis_client import Call, RedisClient

pytestmark = pytest.mark.services


def record(cid: str, seq: int, recipients: list[str]) -> SequencedRecord:
    message = Message(message_id=uuid.uuid4().hex, conversation_id=cid, seq=seq,
                      sender=recipients[0], type="text", body={"n": seq, "pad": "x" * seq},
                      client_msg_id=f"c{seq}", ts=1_000 + seq)
    return SequencedRecord(message=message, recipients=recipients)


async def test_a_batch_split_across_calls_delivers_each_record_once(
    redis: RedisClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inbox_module, "DELIVERIES_PER_CALL", 3)  # splits mid-record
    tag = uuid.uuid4().hex[:8]
    users = [f"u{i}-{tag}" for i in range(6)]
    cid = f"g:split-{tag}"
    records = [record(cid, 1, users[:5]), record(cid, 2, users[:2]), record(cid, 3, users),
               record(cid, 4, users[3:])]
    inbox = InboxStore(redis, retention_s=3600)
    calls = 0
    deliver_call = inbox._deliver_call

    def counting(*args: Any) -> Call:
        nonlocal calls
        calls += 1
        return deliver_call(*args)
    monkeypatch.setattr(inbox, "_deliver_call", counting)

    assert await inbox.deliver(records) == 5 + 2 + 6 + 3
    assert calls == 6  # 16 deliveries, at most 3 per call
    for user in users:
        rows = cast(list[tuple[bytes, dict[bytes, bytes]]],
                    await redis.xrange(keys.inbox(user)))
        got = [orjson.loads(fields[b"m"]) for _, fields in rows]
        want = [r.message.model_dump(mode="json") for r in records if user in r.recipients]
        assert got == want, user
    assert await inbox.deliver(records) == 0  # a redelivery writes nothing
