"""Online push over Redis: presence of connected devices and per-user pub/sub channels.

The push agent publishes each sequenced record on `push:{user}` for every recipient that
has a connected device (presence), and each web process subscribes to the channels of
the users connected to it, so a device gets its messages whatever process it is on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, cast

from app.models import SequencedRecord
from app.stores import keys, scripts
from app.stores.feeds import FeedStore
from app.stores.redis_client import (
    Call,
    RedisClient,
    is_cluster,
    redis_store,
    run_script,
    slot_chunks,
)

log = logging.getLogger(__name__)
RECIPIENTS_PER_CALL = 2_000


@redis_store
class PresenceStore:
    """Which devices of a user are connected, and to which web process (TTL-refreshed)."""

    def __init__(self, client: RedisClient, *, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._disconnect = client.register_script(scripts.DISCONNECT)

    async def connected(self, user: str, device: str, connection: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.presence(user), device, connection)
            pipe.expire(keys.presence(user), self._ttl_s)
            await pipe.execute()

    heartbeat = connected

    async def disconnected(self, user: str, device: str, connection: str) -> None:
        await self._disconnect(keys=[keys.presence(user)], args=[device, connection])

    async def devices(self, user: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(keys.presence(user)))
        return {k.decode(): v.decode() for k, v in raw.items()}


def _payload(record: SequencedRecord) -> bytes:
    return b'{"type":"message","message":' + record.message_json + b"}"


@redis_store
class PushPublisher:
    """Publishes sequenced records to the channels of online recipients."""

    def __init__(self, client: RedisClient, *, feed_wait_s: float,
                 feeds: FeedStore) -> None:
        self._redis = client
        self._feed_wait_s = feed_wait_s
        self._feeds = feeds
        self._publish_command = "SPUBLISH" if is_cluster(client) else "PUBLISH"

    async def publish(self, records: list[SequencedRecord]) -> int:
        """Publish every record to its online recipients; returns how many (record,
        recipient) pairs were published. Write fan-out records name their recipients;
        read fan-out records go to the members whose feed span covers them, once the
        inbox agent has appended them (waiting up to `feed_wait_s`, woken by the append
        itself: a blocking XREAD on those feeds)."""
        targets = [(r, r.recipients) for r in records if r.fanout == "write"]
        waiting = [r for r in records if r.fanout == "read"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._feed_wait_s
        while waiting:
            still: list[SequencedRecord] = []
            feeds = {cid: await self._feeds.state(cid)  # once per group and round
                     for cid in dict.fromkeys(r.message.conversation_id for r in waiting)}
            online: dict[str, list[str]] = {}
            for record in waiting:
                msg, cid = record.message, record.message.conversation_id
                if feeds[cid].applied_seq < msg.seq:
                    still.append(record)
                    continue
                if cid not in online:
                    online[cid] = await self._online(feeds[cid].users)
                targets.append((record, await self._feeds.covering(cid, msg.seq, online[cid])))
            waiting = still
            left = deadline - loop.time()
            if waiting and left <= 0:
                log.warning("push skipped for %d large-group records the inbox agent has "
                            "not applied within %.1fs (sync delivers them)",
                            len(waiting), self._feed_wait_s)
                break
            if waiting:  # woken by the inbox agent's next append to one of these feeds
                await self._feeds.wait_appended(
                    {r.message.conversation_id: feeds[r.message.conversation_id].last_id
                     for r in waiting}, left)
        return await self._publish_online(targets)

    async def _online(self, users: list[str]) -> list[str]:
        """Those of `users` with a connected device."""
        if not users:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.exists(keys.presence(user))
            present = await pipe.execute()
        return [u for u, p in zip(users, present, strict=True) if p]

    async def _publish_online(self, targets: list[tuple[SequencedRecord, list[str]]]) -> int:
        """Publish each record to those of its users who are online: one Lua call per
        cluster slot of users (one in all on a single server) and at most
        `RECIPIENTS_PER_CALL` users a call (one call never holds Redis long), all calls in
        one pipeline."""
        payloads = [_payload(record) for record, _ in targets]
        pairs = [(i, user) for i, (_, users) in enumerate(targets) for user in users]
        calls = [self._publish_call(payloads, chunk) for chunk in slot_chunks(
            self._redis, pairs, lambda pair: keys.presence(pair[1]), RECIPIENTS_PER_CALL)]
        return sum(int(n) for n in await run_script(self._redis, scripts.PUBLISH_ONLINE, calls))

    def _publish_call(self, payloads: list[bytes], pairs: list[tuple[int, str]]) -> Call:
        """One PUBLISH_ONLINE call: the users of each record in a run after its payload."""
        call_keys: list[str] = []
        args: list[Any] = [self._publish_command]
        for i, run in itertools.groupby(pairs, key=lambda pair: pair[0]):
            users = [user for _, user in run]
            call_keys.extend(keys.presence(u) for u in users)
            args.extend((len(users), payloads[i]))
            args.extend(keys.push_channel(u) for u in users)
        return call_keys, args
