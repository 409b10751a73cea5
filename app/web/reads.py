"""Reads: the offline pull, the conversation list with unread counts, history pages,
and the read marker."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from app.errors import BadRequest
from app.web.access import require_member
from app.web.context import (
    HISTORY,
    INBOX,
    SETTINGS,
    identity,
    int_query,
    json_body,
    json_response,
    validated,
)

_CURSOR_RE = re.compile(r"^\d{1,20}-\d{1,20}$")


async def sync(request: web.Request) -> web.Response:
    """The caller's inbox after a cursor, oldest first; remembers this device's cursor."""
    me = identity(request)
    settings = request.app[SETTINGS]
    inbox = request.app[INBOX]
    limit = int_query(request, "limit", default=settings.sync_default_limit,
                      minimum=1, maximum=settings.sync_max_limit)
    assert limit is not None
    since = request.query.get("since")
    after: str | None
    if since is None:
        after = await inbox.device_cursor(me.user, me.device)
    elif since == "0":
        after = None
    elif _CURSOR_RE.match(since):
        after = since
    else:
        raise BadRequest("since must be 0 or a cursor returned by /v1/sync", code="invalid_since")
    page = await inbox.read(me.user, after=after, limit=limit)
    if page.messages:
        await inbox.save_device_cursor(me.user, me.device, page.cursor)
    return json_response(
        {"messages": page.messages, "cursor": page.cursor, "has_more": page.has_more}
    )


async def history(request: web.Request) -> web.Response:
    """One page of a conversation's history, newest first (members only)."""
    me = identity(request)
    settings = request.app[SETTINGS]
    cid = request.match_info["cid"]
    await require_member(request.app, cid, me.user)
    limit = int_query(request, "limit", default=settings.history_default_limit,
                      minimum=1, maximum=settings.history_max_limit)
    before = int_query(request, "before", default=None, minimum=1)
    before_ts = int_query(request, "before_ts", default=None, minimum=0)
    assert limit is not None
    page = await request.app[HISTORY].page(cid, before=before, before_ts=before_ts, limit=limit)
    return json_response(
        {"messages": page.messages, "has_more": page.has_more, "next_before": page.next_before}
    )


async def conversations(request: web.Request) -> web.Response:
    """The caller's conversations: last message and unread count, most recent first."""
    me = identity(request)
    items = await request.app[INBOX].conversations(me.user)
    return json_response({"conversations": items})


class ReadMarker(BaseModel):
    model_config = ConfigDict(extra="ignore")
    seq: int = Field(ge=0)


async def mark_read(request: web.Request) -> web.Response:
    """Marks the conversation read up to `seq` (never moves back); returns what is left."""
    me = identity(request)
    cid = request.match_info["cid"]
    await require_member(request.app, cid, me.user)
    marker = validated(ReadMarker, await json_body(request))
    unread = await request.app[INBOX].mark_read(me.user, cid, marker.seq)
    return json_response({"conversation_id": cid, "read_seq": marker.seq, "unread": unread})
