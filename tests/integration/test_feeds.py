"""Group feeds (read fan-out) on the real Redis: the append pipeline survives an emptied
script cache, and push waits for the inbox agent's append by blocking on the feed, not
by polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import cast

import pytest

from app.models import Message, SequencedRecord
from app.stores import keys, scripts
from app.stores.feeds import FeedState, FeedStore
from app.stores.push import PresenceStore, PushPublisher
from app.stores.redis_client import RedisClient, run_script

pytestmark = pytest.mark.services


def entry(cid: str, seq: int, recipients: list[str]) -> SequencedRecord:
    message = Message(message_id=uuid.uuid4().hex, conversation_id=cid, seq=seq,
                      sender=recipients[0] if recipients else "owner", type="text",
                      body=f"m{seq}", client_msg_id=f"c{seq}", ts=int(time.time() * 1000))
    return SequencedRecord(fanout="read", message=message, recipients=recipients)


async def test_a_feed_append_survives_an_emptied_script_cache(redis: RedisClient) -> None:
    cid = f"g:feed-{uuid.uuid4().hex[:8]}"
    feeds = FeedStore(redis, retention_s=60)
    await redis.script_flush()  # as after a Redis restart or a failover
    assert await feeds.append([entry(cid, 1, ["a", "b"]), entry(cid, 2, [])]) == 2
    assert await feeds.append([entry(cid, 2, [])]) == 0  # idempotent: seq 2 is there
    assert (await feeds.state(cid)).applied_seq == 2


class LookCounting(FeedStore):
    """A feed store that notes when the push publisher reads a feed's state."""

    def __init__(self, client: RedisClient, *, retention_s: int) -> None:
        super().__init__(client, retention_s=retention_s)
        self.looks: list[float] = []

    async def state(self, cid: str) -> FeedState:
        self.looks.append(time.monotonic())
        return await super().state(cid)


async def test_push_of_a_feed_entry_wakes_on_the_append_instead_of_polling(
        redis: RedisClient) -> None:
    cid = f"g:push-{uuid.uuid4().hex[:8]}"
    member, offline = f"on-{uuid.uuid4().hex[:6]}", f"off-{uuid.uuid4().hex[:6]}"
    feeds = LookCounting(redis, retention_s=60)
    await feeds.append([entry(cid, 1, [member, offline])])  # the switch: spans open
    await PresenceStore(redis, ttl_s=60).connected(member, "d1", "node-1")
    looks = feeds.looks
    publisher = PushPublisher(redis, feed_wait_s=5.0, feeds=feeds)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.push_channel(member))
    try:
        publishing = asyncio.create_task(publisher.publish([entry(cid, 2, [])]))
        await asyncio.sleep(0.3)  # the inbox agent is late with seq 2
        assert not publishing.done()
        appended_at = time.monotonic()
        await feeds.append([entry(cid, 2, [])])
        sent = await asyncio.wait_for(publishing, 2.0)
        woke_after = looks[-1] - appended_at
    finally:
        await pubsub.aclose()
    assert sent == 1  # the online member only
    assert len(looks) == 2  # one look before the wait, one after the append woke it
    assert 0 <= woke_after < 0.1, woke_after


async def test_a_membership_entry_cut_off_between_its_steps_is_finished_exactly_once(
        redis: RedisClient) -> None:
    cid = f"g:steps-{uuid.uuid4().hex[:8]}"
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    feeds = FeedStore(redis, retention_s=60)
    # The inbox agent died after steps 1 and 2 (reserve the id, a's span) of the switch.
    [reserved] = await run_script(redis, scripts.RESERVE_FEED_ENTRY, [
        ([keys.feed(cid), keys.feed_seq(cid), keys.feed_pending(cid)], [60, 1])])
    await run_script(redis, scripts.UPDATE_SPANS, [([keys.spans(a)], [cid, reserved, 1, "o"])])
    assert (await feeds.state(cid)).applied_seq == 0  # nothing visible yet
    assert await redis.xlen(keys.feed(cid)) == 0

    assert await feeds.append([entry(cid, 1, [a, b]), entry(cid, 2, [])]) == 2  # redelivered

    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(keys.feed(cid)))
    ids = [entry_id for entry_id, _ in rows]
    assert len(ids) == 2 and ids[0] == reserved  # the reserved id, one entry per seq
    for user in (a, b):
        [span] = (await feeds.spans(user))[cid]
        assert (span.from_id, span.from_seq, span.to_id) == (reserved.decode(), 1, None)
    state = await feeds.state(cid)
    assert (state.applied_seq, state.users) == (2, sorted([a, b]))
    assert await redis.hlen(keys.feed_pending(cid)) == 0
