"""The OpenAPI 3 document of API v1, built from the request/response models.

`imflow openapi` writes it to app/web/openapi.json (committed and served at
/v1/openapi.json); a unit test keeps the file, this builder and the router in step.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.models import CONVERSATION_PATTERN, ID_PATTERN, MAX_SEQ, MAX_TS, Message
from app.usecases.sync import CURSOR_PATTERN
from app.web.groups import ChangeMembers, CreateGroup
from app.web.messages import SendRequest
from app.web.reads import ReadMarker


class Accepted(BaseModel):
    message_id: str
    conversation_id: str
    client_msg_id: str
    accepted_at: int


class SyncPage(BaseModel):
    messages: list[Message]
    cursor: str
    has_more: bool


class HistoryPage(BaseModel):
    messages: list[Message]
    has_more: bool
    next_before: int | None


class ConversationSummary(BaseModel):
    conversation_id: str
    last_message: Message
    unread: int


class Conversations(BaseModel):
    conversations: list[ConversationSummary]


class ReadResult(BaseModel):
    conversation_id: str
    read_seq: int
    unread: int


class Group(BaseModel):
    group_id: str
    conversation_id: str
    owner: str | None = None
    members: list[str] = []
    seq: int | None = None
    status: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    model_config = ConfigDict(title="Error")
    error: ErrorDetail


MODELS: list[type[BaseModel]] = [
    SendRequest, Accepted, Message, SyncPage, HistoryPage, ConversationSummary, Conversations,
    ReadMarker, ReadResult, CreateGroup, ChangeMembers, Group, ErrorDetail, Error,
]

ERRORS = {
    "400": "bad JSON, field or parameter (the code names it); /v1/ws: not a WebSocket "
           "upgrade request",
    "401": "missing, malformed or expired token",
    "403": "not a member / not allowed",
    "404": "no such group or conversation",
    "409": "conflicts with the group's state (it exists; the owner cannot be removed)",
    "413": "request or body too large",
    "429": "rate limited (Retry-After)",
    "503": "Kafka or a backing store is unavailable, or the pipeline is overloaded (code "
           "`overloaded`); Retry-After; nothing was stored",
}

CID = {"name": "cid", "in": "path", "required": True,
       "schema": {"type": "string", "pattern": CONVERSATION_PATTERN},
       "description": "u:<a>:<b> (the two user ids sorted; unsorted ids name no "
       "conversation: 404) or g:<group id>"}
GID = {"name": "gid", "in": "path", "required": True,
       "schema": {"type": "string", "pattern": ID_PATTERN}}


# The WebSocket handshake (RFC 6455 4.1): without it /v1/ws answers 400.
WS_HANDSHAKE = [
    {"name": "Upgrade", "in": "header", "required": True,
     "schema": {"type": "string", "enum": ["websocket"]}},
    {"name": "Connection", "in": "header", "required": True,
     "schema": {"type": "string", "enum": ["Upgrade"]}},
    {"name": "Sec-WebSocket-Version", "in": "header", "required": True,
     "schema": {"type": "string", "enum": ["13"]}},
    {"name": "Sec-WebSocket-Key", "in": "header", "required": True,
     "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"},
     "description": "16 random bytes, base64"},
]


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


# (method, path, summary, request model, success statuses, response model, params, errors)
ROUTES: list[tuple[str, str, str, str | None, list[str], str | None, list[dict[str, Any]],
                   list[str]]] = [
    ("post", "/v1/messages", "Send a message (202 once Kafka acked it; retries are "
     "idempotent on sender + client_msg_id)", "SendRequest", ["202"], "Accepted", [],
     ["400", "401", "403", "404", "413", "429", "503"]),
    ("get", "/v1/sync", "Offline pull of the caller's inbox, oldest first", None, ["200"],
     "SyncPage",
     [_query("since", {"type": "string", "pattern": CURSOR_PATTERN},
             "absent: this device's server-side cursor; 0: from the start of the retained "
             "inbox; else a cursor returned by /v1/sync"),
      _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 200},
             "page size")],
     ["400", "401", "503"]),
    ("get", "/v1/conversations", "The caller's conversations with last message and unread "
     "count", None, ["200"], "Conversations", [], ["401", "503"]),
    ("get", "/v1/conversations/{cid}/messages", "History page, newest first", None, ["200"],
     "HistoryPage",
     [CID,
      _query("before", {"type": "integer", "minimum": 1, "maximum": MAX_SEQ + 1},
             "only seq strictly below"),
      _query("before_ts", {"type": "integer", "minimum": 0, "maximum": MAX_TS},
             "only ts (ms) strictly below"),
      _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
             "page size")],
     ["400", "401", "403", "404", "503"]),
    ("post", "/v1/conversations/{cid}/read", "Mark read up to seq", "ReadMarker", ["200"],
     "ReadResult", [CID], ["400", "401", "403", "404", "413", "503"]),
    ("post", "/v1/groups", "Create a group; the caller becomes owner and member (202: "
     "accepted, not yet applied)", "CreateGroup", ["201", "202"], "Group", [],
     ["400", "401", "409", "413", "503"]),
    ("post", "/v1/groups/{gid}/members", "Add or remove members (owner only; 202: accepted, "
     "not yet applied)", "ChangeMembers", ["200", "202"], "Group", [GID],
     ["400", "401", "403", "404", "409", "413", "503"]),
    ("get", "/v1/groups/{gid}/members", "List members (members only)", None, ["200"], "Group",
     [GID], ["400", "401", "403", "404", "503"]),
    ("get", "/v1/ws", "WebSocket: {type: message, message} frames for every new message of "
     "the caller; token in the header or ?token=", None, ["101"], None,
     [*WS_HANDSHAKE,
      _query("token", {"type": "string"}, "the JWT, for clients that cannot set headers")],
     ["400", "401", "503"]),
    ("get", "/v1/openapi.json", "This document", None, ["200"], None, [], []),
    ("get", "/healthz", "Liveness", None, ["200"], None, [], []),
    ("get", "/readyz", "Readiness: Kafka, Redis and HBase reachable", None, ["200"], None, [],
     ["503"]),
    ("get", "/metrics", "Prometheus metrics", None, ["200"], None, [], []),
]

PUBLIC = {"/v1/openapi.json", "/healthz", "/readyz", "/metrics", "/v1/ws"}


def build() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths: dict[str, Any] = {}
    for method, path, summary, request, oks, response, params, errors in ROUTES:
        op: dict[str, Any] = {"summary": summary, "responses": {}}
        if params:
            op["parameters"] = params
        if request:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}}
        for ok in oks:
            success: dict[str, Any] = {"description": "success"}
            if response:
                success["content"] = {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{response}"}}}
            op["responses"][ok] = success
        for status in errors:
            op["responses"][status] = {
                "description": ERRORS[status],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        if path not in PUBLIC:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "imflow API", "version": "1",
                 "description": "Message backbone: ingress, offline inbox, history, push."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT (HS256; sub, dev, exp)"}},
        },
    }
