"""Offline inboxes in Redis: one stream per user, per-device cursors, conversation list.

Every key of a user carries the user id as a hash tag (`inbox:{alice}`, app/stores/keys.py),
so all of one user's keys live in one Redis Cluster slot and one Lua call can update them
atomically.

Idempotency (G2): `applied:{u}` remembers, per conversation, the highest seq written to
the user's inbox. Sequenced records of one conversation arrive in seq order (one Kafka
partition), so a redelivered or replayed record has `seq <= applied` and is skipped.
"""

from __future__ import annotations

import time
from typing import Any, cast

import orjson

from app.models import SequencedRecord
from app.stores import keys, scripts
from app.stores.redis_client import Call, RedisClient, redis_store, run_script, slot_chunks

DELIVERIES_PER_CALL = 2_000


def retention_floor_id(retention_s: int) -> str:
    """The stream id `retention_s` ago: MINID trims below it and reads start at it, for
    inboxes and group feeds alike."""
    return f"{int(time.time() * 1000) - retention_s * 1000}-0"


def newest_first(conversations: list[dict[str, Any]]) -> None:
    """Sort conversation-list entries by their last message, most recent first."""
    conversations.sort(key=lambda c: (c["last_message"]["ts"], c["last_message"]["seq"]),
                       reverse=True)


def _delivery_keys(user: str, cid: str) -> list[str]:
    """The KEYS of one delivery, in the order `scripts.DELIVER` reads them."""
    return [keys.inbox(user), keys.applied(user), keys.conversations(user),
            keys.read_markers(user), keys.unread(user, cid)]


def id_tuple(stream_id: str) -> tuple[int, int]:
    """A Redis stream id "ms-n" as a comparable tuple."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@redis_store
class InboxStore:
    """Owns every Redis key of the offline inbox."""

    def __init__(self, client: RedisClient, *, retention_s: int, replica_acks: int = 0) -> None:
        self._redis = client
        self._retention_s = retention_s
        self._replica_acks = replica_acks  # sinks' writes wait for replicas (run_script)
        self._mark_read = client.register_script(scripts.MARK_READ)

    async def deliver(self, records: list[SequencedRecord]) -> int:
        """Append each record to each recipient's inbox once; returns entries written.

        One Lua call per cluster slot of recipients (one call on a single server), of at
        most `DELIVERIES_PER_CALL` deliveries, so one call never holds Redis for long (and
        never outlasts a client timeout, after which a retry would run the same work
        again); all calls of the batch go in one pipeline. Splitting is safe: each
        delivery is idempotent, and a user's deliveries keep their order in one call."""
        payloads = [record.message_json for record in records]
        pairs = [(i, user) for i, record in enumerate(records) for user in record.recipients]
        calls = [self._deliver_call(records, payloads, chunk) for chunk in slot_chunks(
            self._redis, pairs, lambda pair: keys.inbox(pair[1]), DELIVERIES_PER_CALL)]
        written = await run_script(self._redis, scripts.DELIVER, calls,
                                   replica_acks=self._replica_acks)
        return sum(int(n) for n in written)

    def _deliver_call(self, records: list[SequencedRecord], payloads: list[bytes],
                      pairs: list[tuple[int, str]]) -> Call:
        """One DELIVER call: each payload it needs once, however many inboxes it goes to
        (a group event can be 100s of KB)."""
        call_keys: list[str] = []
        deliveries: list[Any] = []
        used: dict[int, int] = {}  # record index -> its payload's number in this call
        for i, user in pairs:
            msg, kind = records[i].message, records[i].kind
            call_keys.extend(_delivery_keys(user, msg.conversation_id))
            role = "s" if user == msg.sender else "o" if kind == "message" else "e"
            number = used.setdefault(i, len(used) + 1)
            deliveries.extend((msg.conversation_id, msg.seq, role, number))
        args = [self.floor_id(), self._retention_s, len(used),
                *(payloads[i] for i in used), *deliveries]
        return call_keys, args

    @property
    def client(self) -> RedisClient:
        return self._redis

    @property
    def retention_s(self) -> int:
        return self._retention_s

    def floor_id(self) -> str:
        """The oldest stream id still inside the retention (entries below it are expired)."""
        return retention_floor_id(self._retention_s)

    async def entries(self, user: str, *, after: str | None,
                      count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to `count` entries after stream id `after` (None: from the start), oldest
        first; never entries older than the retention, even if not trimmed yet."""
        floor = self.floor_id()
        start = floor
        if after is not None and id_tuple(after) >= id_tuple(floor):
            start = "(" + after
        return cast(list[tuple[bytes, dict[bytes, bytes]]],
                    await self._redis.xrange(keys.inbox(user), min=start, max="+", count=count))

    async def read_markers(self, user: str) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(keys.read_markers(user)))
        return {cid.decode(): int(seq) for cid, seq in raw.items()}

    async def device_cursor(self, user: str, device: str) -> str | None:
        value = cast(bytes | None, await self._redis.hget(keys.device_cursors(user), device))
        return value.decode() if value is not None else None

    async def save_device_cursor(self, user: str, device: str, cursor: str) -> None:
        key = keys.device_cursors(user)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, device, cursor)
            pipe.expire(key, self._retention_s)
            await pipe.execute()

    async def mark_read(self, user: str, cid: str, seq: int) -> int:
        """Move the read marker to `seq` (never back); returns the unread count left."""
        return int(await self._mark_read(keys=[keys.read_markers(user), keys.unread(user, cid)],
                                         args=[cid, seq, self._retention_s]))

    async def mark_sent_read(self, records: list[SequencedRecord]) -> None:
        """A sender has read their conversation up to each message they sent (replying
        reads), for records that reach them through a group feed, not their inbox."""
        calls: list[Call] = [
            ([keys.read_markers(m.sender), keys.unread(m.sender, m.conversation_id)],
             [m.conversation_id, m.seq, self._retention_s])
            for m in (r.message for r in records if r.kind == "message")]
        await run_script(self._redis, scripts.MARK_READ, calls, replica_acks=self._replica_acks)

    async def conversations(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations with their last message and unread count, newest first."""
        convs = cast(dict[bytes, bytes], await self._redis.hgetall(keys.conversations(user)))
        cids = [c.decode() for c in convs]
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.zcard(keys.unread(user, cid))
            counts = await pipe.execute()
        items = [
            {"conversation_id": cid, "last_message": orjson.loads(convs[cid.encode()]),
             "unread": int(count)}
            for cid, count in zip(cids, counts, strict=True)
        ]
        newest_first(items)
        return items
