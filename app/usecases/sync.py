"""One sync page: the user's inbox merged with the feeds of their read fan-out groups.

Write fan-out entries sit in the user's inbox stream; entries of large groups sit once in
each group's feed (app/stores/feeds.py). A page takes the oldest `limit` entries across
the inbox and the user's spans of those feeds, by stream id (all streams live on one
Redis clock). The cursor keeps one position per source, so an entry that lands in any
source after a page was read is still returned by the next page: nothing is skipped,
nothing repeated. Within one conversation the order is the seq order (G1), since a
conversation's entries are written in seq order to its inbox entries, then its feed.

Cursor text: `<inbox stream id>` for a user in no large group (so the common case looks
as before), else `<inbox id>~<cid>=<feed id>~...`; `0` as the inbox id means "from the
start". The client treats it as opaque.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.models import MEMBERS_MESSAGE_TYPE, parse_conversation
from app.stores.feeds import FeedStore, Span
from app.stores.inbox import InboxStore, id_tuple

# Redis stream ids are two unsigned 64-bit numbers; 19 digits always fit (ms timestamps
# have 13), so a cursor that passes this never makes Redis fail.
_STREAM_ID = re.compile(r"\d{1,19}-\d{1,19}")
CURSOR_PATTERN = (r"^(0|\d{1,19}-\d{1,19})(~g:[A-Za-z0-9_.-]{1,64}=\d{1,19}-\d{1,19})*$")
Row = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True)
class SyncCursor:
    inbox: str | None = None  # None: from the start of the inbox
    feeds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SyncCursor:
        """ValueError unless `text` is `0` or a cursor this module encoded."""
        head, *parts = text.split("~")
        if head != "0" and not _STREAM_ID.fullmatch(head):
            raise ValueError(f"bad inbox position {head!r}")
        feeds: dict[str, str] = {}
        for part in parts:
            cid, _, position = part.rpartition("=")
            if parse_conversation(cid)[0] != "g" or not _STREAM_ID.fullmatch(position):
                raise ValueError(f"bad feed position {part!r}")
            feeds[cid] = position
        return cls(inbox=None if head == "0" else head, feeds=feeds)

    def encode(self) -> str:
        feeds = "".join(f"~{cid}={pos}" for cid, pos in sorted(self.feeds.items()))
        return (self.inbox or "0") + feeds


@dataclass(frozen=True)
class SyncPage:
    messages: list[dict[str, Any]]
    cursor: SyncCursor
    has_more: bool


def feed_start(span: Span, position: str | None, floor: str) -> str:
    """Where to read a span from: after the cursor's position, never before the span's
    first entry nor before the retention floor (XRANGE syntax)."""
    start = max(span.from_id, floor, key=id_tuple)
    if position is not None and id_tuple(position) >= id_tuple(start):
        return "(" + position
    return start


def merge(inbox_rows: list[Row], feed_rows: dict[str, list[Row]], cursor: SyncCursor,
          limit: int) -> SyncPage:
    """The oldest `limit` entries of all sources, each read with count limit + 1, so
    `has_more` is exact: there is more iff the sources returned more than `limit`."""
    tagged: list[tuple[tuple[int, int], str, str, bytes]] = [
        (id_tuple(i.decode()), "", i.decode(), f[b"m"]) for i, f in inbox_rows
    ]
    for cid, rows in feed_rows.items():
        tagged.extend((id_tuple(i.decode()), cid, i.decode(), f[b"m"]) for i, f in rows)
    tagged.sort(key=lambda t: (t[0], t[1]))  # the inbox ("") first on a tie
    page = tagged[:limit]
    inbox_pos, feeds = cursor.inbox, dict(cursor.feeds)
    for _, source, stream_id, _ in page:
        if source:
            feeds[source] = stream_id
        else:
            inbox_pos = stream_id
    return SyncPage(messages=[orjson.loads(t[3]) for t in page],
                    cursor=SyncCursor(inbox=inbox_pos, feeds=feeds),
                    has_more=len(tagged) > limit)


async def read_page(inbox: InboxStore, feeds: FeedStore, user: str, cursor: SyncCursor,
                    limit: int) -> SyncPage:
    """The page after `cursor`: the spans and the inbox read at once, then the spans."""
    spans, inbox_rows = await asyncio.gather(
        feeds.spans(user), inbox.entries(user, after=cursor.inbox, count=limit + 1))
    floor = inbox.floor_id()
    wanted = [(cid, feed_start(span, cursor.feeds.get(cid), floor), span.to_id or "+")
              for cid, user_spans in spans.items() for span in user_spans]
    return merge(inbox_rows, await feeds.ranges(wanted, limit + 1), cursor, limit)


async def large_group_summaries(inbox: InboxStore, feeds: FeedStore, user: str, *,
                                scan: int, only: str | None = None
                                ) -> dict[str, dict[str, Any]]:
    """Conversation-list entries of the user's read fan-out groups (or of group `only`):
    the newest message of their span and the unread count (messages from others after
    the read marker, counted over at most the `scan` newest entries)."""
    spans = await feeds.spans(user)
    if only is not None:
        spans = {cid: s for cid, s in spans.items() if cid == only}
    if not spans:
        return {}
    newest = await feeds.newest(spans, scan)
    read = await inbox.read_markers(user) if newest else {}
    summaries: dict[str, dict[str, Any]] = {}
    for cid, messages in newest.items():
        if not messages:
            continue
        unread = sum(1 for m in messages
                     if m["seq"] > read.get(cid, 0) and m["sender"] != user
                     and m["type"] != MEMBERS_MESSAGE_TYPE)
        summaries[cid] = {"conversation_id": cid, "last_message": messages[0], "unread": unread}
    return summaries
