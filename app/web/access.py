"""Who may touch a conversation (G5): direct chats by their two users, groups by members."""

from __future__ import annotations

from aiohttp import web

from app.errors import BadRequest, Forbidden, NotFound
from app.models import parse_conversation
from app.web.context import GROUPS


async def require_member(app: web.Application, cid: str, user: str) -> str:
    """Return the conversation kind ("u" or "g") if `user` belongs to `cid`, else 400/403/404."""
    try:
        kind, parts = parse_conversation(cid)
    except ValueError as exc:
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
