"""Online push over Redis: presence of connected devices and per-user pub/sub channels.

The push agent publishes each sequenced record on `push:{user}` for every recipient that
has a connected device (presence), and each web process subscribes to the channels of
the users connected to it, so a device gets its messages whatever process it is on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import redis.asyncio as aioredis

from app.models import SequencedRecord
from app.stores.feeds import feed_seq_key, feed_users_key

log = logging.getLogger(__name__)

# KEYS: the presence key of each recipient of each record, in order. ARGV per record: the
# number of its recipients, its payload, then the channel of each. One call per batch.
_PUBLISH_ONLINE_LUA = """
local sent, k, i = 0, 1, 1
while i <= #ARGV do
  local n, payload = tonumber(ARGV[i]), ARGV[i + 1]
  for j = 1, n do
    if redis.call('EXISTS', KEYS[k]) == 1 then
      redis.call('PUBLISH', ARGV[i + 1 + j], payload)
      sent = sent + 1
    end
    k = k + 1
  end
  i = i + 2 + n
end
return sent
"""


# A read fan-out record goes to the online users whose span covers its seq. KEYS: the
# group's feedseq and feedusers (everyone who ever had a span: a member removed later
# still gets what was sent while they were in); ARGV: conversation, seq, payload.
# Returns -1 until the inbox agent has appended the record (then the spans are up to
# date for its seq). The presence, spans and channel keys of members are built here,
# which one Redis allows (on Redis Cluster this moves to one call per member slot);
# names as in presence_key, spans_key and channel.
_PUBLISH_FEED_LUA = """
local seq = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[1]) or '0') < seq then return -1 end
local sent = 0
for _, user in ipairs(redis.call('SMEMBERS', KEYS[2])) do  -- feedusers
  local tag = '{' .. user .. '}'
  if redis.call('EXISTS', 'presence:' .. tag) == 1 then
    local raw = redis.call('HGET', 'spans:' .. tag, ARGV[1])
    for _, span in ipairs(raw and cjson.decode(raw) or {}) do
      if span.fs <= seq and (span.ts == nil or seq <= span.ts) then
        redis.call('PUBLISH', 'push:' .. tag, ARGV[3])
        sent = sent + 1
        break
      end
    end
  end
end
return sent
"""
FEED_POLL_S = 0.02
RECIPIENTS_PER_CALL = 2_000

# Remove a device's presence only if it still names this connection.
_DISCONNECT_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def presence_key(user: str) -> str:
    return f"presence:{{{user}}}"


def channel(user: str) -> str:
    return f"push:{{{user}}}"


class PresenceStore:
    """Which devices of a user are connected, and to which web process (TTL-refreshed)."""

    def __init__(self, client: aioredis.Redis, *, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._disconnect = client.register_script(_DISCONNECT_LUA)

    async def connected(self, user: str, device: str, connection: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(presence_key(user), device, connection)
            pipe.expire(presence_key(user), self._ttl_s)
            await pipe.execute()

    heartbeat = connected

    async def disconnected(self, user: str, device: str, connection: str) -> None:
        await self._disconnect(keys=[presence_key(user)], args=[device, connection])

    async def devices(self, user: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(presence_key(user)))
        return {k.decode(): v.decode() for k, v in raw.items()}


def _payload(record: SequencedRecord) -> bytes:
    return b'{"type":"message","message":' + record.message.model_dump_json().encode() + b"}"


class PushPublisher:
    """Publishes sequenced records to the channels of online recipients."""

    def __init__(self, client: aioredis.Redis, *, feed_wait_s: float) -> None:
        self._redis = client
        self._feed_wait_s = feed_wait_s
        self._publish = client.register_script(_PUBLISH_ONLINE_LUA)
        self._publish_feed = client.register_script(_PUBLISH_FEED_LUA)

    async def publish(self, records: list[SequencedRecord]) -> int:
        """Publish every record to its online recipients; returns how many (record,
        recipient) pairs were published. Write fan-out records go in one call;
        read fan-out records wait (up to `feed_wait_s`) for the inbox agent's append."""
        fanout_on_write = [r for r in records if r.fanout == "write"]
        sent = 0
        keys: list[str] = []
        args: list[Any] = []
        for record in fanout_on_write:
            payload = _payload(record)
            for start in range(0, len(record.recipients), RECIPIENTS_PER_CALL):
                users = record.recipients[start:start + RECIPIENTS_PER_CALL]
                keys.extend(presence_key(u) for u in users)
                args.extend((len(users), payload))
                args.extend(channel(u) for u in users)
                if len(keys) >= RECIPIENTS_PER_CALL:  # one Lua call never holds Redis long
                    sent += int(await self._publish(keys=keys, args=args))
                    keys, args = [], []
        if keys:
            sent += int(await self._publish(keys=keys, args=args))
        # (record, payload) of each read fan-out record not yet appended by the inbox agent
        waiting = [(r, _payload(r)) for r in records if r.fanout == "read"]
        deadline = asyncio.get_running_loop().time() + self._feed_wait_s
        while waiting:
            async with self._redis.pipeline(transaction=False) as pipe:
                for record, payload in waiting:
                    cid = record.message.conversation_id
                    await self._publish_feed(keys=[feed_seq_key(cid), feed_users_key(cid)],
                                             args=[cid, record.message.seq, payload],
                                             client=pipe)
                results = [int(n) for n in await pipe.execute()]
            sent += sum(n for n in results if n > 0)
            waiting = [w for w, n in zip(waiting, results, strict=True) if n < 0]
            if waiting and asyncio.get_running_loop().time() >= deadline:
                log.warning("push skipped for %d large-group records the inbox agent has "
                            "not applied within %.1fs (sync delivers them)",
                            len(waiting), self._feed_wait_s)
                break
            if waiting:
                await asyncio.sleep(FEED_POLL_S)
        return sent
