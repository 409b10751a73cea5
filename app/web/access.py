"""Who may touch a conversation (G5): direct chats by their two users, groups by members."""

from __future__ import annotations

import re

from aiohttp import web

from app.errors import BadRequest, Forbidden, NotFound
from app.models import CONVERSATION_PATTERN, parse_conversation
from app.web.context import GROUPS

_CID = re.compile(CONVERSATION_PATTERN.removesuffix("$") + r"\Z")


async def require_member(app: web.Application, cid: str, user: str) -> str:
    """Return the conversation kind ("u" or "g") if `user` belongs to `cid`, else 400/403/404."""
    try:
        kind, parts = parse_conversation(cid)
    except ValueError as exc:
        if _CID.match(cid):  # well-formed, but "u:b:a" names no conversation: "u:a:b" does
            raise NotFound(f"no conversation {cid!r}: a direct conversation lists its two "
                           "user ids sorted", code="no_such_conversation") from None
        raise BadRequest(str(exc), code="invalid_conversation") from None
    if kind == "u":
        if user not in parts:
            raise Forbidden("you are not in this conversation", code="not_a_member")
        return kind
    groups = app[GROUPS]
    if await groups.is_member(cid, user):
        return kind
    if await groups.owner(cid) is None:
        raise NotFound(f"no such group {cid!r}", code="no_such_group")
    raise Forbidden("you are not a member of this group", code="not_a_member")
