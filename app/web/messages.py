"""Ingress: `POST /v1/messages` validates, appends to `imflow.inbound`, answers 202 on ack."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.errors import BadRequest, PayloadTooLarge, RateLimited
from app.models import (
    CONVERSATION_PATTERN,
    ClientMsgId,
    MessageType,
    UserId,
    direct_conversation,
    encode_send,
    is_valid_id,
    message_id_for,
    now_ms,
)
from app.web.access import require_member
from app.web.context import (
    ADMISSION,
    RATE_LIMITER,
    SETTINGS,
    append_inbound,
    identity,
    json_body,
    json_response,
    validated,
)


def _exactly_one_target(schema: dict[str, Any]) -> None:
    """The document states what the handler enforces: `to` and `conversation` are strings
    (null is refused) and exactly one of them is given."""
    props = schema["properties"]
    for name in ("to", "conversation"):
        field = props[name]
        (string,) = (s for s in field.pop("anyOf") if s.get("type") != "null")
        field.pop("default", None)
        field.update(string)
    schema["oneOf"] = [{"required": ["to"]}, {"required": ["conversation"]}]


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True,
                              json_schema_extra=_exactly_one_target)

    to: UserId | None = Field(None, description="a user id: the one-to-one chat with them")
    conversation: str | None = Field(
        None, pattern=CONVERSATION_PATTERN,
        description="g:<group id>, or u:<a>:<b> (sorted ids) of a chat of the caller")
    client_msg_id: ClientMsgId
    type: MessageType = "text"
    body: Any = Field(None, description="any JSON, at most 64 KiB encoded (else 413)")

    @field_validator("to", "conversation", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:  # runs only on given values, not the default
        if value is None:
            raise ValueError("must be a string when given")
        return value


_CONVERSATION_RE = re.compile(CONVERSATION_PATTERN[1:-1])  # fullmatch: no ^...$


class Send(NamedTuple):
    """A send request's fields once valid (what `SendRequest` accepts)."""

    to: str | None
    conversation: str | None
    client_msg_id: str
    type: str
    body: Any


def parsed_send(data: dict[str, Any]) -> Send:
    """`data` as a valid send request: the common well-formed request by plain type
    checks (what SendRequest's strict validation accepts, taken without building the
    model: validation was a tenth of the ingress's own cost), anything else validated by
    the model (400 naming the field)."""
    to, conversation = data.get("to"), data.get("conversation")
    client_msg_id, kind = data.get("client_msg_id"), data.get("type", "text")
    to_user = type(to) is str and "conversation" not in data and is_valid_id(to)
    to_conversation = (type(conversation) is str and "to" not in data
                       and _CONVERSATION_RE.fullmatch(conversation) is not None)
    if (type(client_msg_id) is str and 1 <= len(client_msg_id) <= 64
            and type(kind) is str and 1 <= len(kind) <= 32
            and (to_user or to_conversation)):
        return Send(to, conversation, client_msg_id, kind, data.get("body"))
    req = validated(SendRequest, data)
    return Send(req.to, req.conversation, req.client_msg_id, req.type, req.body)


async def _named_conversation(app: web.Application, sender: str, req: Send) -> str:
    """The conversation a send names, if the sender belongs to it; 400 unless it gives
    exactly one target (a send to one user, `to` alone, needs no await: the handler's)."""
    if req.conversation is None or req.to is not None:
        raise BadRequest("give exactly one of 'to' and 'conversation'", code="invalid_target")
    await require_member(app, req.conversation, sender)
    return req.conversation


async def post_message(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    # Admission first: an overloaded process answers at the least cost. It counts the
    # request in flight until its answer, whatever it waits for (Redis, Kafka, the loop).
    with app[ADMISSION].admitted():
        me = identity(request)
        req = parsed_send(await json_body(request))
        body = orjson.dumps(req.body)  # encoded once: measured here, embedded in the record
        if len(body) > settings.max_body_bytes:
            raise PayloadTooLarge(f"body exceeds {settings.max_body_bytes} bytes encoded")
        if req.to is not None and req.conversation is None:  # the common case: no await
            cid = direct_conversation(me.user, req.to)
        else:
            cid = await _named_conversation(app, me.user, req)
        wait = app[RATE_LIMITER].retry_after(me.user)
        if wait is not None:
            raise RateLimited(f"more than {settings.send_rate_per_s} messages per second",
                              retry_after=wait)
        message_id = message_id_for(me.user, req.client_msg_id)
        accepted_at = now_ms()
        record = encode_send(cid, me.user, req.client_msg_id, body_json=body,
                             type=req.type, message_id=message_id, accepted_at=accepted_at)
        await append_inbound(app, cid, record,
                             failure="message queue unavailable, nothing was stored; retry")
    return json_response(
        {"message_id": message_id, "conversation_id": cid,
         "client_msg_id": req.client_msg_id, "accepted_at": accepted_at},
        status=202,
    )
