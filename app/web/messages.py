"""Ingress: `POST /v1/messages` validates, appends to `imflow.inbound`, answers 202 on ack."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from app.errors import BadRequest, PayloadTooLarge, RateLimited
from app.models import (
    ClientMsgId,
    MessageType,
    UserId,
    direct_conversation,
    encode_send,
    message_id_for,
    now_ms,
)
from app.web.access import require_member
from app.web.context import (
    RATE_LIMITER,
    SETTINGS,
    append_inbound,
    identity,
    json_body,
    json_response,
    validated,
)


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    to: UserId | None = None
    conversation: str | None = None
    client_msg_id: ClientMsgId
    type: MessageType = "text"
    body: Any = None


async def _conversation_for(app: web.Application, sender: str, req: SendRequest) -> str:
    if (req.to is None) == (req.conversation is None):
        raise BadRequest("give exactly one of 'to' and 'conversation'", code="invalid_target")
    if req.to is not None:
        return direct_conversation(sender, req.to)
    assert req.conversation is not None
    await require_member(app, req.conversation, sender)
    return req.conversation


async def post_message(request: web.Request) -> web.Response:
    me = identity(request)
    settings = request.app[SETTINGS]
    data = await json_body(request)
    req = validated(SendRequest, data)
    body = orjson.dumps(req.body)  # encoded once: measured here, embedded in the record
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"body exceeds {settings.max_body_bytes} bytes encoded")
    cid = await _conversation_for(request.app, me.user, req)
    wait = await request.app[RATE_LIMITER].retry_after(me.user)
    if wait is not None:
        raise RateLimited(f"more than {settings.send_rate_per_s} messages per second",
                          retry_after=wait)
    message_id = message_id_for(me.user, req.client_msg_id)
    accepted_at = now_ms()
    record = encode_send(cid, me.user, req.client_msg_id, body_json=body, type=req.type,
                         message_id=message_id, accepted_at=accepted_at)
    await append_inbound(request.app, cid, record,
                         failure="message queue unavailable, nothing was stored; retry")
    return json_response(
        {"message_id": message_id, "conversation_id": cid,
         "client_msg_id": req.client_msg_id, "accepted_at": accepted_at},
        status=202,
    )
