"""Group endpoints. Changes travel through `imflow.inbound` like messages (G4), and the
answer waits until the change took effect, so the caller can act on it at once."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from app.errors import BadRequest, Conflict, Forbidden
from app.models import UserId, encode_members, group_conversation, is_valid_id, now_ms
from app.web.access import require_member
from app.web.context import (
    GROUPS,
    append_inbound,
    identity,
    json_body,
    json_response,
    validated,
)

APPLY_WAIT_S = 10.0
MEMBERS_REQUEST_BYTES = 1024 * 1024  # up to 10,000 member ids; the record's Kafka limit
MAX_MEMBERS_PER_CHANGE = 10_000


class CreateGroup(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    group_id: UserId
    members: list[UserId] = Field(default_factory=list, max_length=MAX_MEMBERS_PER_CHANGE)


def _add_or_remove(schema: dict[str, Any]) -> None:
    """The document states what the handler enforces: a change adds or removes someone."""
    schema["anyOf"] = [
        {"required": [name], "properties": {name: {"minItems": 1}}} for name in ("add", "remove")
    ]


class ChangeMembers(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_add_or_remove)
    add: list[UserId] = Field(default_factory=list, max_length=MAX_MEMBERS_PER_CHANGE)
    remove: list[UserId] = Field(default_factory=list, max_length=MAX_MEMBERS_PER_CHANGE)


def _group_id(request: web.Request) -> str:
    gid = request.match_info["gid"]
    if not is_valid_id(gid):
        raise BadRequest("group ids match [A-Za-z0-9_.-]{1,64}", code="invalid_group_id")
    return gid


async def _submit(request: web.Request, cid: str, actor: str, op: str,
                  members: list[str]) -> int | None:
    """Append one membership change to the log; wait until applied (its seq) or None."""
    event_id = uuid.uuid4().hex
    record = encode_members(cid, actor, op, members, event_id=event_id, accepted_at=now_ms())
    await append_inbound(request.app, cid, record,
                         failure="message queue unavailable, nothing was changed; retry")
    return await request.app[GROUPS].wait_applied(event_id, APPLY_WAIT_S)


async def create_group(request: web.Request) -> web.Response:
    me = identity(request)
    req = validated(CreateGroup, await json_body(request, MEMBERS_REQUEST_BYTES))
    cid = group_conversation(req.group_id)
    if await request.app[GROUPS].owner(cid) is not None:
        raise Conflict(f"group {req.group_id!r} already exists", code="group_exists")
    seq = await _submit(request, cid, me.user, "create", sorted(set(req.members)))
    members = await request.app[GROUPS].members(cid)
    if seq is None or me.user not in members:
        # Another creator won the race, or the change is still on its way.
        return json_response({"group_id": req.group_id, "conversation_id": cid,
                              "status": "pending"}, status=202)
    return json_response({"group_id": req.group_id, "conversation_id": cid, "owner": me.user,
                          "members": members, "seq": seq}, status=201)


async def change_members(request: web.Request) -> web.Response:
    me = identity(request)
    gid = _group_id(request)
    cid = group_conversation(gid)
    req = validated(ChangeMembers, await json_body(request, MEMBERS_REQUEST_BYTES))
    if not req.add and not req.remove:
        raise BadRequest("give members to add or remove", code="invalid_members")
    owner = await request.app[GROUPS].owner(cid)
    await require_member(request.app, cid, me.user)
    if owner != me.user:
        raise Forbidden("only the group owner changes members", code="not_owner")
    if owner in req.remove:  # a well-formed request the group's state refuses
        raise Conflict("the owner cannot be removed", code="invalid_remove")
    seqs = []
    for op, who in (("add", req.add), ("remove", req.remove)):
        if who:
            seqs.append(await _submit(request, cid, me.user, op, sorted(set(who))))
    members = await request.app[GROUPS].members(cid)
    status = 200 if all(s is not None for s in seqs) else 202
    return json_response({"group_id": gid, "conversation_id": cid, "owner": owner,
                          "members": members}, status=status)


async def list_members(request: web.Request) -> web.Response:
    me = identity(request)
    gid = _group_id(request)
    cid = group_conversation(gid)
    await require_member(request.app, cid, me.user)
    groups = request.app[GROUPS]
    return json_response({"group_id": gid, "conversation_id": cid,
                          "owner": await groups.owner(cid),
                          "members": await groups.members(cid)})
