"""Offline inboxes in Redis: one stream per user, per-device cursors, conversation list.

Every key of a user carries the user id as a hash tag (`inbox:{alice}`), so all of one
user's keys live in one Redis Cluster slot and one Lua call can update them atomically.

Idempotency (G2): `applied:{u}` remembers, per conversation, the highest seq written to
the user's inbox. Sequenced records of one conversation arrive in seq order (one Kafka
partition), so a redelivered or replayed record has `seq <= applied` and is skipped.
"""

from __future__ import annotations

import time
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from app.models import SequencedRecord

# KEYS per delivery: inbox, applied, convs, read markers, unread seqs of this conversation.
# ARGV: minid, ttl_s, the number of payloads n, the n payloads, then per delivery:
# conversation, seq, role, payload index (1-based), where role is "o" (from someone else:
# unread unless already read), "s" (the user's own: read) or "e". Each payload is sent
# once per call, however many inboxes it goes to (a group event can be 100s of KB).
_DELIVER_LUA = """
local minid = ARGV[1]
local ttl = tonumber(ARGV[2])
local first = 4 + tonumber(ARGV[3])
local written = 0
local k = 1
for i = first, #ARGV, 4 do
  local inbox, applied, convs, read, unread = KEYS[k], KEYS[k+1], KEYS[k+2], KEYS[k+3], KEYS[k+4]
  k = k + 5
  local conv, seq, role = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local payload = ARGV[3 + tonumber(ARGV[i + 3])]
  local last = tonumber(redis.call('HGET', applied, conv) or '0')
  if seq > last then
    redis.call('XADD', inbox, 'MINID', minid, '*', 'm', payload)
    redis.call('HSET', applied, conv, seq)
    redis.call('HSET', convs, conv, payload)
    local read_seq = tonumber(redis.call('HGET', read, conv) or '0')
    if role == 'o' and seq > read_seq then
      redis.call('ZADD', unread, seq, seq)
      redis.call('EXPIRE', unread, ttl)
    elseif role == 's' and seq > read_seq then
      redis.call('HSET', read, conv, seq)
      redis.call('ZREMRANGEBYSCORE', unread, '-inf', seq)
      redis.call('EXPIRE', read, ttl)
    end
    redis.call('EXPIRE', inbox, ttl)
    redis.call('EXPIRE', applied, ttl)
    redis.call('EXPIRE', convs, ttl)
    written = written + 1
  end
end
return written
"""

# KEYS: read markers, unread seqs of the conversation; ARGV: conversation, seq, ttl_s.
_MARK_READ_LUA = """
local seq = tonumber(ARGV[2])
if seq > tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[1], ARGV[1], seq)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', seq)
return redis.call('ZCARD', KEYS[2])
"""


DELIVERIES_PER_CALL = 2_000


def retention_floor_id(retention_s: int) -> str:
    """The stream id `retention_s` ago: MINID trims below it and reads start at it, for
    inboxes and group feeds alike."""
    return f"{int(time.time() * 1000) - retention_s * 1000}-0"


def newest_first(conversations: list[dict[str, Any]]) -> None:
    """Sort conversation-list entries by their last message, most recent first."""
    conversations.sort(key=lambda c: (c["last_message"]["ts"], c["last_message"]["seq"]),
                       reverse=True)


def inbox_key(user: str) -> str:
    return f"inbox:{{{user}}}"


def read_markers_key(user: str) -> str:
    return f"read:{{{user}}}"


def _keys(user: str, cid: str) -> list[str]:
    tag = f"{{{user}}}"
    return [f"inbox:{tag}", f"applied:{tag}", f"convs:{tag}", read_markers_key(user),
            _unread_key(user, cid)]


def _unread_key(user: str, cid: str) -> str:
    return f"unread:{{{user}}}:{cid}"


def _cursor_key(user: str) -> str:
    return f"cursor:{{{user}}}"


def id_tuple(stream_id: str) -> tuple[int, int]:
    """A Redis stream id "ms-n" as a comparable tuple."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class InboxStore:
    """Owns every Redis key of the offline inbox."""

    def __init__(self, client: aioredis.Redis, *, retention_s: int) -> None:
        self._redis = client
        self._retention_s = retention_s
        self._deliver = client.register_script(_DELIVER_LUA)
        self._mark_read = client.register_script(_MARK_READ_LUA)

    async def deliver(self, records: list[SequencedRecord]) -> int:
        """Append each record to each recipient's inbox once; returns entries written.

        Calls carry at most `DELIVERIES_PER_CALL` deliveries, so one Lua call never holds
        Redis for long (and never outlasts a client timeout, after which a retry would
        run the same work again). Splitting is safe: each delivery is idempotent."""
        written = 0
        keys: list[str] = []
        deliveries: list[Any] = []
        payloads: list[str] = []
        for record in records:
            msg = record.message
            payloads.append(msg.model_dump_json())
            for user in record.recipients:
                keys.extend(_keys(user, msg.conversation_id))
                role = "s" if user == msg.sender else "o" if record.kind == "message" else "e"
                deliveries.extend((msg.conversation_id, msg.seq, role, len(payloads)))
                if len(keys) >= 5 * DELIVERIES_PER_CALL:
                    written += await self._call_deliver(keys, payloads, deliveries)
                    keys, deliveries, payloads = [], [], [payloads[-1]]
                    # the current record's payload is now number 1 of the next call
        if keys:
            written += await self._call_deliver(keys, payloads, deliveries)
        return written

    async def _call_deliver(self, keys: list[str], payloads: list[str],
                            deliveries: list[Any]) -> int:
        args = [self.floor_id(), self._retention_s, len(payloads), *payloads, *deliveries]
        return int(await self._deliver(keys=keys, args=args))

    @property
    def client(self) -> aioredis.Redis:
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
                    await self._redis.xrange(inbox_key(user), min=start, max="+", count=count))

    async def read_markers(self, user: str) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(read_markers_key(user)))
        return {cid.decode(): int(seq) for cid, seq in raw.items()}

    async def device_cursor(self, user: str, device: str) -> str | None:
        value = cast(bytes | None, await self._redis.hget(_cursor_key(user), device))
        return value.decode() if value is not None else None

    async def save_device_cursor(self, user: str, device: str, cursor: str) -> None:
        key = _cursor_key(user)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, device, cursor)
            pipe.expire(key, self._retention_s)
            await pipe.execute()

    async def mark_read(self, user: str, cid: str, seq: int) -> int:
        """Move the read marker to `seq` (never back); returns the unread count left."""
        keys = [read_markers_key(user), _unread_key(user, cid)]
        return int(await self._mark_read(keys=keys, args=[cid, seq, self._retention_s]))

    async def conversations(self, user: str) -> list[dict[str, Any]]:
        """The user's conversations with their last message and unread count, newest first."""
        convs = cast(dict[bytes, bytes], await self._redis.hgetall(f"convs:{{{user}}}"))
        cids = [c.decode() for c in convs]
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.zcard(_unread_key(user, cid))
            counts = await pipe.execute()
        items = [
            {"conversation_id": cid, "last_message": orjson.loads(convs[cid.encode()]),
             "unread": int(count)}
            for cid, count in zip(cids, counts, strict=True)
        ]
        newest_first(items)
        return items
