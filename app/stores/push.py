"""Online push over Redis: presence of connected devices and per-user pub/sub channels.

The push agent publishes each sequenced record on `push:{user}` for every recipient that
has a connected device (presence), and each web process subscribes to the channels of
the users connected to it, so a device gets its messages whatever process it is on.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

from app.models import SequencedRecord

# KEYS: presence key of each recipient; ARGV: the channel of each, then the payload.
_PUBLISH_ONLINE_LUA = """
local payload = ARGV[#ARGV]
local sent = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('PUBLISH', ARGV[i], payload)
    sent = sent + 1
  end
end
return sent
"""


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


class PushPublisher:
    """Publishes sequenced records to the channels of online recipients."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._publish = client.register_script(_PUBLISH_ONLINE_LUA)

    async def publish(self, records: list[SequencedRecord]) -> int:
        """Publish every record to its online recipients in one round trip; returns how many
        (record, recipient) pairs were published."""
        if not records:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for record in records:
                message = record.message.model_dump_json().encode()
                payload = b'{"type":"message","message":' + message + b"}"
                keys = [presence_key(u) for u in record.recipients]
                args: list[Any] = [channel(u) for u in record.recipients]
                args.append(payload)
                await self._publish(keys=keys, args=args, client=pipe)
            sent = await pipe.execute()
        return sum(int(n) for n in sent)
