"""Group feeds: read fan-out for large groups (one Redis stream per group, not per member).

A group past the read fan-out threshold (see agents/sequencing.py) has its entries
stored once, in `feed:{g:<gid>}`, instead of once per member inbox. Each member has a
*span* per such group in `spans:{<user>}`: the feed entries from the one where they
joined (or where the group switched) to the one where they were removed, if they were.
(A member removed and added back has several spans.) A sync reads the user's inbox and
the spans of their feeds (app/sync.py merges them), so a member sees exactly the entries
from their point in the log (G4) and no others (G5). `feedusers:{g:<gid>}` lists everyone
who ever had a span there: the push agent picks online members from it (app/stores/push.py).

Idempotency (G2): `feedseq:{g:<gid>}` holds the last seq appended; an entry at or below
it is skipped, and the spans change in the same Lua call as the append, atomically.
The append call names keys of several hash tags (the feed's and each changed member's),
which one Redis allows; on Redis Cluster the span updates would move to their own calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from app.models import SequencedRecord
from app.stores.inbox import read_markers_key, retention_floor_id

# KEYS: feed, feedseq, the sender's read markers, feedusers, then the spans hash of each
# changed member. ARGV: minid, ttl_s, conversation, seq, payload, "r" if the sender's read
# marker moves (a message: replying reads) else "-", then per changed member "o" (a span
# opens) or "c" (it closes) and the user id. Returns 1 if appended, 0 if already there.
_APPEND_LUA = """
local MAX_SPANS = 16 -- per member and group: who is removed and re-added more keeps the latest
local seq = tonumber(ARGV[4])
if seq <= tonumber(redis.call('GET', KEYS[2]) or '0') then return 0 end
local ttl = tonumber(ARGV[2])
local id = redis.call('XADD', KEYS[1], 'MINID', ARGV[1], '*', 'm', ARGV[5])
redis.call('SET', KEYS[2], seq, 'EX', ttl)
redis.call('EXPIRE', KEYS[1], ttl)
if ARGV[6] == 'r' and seq > tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0') then
  redis.call('HSET', KEYS[3], ARGV[3], seq)
  redis.call('EXPIRE', KEYS[3], ttl)
end
for i = 5, #KEYS do
  local flag, user = ARGV[2 * i - 3], ARGV[2 * i - 2]
  local raw = redis.call('HGET', KEYS[i], ARGV[3])
  local spans = raw and cjson.decode(raw) or {}
  local last = spans[#spans]
  if flag == 'o' then
    if not last or last.t then
      table.insert(spans, {f = id, fs = seq})
      if #spans > MAX_SPANS then table.remove(spans, 1) end
      redis.call('HSET', KEYS[i], ARGV[3], cjson.encode(spans))
      redis.call('SADD', KEYS[4], user)
    end
  elseif last and not last.t then
    last.t = id
    last.ts = seq
    redis.call('HSET', KEYS[i], ARGV[3], cjson.encode(spans))
  end
end
return 1
"""


def feed_key(cid: str) -> str:
    return f"feed:{{{cid}}}"


def feed_seq_key(cid: str) -> str:
    return f"feedseq:{{{cid}}}"


def feed_users_key(cid: str) -> str:
    return f"feedusers:{{{cid}}}"


def spans_key(user: str) -> str:
    return f"spans:{{{user}}}"


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


class FeedStore:
    """Owns the feeds of read fan-out groups and their members' spans."""

    def __init__(self, client: aioredis.Redis, *, retention_s: int) -> None:
        self._redis = client
        self._retention_s = retention_s
        self._append = client.register_script(_APPEND_LUA)

    async def append(self, records: list[SequencedRecord]) -> int:
        """Append each read fan-out record to its group's feed once; returns how many were new."""
        minid = retention_floor_id(self._retention_s)
        async with self._redis.pipeline(transaction=False) as pipe:
            for record in records:
                msg = record.message
                cid = msg.conversation_id
                removed = set(msg.body["members"]) if (
                    record.kind == "members" and msg.body["op"] == "remove") else set()
                keys = [feed_key(cid), feed_seq_key(cid), read_markers_key(msg.sender),
                        feed_users_key(cid), *map(spans_key, record.recipients)]
                args: list[Any] = [minid, self._retention_s, cid, msg.seq,
                                   msg.model_dump_json(), "r" if record.kind == "message" else "-"]
                for user in record.recipients:
                    args.extend(("c" if user in removed else "o", user))
                await self._append(keys=keys, args=args, client=pipe)
            appended = await pipe.execute()
        return sum(int(n) for n in appended)

    async def spans(self, user: str) -> dict[str, list[Span]]:
        """The user's spans, oldest first, by conversation id."""
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(spans_key(user)))
        return {cid.decode(): _spans(value) for cid, value in raw.items()}

    async def ranges(self, wanted: list[tuple[str, str, str]],
                     count: int) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
        """Up to `count` entries of each (cid, start, end) stream id range in one round
        trip, XRANGE syntax ("(" makes an id exclusive); ranges of one feed are joined."""
        if not wanted:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid, start, end in wanted:
                pipe.xrange(feed_key(cid), min=start, max=end, count=count)
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
                pipe.xrevrange(feed_key(cid), max=user_spans[-1].to_id or "+",
                               min=user_spans[-1].from_id, count=count)
            rows = await pipe.execute()
        return {cid: [orjson.loads(fields[b"m"]) for _, fields in r]
                for cid, r in zip(spans, rows, strict=True)}
