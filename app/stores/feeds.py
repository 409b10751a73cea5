"""Group feeds: read fan-out for large groups (one Redis stream per group, not per member).

A group past the read fan-out threshold (see agents/sequencing.py) has its entries
stored once, in `feed:{g:<gid>}`, instead of once per member inbox. Each member has a
*span* per such group in `spans:{<user>}`: the feed entries from the one where they
joined (or where the group switched) to the one where they were removed, if they were.
(A member removed and added back has several spans.) A sync reads the user's inbox and
the spans of their feeds (app/usecases/sync.py merges them), so a member sees exactly the entries
from their point in the log (G4) and no others (G5). `feedusers:{g:<gid>}` lists everyone
who ever had a span there: the push agent picks online members from it (app/stores/push.py).

Idempotency (G2): `feedseq:{g:<gid>}` holds the last seq appended; an entry at or below
it is skipped, and the spans change in the same Lua call as the append, atomically. A
sender's read marker (replying reads) is the inbox store's: see `OfflineDelivery`.
The append call names keys of several hash tags (the feed's and each changed member's),
which one Redis allows; on Redis Cluster the span updates would move to their own calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from app.errors import StoreUnavailable
from app.models import SequencedRecord
from app.stores import keys, scripts
from app.stores.inbox import retention_floor_id
from app.stores.redis_client import redis_store


@dataclass(frozen=True)
class Span:
    """A member's stretch of a group feed: stream ids and seqs, both ends inclusive."""

    from_id: str
    from_seq: int
    to_id: str | None = None
    to_seq: int | None = None


def _spans(raw: bytes) -> list[Span]:
    return [Span(from_id=d["f"], from_seq=int(d["fs"]), to_id=d.get("t"),
                 to_seq=int(d["ts"]) if "ts" in d else None) for d in orjson.loads(raw)]


@dataclass(frozen=True)
class FeedState:
    applied_seq: int  # the last seq appended (0: none)
    last_id: str  # the newest entry's stream id ("0-0": empty)
    users: list[str]  # everyone who ever had a span in the feed


@redis_store
class FeedStore:
    """Owns the feeds of read fan-out groups and their members' spans."""

    def __init__(self, client: aioredis.Redis, *, retention_s: int) -> None:
        self._redis = client
        self._retention_s = retention_s
        self._append = client.register_script(scripts.APPEND_FEED)

    async def append(self, records: list[SequencedRecord]) -> int:
        """Append each read fan-out record to its group's feed once; returns how many were new.

        The calls go in one pipeline by the script's sha: a redis-py Script object in a
        pipeline sends SCRIPT EXISTS before every execute. When Redis does not know the
        script (a restart or a failover empties its cache) it is loaded and the whole
        pipeline runs again, which the appends' idempotency makes safe."""
        minid = retention_floor_id(self._retention_s)
        calls: list[tuple[list[str], list[Any]]] = []
        for record in records:
            msg = record.message
            cid = msg.conversation_id
            removed = set(msg.body["members"]) if (
                record.kind == "members" and msg.body["op"] == "remove") else set()
            call_keys = [keys.feed(cid), keys.feed_seq(cid), keys.feed_users(cid),
                         *map(keys.spans, record.recipients)]
            args: list[Any] = [minid, self._retention_s, cid, msg.seq, msg.model_dump_json()]
            for user in record.recipients:
                args.extend(("c" if user in removed else "o", user))
            calls.append((call_keys, args))
        for _ in range(2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for call_keys, args in calls:
                        pipe.evalsha(self._append.sha, len(call_keys), *call_keys, *args)
                    appended = await pipe.execute()
                return sum(int(n) for n in appended)
            except NoScriptError:
                await self._redis.script_load(scripts.APPEND_FEED)
        raise StoreUnavailable("Redis forgot the feed script twice in a row")

    async def state(self, cid: str) -> FeedState:
        """The group feed's last appended seq, newest entry id and everyone who ever had a
        span in it, read in one MULTI: once `applied_seq` reaches a seq, every span that
        covers it is in place (they change in the append's own Lua call)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.feed_seq(cid))
            pipe.smembers(keys.feed_users(cid))
            pipe.xrevrange(keys.feed(cid), count=1)
            last, users, newest = await pipe.execute()
        return FeedState(applied_seq=int(last or 0),
                         last_id=newest[0][0].decode() if newest else "0-0",
                         users=sorted(u.decode() for u in users))

    async def wait_appended(self, after: dict[str, str], timeout_s: float) -> None:
        """Block until one of the feeds (conversation id -> the entry id last seen) gets
        a new entry, or `timeout_s` passes: the inbox agent's append wakes the caller,
        nothing polls."""
        if after and timeout_s > 0:
            await self._redis.xread({keys.feed(cid): last for cid, last in after.items()},
                                    count=1, block=max(1, int(timeout_s * 1000)))

    async def covering(self, cid: str, seq: int, users: list[str]) -> list[str]:
        """Those of `users` whose span of the group's feed covers `seq`."""
        if not users:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.hget(keys.spans(user), cid)
            raws = await pipe.execute()
        return [user for user, raw in zip(users, raws, strict=True)
                if raw is not None and any(
                    s.from_seq <= seq and (s.to_seq is None or seq <= s.to_seq)
                    for s in _spans(raw))]

    async def spans(self, user: str) -> dict[str, list[Span]]:
        """The user's spans, oldest first, by conversation id."""
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(keys.spans(user)))
        return {cid.decode(): _spans(value) for cid, value in raw.items()}

    async def ranges(self, wanted: list[tuple[str, str, str]],
                     count: int) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
        """Up to `count` entries of each (cid, start, end) stream id range in one round
        trip, XRANGE syntax ("(" makes an id exclusive); ranges of one feed are joined."""
        if not wanted:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid, start, end in wanted:
                pipe.xrange(keys.feed(cid), min=start, max=end, count=count)
            rows = await pipe.execute()
        joined: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
        for (cid, _, _), r in zip(wanted, rows, strict=True):
            joined.setdefault(cid, []).extend(r)
        return joined

    async def newest(self, spans: dict[str, list[Span]],
                     count: int) -> dict[str, list[dict[str, Any]]]:
        """Up to `count` newest messages of the user's latest span of each feed, newest
        first (for the conversation list)."""
        if not spans:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid, user_spans in spans.items():
                pipe.xrevrange(keys.feed(cid), max=user_spans[-1].to_id or "+",
                               min=user_spans[-1].from_id, count=count)
            rows = await pipe.execute()
        return {cid: [orjson.loads(fields[b"m"]) for _, fields in r]
                for cid, r in zip(spans, rows, strict=True)}
