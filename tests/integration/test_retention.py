"""Retention on the real stores: with periods of seconds, inbox entries and history rows
really go away (Redis MINID trimming + key expiry; HBase column-family TTL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import happybase
import orjson
import pytest
import pytest_asyncio

from app.devstack import local_settings, wait_for
from app.models import Message, SequencedRecord
from app.settings import Settings
from app.stores import keys
from app.stores.feeds import FeedStore
from app.stores.history import HistoryStore, ensure_table
from app.stores.inbox import InboxStore
from app.stores.redis_client import RedisClient, create_redis
from app.usecases.sync import SyncCursor, read_page

pytestmark = pytest.mark.services
RETENTION_S = 2


def record(cid: str, seq: int, sender: str, recipients: list[str]) -> SequencedRecord:
    message = Message(message_id=uuid.uuid4().hex, conversation_id=cid, seq=seq, sender=sender,
                      type="text", body=f"m{seq}", client_msg_id=f"c{seq}",
                      ts=int(time.time() * 1000))
    return SequencedRecord(message=message, recipients=recipients)


@pytest.fixture
def settings() -> Settings:
    return local_settings(redis_db=9, hbase_table=f"retention_{uuid.uuid4().hex[:8]}",
                    inbox_retention_s=RETENTION_S, history_retention_s=RETENTION_S)


@pytest_asyncio.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    client = create_redis(settings)
    yield client
    await client.aclose()


async def messages(inbox: InboxStore, user: str) -> list[dict[str, Any]]:
    return [orjson.loads(f[b"m"]) for _, f in await inbox.entries(user, after=None, count=10)]


async def test_inbox_entries_expire_and_are_trimmed(redis: RedisClient) -> None:
    user, other = f"ret-{uuid.uuid4().hex[:8]}", "someone"
    inbox = InboxStore(redis, retention_s=RETENTION_S)
    await inbox.deliver([record(f"u:{other}:{user}", 1, other, [user])])
    assert len(await messages(inbox, user)) == 1
    assert 0 < await redis.ttl(keys.inbox(user)) <= RETENTION_S

    async def expired() -> bool:
        return await messages(inbox, user) == []
    await wait_for(expired, within=RETENTION_S + 5, what="the entry to fall out of retention")

    await inbox.deliver([record(f"u:{other}:{user}", 2, other, [user])])
    assert await redis.xlen(keys.inbox(user)) == 1  # MINID trimmed the old entry away
    assert [m["seq"] for m in await messages(inbox, user)] == [2]

    async def key_gone() -> bool:
        return not await redis.exists(keys.inbox(user))
    await wait_for(key_gone, within=RETENTION_S + 5, what="the idle inbox key to expire")


async def test_group_feed_entries_expire_and_are_trimmed(redis: RedisClient) -> None:
    """The read fan-out feed keeps the inbox's retention; members' spans outlive it."""
    member, cid = f"ret-{uuid.uuid4().hex[:8]}", f"g:ret-{uuid.uuid4().hex[:8]}"
    inbox = InboxStore(redis, retention_s=RETENTION_S)
    feeds = FeedStore(redis, retention_s=RETENTION_S)
    switch = record(cid, 1, "owner", ["owner", member]).model_copy(update={"fanout": "read"})
    await feeds.append([switch])
    assert [m["seq"] for m in await synced(inbox, feeds, member)] == [1]
    assert 0 < await redis.ttl(keys.feed(cid)) <= RETENTION_S

    async def expired() -> bool:
        return await synced(inbox, feeds, member) == []
    await wait_for(expired, within=RETENTION_S + 5, what="the feed entry to leave retention")

    later = record(cid, 2, "owner", []).model_copy(update={"fanout": "read"})
    await feeds.append([later])
    assert await redis.xlen(keys.feed(cid)) == 1  # MINID trimmed the old entry away
    assert [m["seq"] for m in await synced(inbox, feeds, member)] == [2]

    async def key_gone() -> bool:
        return not await redis.exists(keys.feed(cid))
    await wait_for(key_gone, within=RETENTION_S + 5, what="the idle feed key to expire")
    assert await redis.hexists(keys.spans(member), cid)  # membership is not retention


async def synced(inbox: InboxStore, feeds: FeedStore, user: str) -> list[dict[str, Any]]:
    return (await read_page(inbox, feeds, user, SyncCursor(), limit=10)).messages


async def test_history_rows_expire_by_column_family_ttl(settings: Settings) -> None:
    assert ensure_table(settings) is True
    assert ensure_table(settings) is False  # idempotent
    store = HistoryStore(settings)
    try:
        cid = "u:ret-a:ret-b"
        await store.write([record(cid, 1, "ret-a", ["ret-a", "ret-b"])])
        assert len((await store.page(cid, before=None, before_ts=None, limit=5)).messages) == 1

        async def expired() -> bool:
            return (await store.page(cid, before=None, before_ts=None, limit=5)).messages == []
        await wait_for(expired, within=RETENTION_S + 10, what="the history row TTL")

        conn = happybase.Connection(settings.hbase_host, port=settings.hbase_port)
        try:
            families = conn.table(settings.hbase_table_name).families()
            assert families[b"m"]["time_to_live"] == RETENTION_S
            assert families[b"m"]["max_versions"] == 1
            conn.compact_table(settings.hbase_table_name, major=True)
            assert list(conn.table(settings.hbase_table_name).scan()) == []
        finally:
            conn.close()
    finally:
        await store.close()
        conn = happybase.Connection(settings.hbase_host, port=settings.hbase_port)
        conn.delete_table(settings.hbase_table_name, disable=True)
        conn.close()
