"""Reads: the offline pull (`GET /v1/sync`) and conversation history pages."""

from __future__ import annotations

import re

from aiohttp import web

from app.errors import BadRequest, Forbidden
from app.models import parse_conversation
from app.web.context import HISTORY, INBOX, SETTINGS, identity, int_query, json_response

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
    try:
        kind, parts = parse_conversation(cid)
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid_conversation") from None
    if kind == "u" and me.user not in parts:
        raise Forbidden("you are not in this conversation", code="not_a_member")
    limit = int_query(request, "limit", default=settings.history_default_limit,
                      minimum=1, maximum=settings.history_max_limit)
    before = int_query(request, "before", default=None, minimum=1)
    before_ts = int_query(request, "before_ts", default=None, minimum=0)
    assert limit is not None
    page = await request.app[HISTORY].page(cid, before=before, before_ts=before_ts, limit=limit)
    return json_response(
        {"messages": page.messages, "has_more": page.has_more, "next_before": page.next_before}
    )
