"""Reads: the offline pull, the conversation list with unread counts, history pages,
and the read marker."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from app.errors import BadRequest
from app.models import MAX_SEQ, MAX_TS, JsonInt
from app.stores.inbox import newest_first
from app.usecases.sync import SyncCursor, large_group_summaries, read_page
from app.web.access import require_member
from app.web.context import (
    FEEDS,
    HISTORY,
    INBOX,
    SETTINGS,
    identity,
    int_query,
    json_body,
    json_response,
    validated,
)


async def sync(request: web.Request) -> web.Response:
    """The caller's inbox (and large-group feeds) after a cursor, oldest first; remembers
    this device's cursor."""
    me = identity(request)
    settings = request.app[SETTINGS]
    limit = int_query(request, "limit", default=settings.sync_default_limit,
                      minimum=1, maximum=settings.sync_max_limit)
    assert limit is not None
    inbox = request.app[INBOX]
    since = request.query.get("since")
    if since is None:
        saved = await inbox.device_cursor(me.user, me.device)
        cursor = SyncCursor.parse(saved) if saved is not None else SyncCursor()
    else:
        try:
            cursor = SyncCursor.parse(since)
        except ValueError:
            raise BadRequest("since must be 0 or a cursor returned by /v1/sync",
                             code="invalid_since") from None
    page = await read_page(inbox, request.app[FEEDS], me.user, cursor, limit)
    encoded = page.cursor.encode()
    if page.messages:
        await inbox.save_device_cursor(me.user, me.device, encoded)
    return json_response({"messages": page.messages, "cursor": encoded,
                          "has_more": page.has_more})


async def history(request: web.Request) -> web.Response:
    """One page of a conversation's history, newest first (members only)."""
    me = identity(request)
    settings = request.app[SETTINGS]
    cid = request.match_info["cid"]
    await require_member(request.app, cid, me.user)
    limit = int_query(request, "limit", default=settings.history_default_limit,
                      minimum=1, maximum=settings.history_max_limit)
    before = int_query(request, "before", default=None, minimum=1, maximum=MAX_SEQ + 1)
    before_ts = int_query(request, "before_ts", default=None, minimum=0, maximum=MAX_TS)
    assert limit is not None
    page = await request.app[HISTORY].page(cid, before=before, before_ts=before_ts, limit=limit)
    return json_response(
        {"messages": page.messages, "has_more": page.has_more, "next_before": page.next_before}
    )


async def conversations(request: web.Request) -> web.Response:
    """The caller's conversations: last message and unread count, most recent first."""
    me = identity(request)
    settings = request.app[SETTINGS]
    items = await request.app[INBOX].conversations(me.user)
    large = await large_group_summaries(request.app[INBOX], request.app[FEEDS], me.user,
                                        scan=settings.feed_unread_scan)
    if large:
        items = [i for i in items if i["conversation_id"] not in large] + list(large.values())
        newest_first(items)
    return json_response({"conversations": items})


class ReadMarker(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    seq: JsonInt = Field(ge=0, le=MAX_SEQ)


async def mark_read(request: web.Request) -> web.Response:
    """Marks the conversation read up to `seq` (never moves back); returns what is left."""
    me = identity(request)
    cid = request.match_info["cid"]
    await require_member(request.app, cid, me.user)
    marker = validated(ReadMarker, await json_body(request))
    unread = await request.app[INBOX].mark_read(me.user, cid, marker.seq)
    if cid.startswith("g:"):  # a read fan-out group counts its unread in the feed
        large = await large_group_summaries(request.app[INBOX], request.app[FEEDS], me.user,
                                            scan=request.app[SETTINGS].feed_unread_scan,
                                            only=cid)
        if cid in large:
            unread = large[cid]["unread"]
    return json_response({"conversation_id": cid, "read_seq": marker.seq, "unread": unread})
