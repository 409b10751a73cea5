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
it is skipped. A message is one Lua call on the feed's keys. A membership change also
opens or closes spans, whose keys are in their members' cluster slots, so it takes three
ordered steps: reserve the entry's stream id, write the spans with it, then append the
entry at that id and count it in `feedseq` in one call; the records after it wait for
the third. So an entry and its spans become visible together (the push agent relies on
it), and nothing after a member's removal is appended before their span is closed (G4).
A crash between the steps leaves the reserved id in `feedpending:{g:<gid>}`, where the
retry finds it. A sender's read marker (replying reads) is the inbox store's: see
`OfflineDelivery`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import orjson

from app.models import SequencedRecord
from app.stores import keys, scripts
from app.stores.inbox import retention_floor_id
from app.stores.redis_client import Call, RedisClient, by_slot, redis_store, run_script


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

    def __init__(self, client: RedisClient, *, retention_s: int, replica_acks: int = 0) -> None:
        self._redis = client
        self._retention_s = retention_s
        self._replica_acks = replica_acks  # sinks' writes wait for replicas (run_script)

    async def append(self, records: list[SequencedRecord]) -> int:
        """Append each read fan-out record to its group's feed once, in order; returns how
        many were new. Messages between membership changes go in one pipeline."""
        minid = retention_floor_id(self._retention_s)
        appended = 0
        messages: list[Call] = []
        for record in records:
            msg, cid = record.message, record.message.conversation_id
            if not record.recipients:  # changes no span
                messages.append(([keys.feed(cid), keys.feed_seq(cid)],
                                 [minid, self._retention_s, msg.seq, record.message_json]))
                continue
            appended += await self._run(scripts.APPEND_FEED, messages)
            messages = []
            appended += await self._append_changing_spans(record, minid)
        return appended + await self._run(scripts.APPEND_FEED, messages)

    async def _run(self, source: str, calls: list[Call]) -> int:
        results = await run_script(self._redis, source, calls, replica_acks=self._replica_acks)
        return sum(int(n or 0) for n in results)

    async def _append_changing_spans(self, record: SequencedRecord, minid: str) -> int:
        """The three steps of an entry that opens or closes members' spans."""
        msg = record.message
        cid = msg.conversation_id
        [entry_id] = await run_script(
            self._redis, scripts.RESERVE_FEED_ENTRY,
            [([keys.feed(cid), keys.feed_seq(cid), keys.feed_pending(cid)],
              [self._retention_s, msg.seq])],
            replica_acks=self._replica_acks)
        if entry_id is None:
            return 0  # applied before, spans and all
        removed = set(msg.body["members"]) if (
            record.kind == "members" and msg.body["op"] == "remove") else set()
        flags = {user: "c" if user in removed else "o" for user in record.recipients}
        span_calls: list[Call] = [
            ([keys.spans(u) for u in users], [cid, entry_id, msg.seq, *(flags[u] for u in users)])
            for users in by_slot(self._redis, record.recipients, keys.spans)]
        await self._run(scripts.UPDATE_SPANS, span_calls)
        opened = [u for u in record.recipients if flags[u] == "o"]
        return await self._run(scripts.FINISH_FEED_ENTRY, [(
            [keys.feed(cid), keys.feed_seq(cid), keys.feed_users(cid), keys.feed_pending(cid)],
            [minid, self._retention_s, msg.seq, entry_id, record.message_json, *opened])])

    async def state(self, cid: str) -> FeedState:
        """The group feed's last appended seq, newest entry id and everyone who ever had a
        span in it. The newest id is read first: an entry is appended and counted in one
        call, so the seq read after it is at least that entry's, and a wait for entries
        after that id cannot miss the next one."""
        async with self._redis.pipeline(transaction=False) as pipe:  # one slot: in order
            pipe.xrevrange(keys.feed(cid), count=1)
            pipe.get(keys.feed_seq(cid))
            pipe.smembers(keys.feed_users(cid))
            newest, last, users = await pipe.execute()
        return FeedState(applied_seq=int(last or 0),
                         last_id=newest[0][0].decode() if newest else "0-0",
                         users=sorted(u.decode() for u in users))

    async def wait_appended(self, after: dict[str, str], timeout_s: float) -> None:
        """Block until one of the feeds (conversation id -> the entry id last seen) gets
        a new entry, or `timeout_s` passes: the inbox agent's append wakes the caller,
        nothing polls. One blocking XREAD per cluster slot (a single one on one server)."""
        if not after or timeout_s <= 0:
            return
        block_ms = max(1, int(timeout_s * 1000))
        reads = [asyncio.ensure_future(self._redis.xread(
                     {keys.feed(cid): after[cid] for cid in cids}, count=1, block=block_ms))
                 for cids in by_slot(self._redis, after, keys.feed)]
        try:
            done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
            for read in done:
                read.result()  # a failed read raises here
        finally:
            for read in reads:
                read.cancel()

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
