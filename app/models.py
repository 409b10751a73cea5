"""Ids, the message shape, and the versioned records on the Kafka topics.

The record models are the contract for outside producers (see README, "Topics"): the
web ingress and any other producer write `InboundSend` / `InboundMembers` to
`imflow.inbound`; the sequencer writes `SequencedRecord`s to `imflow.messages`.

Either topic may also carry batch records, `{"v": 1, "kind": "batch", "records": [...]}`,
whose items are single records of that topic, in log order, all of one partition: the
fixed costs of a Kafka record (Faust's per-event path, produce and fetch requests) are
then paid once per batch. A message is addressed as (partition, offset, index), `index`
being None for a single record.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from app.errors import RecordError

ID_CHARS = r"[A-Za-z0-9_.-]{1,64}"
ID_PATTERN = rf"^{ID_CHARS}$"  # JSON Schema / Rust regex: `$` is the end of the text
_ID_RE = re.compile(ID_CHARS)  # used with fullmatch: Python's `$` also matches before "\n"
CONVERSATION_PATTERN = rf"^(u:{ID_CHARS}:{ID_CHARS}|g:{ID_CHARS})$"
MAX_SEQ = 10**16 - 1  # the HBase row key stores 10^16 - 1 - seq, zero-padded
MAX_TS = 10**15 - 1  # history stores ts as 15 digits (ms: until the year 33658)
UserId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MessageType = Annotated[str, StringConstraints(min_length=1, max_length=32)]
RECORD_VERSION = 1


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 2.0: take an integral float as the int it is (strict
    validation still refuses strings, booleans and 2.5)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_integral)]


def now_ms() -> int:
    return int(time.time() * 1000)


def is_valid_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None


def direct_conversation(a: str, b: str) -> str:
    """The one-to-one conversation id: `u:<a>:<b>` with the two user ids sorted."""
    x, y = sorted((a, b))
    return f"u:{x}:{y}"


def group_conversation(group_id: str) -> str:
    return f"g:{group_id}"


def parse_conversation(cid: str) -> tuple[str, tuple[str, ...]]:
    """Split a conversation id into ("u", (a, b)) or ("g", (gid,)); ValueError if invalid."""
    parts = cid.split(":")
    if len(parts) == 3 and parts[0] == "u" and all(is_valid_id(p) for p in parts[1:]):
        if parts[1] > parts[2]:
            raise ValueError(f"direct conversation ids are sorted: {cid!r}")
        return "u", (parts[1], parts[2])
    if len(parts) == 2 and parts[0] == "g" and is_valid_id(parts[1]):
        return "g", (parts[1],)
    raise ValueError(f"not a conversation id: {cid!r}")


def message_id_for(sender: str, client_msg_id: str) -> str:
    """The message id is a pure function of (sender, client_msg_id).

    So a client retry gets the same id from any web process without a lookup, even when
    the first attempt's answer was lost; the sequencer drops the second copy.
    """
    digest = hashlib.blake2b(f"{sender}\x00{client_msg_id}".encode(), digest_size=16)
    return digest.hexdigest()


class Message(BaseModel):
    """A message as every API returns it."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    conversation_id: str
    seq: int
    sender: str
    type: str
    body: Any
    client_msg_id: str
    ts: int


# ---------------------------------------------------------------- imflow.inbound


class InboundSend(BaseModel):
    """A message to sequence. `message_id` and `accepted_at` are filled when absent."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1]
    kind: Literal["send"]
    conversation_id: str
    sender: UserId
    client_msg_id: ClientMsgId
    type: MessageType = "text"
    body: Any = None
    message_id: str | None = None
    accepted_at: int | None = None


class InboundMembers(BaseModel):
    """A group membership change: create (actor becomes owner), add, or remove."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1]
    kind: Literal["members"]
    conversation_id: str
    actor: UserId
    op: Literal["create", "add", "remove"]
    members: list[UserId] = Field(default_factory=list, max_length=100_000)
    event_id: str
    accepted_at: int | None = None


InboundRecord = InboundSend | InboundMembers


def encode_send(conversation_id: str, sender: str, client_msg_id: str, *,
                body_json: bytes = b"null", type: str = "text",
                message_id: str | None = None, accepted_at: int | None = None) -> bytes:
    """The `imflow.inbound` value of one message (an `InboundSend`).

    `body_json` is the body already encoded: the ingress measures its size on those bytes
    and they are embedded as they are, so the body is encoded once. Without `message_id`
    the sequencer derives it (`message_id_for`); without `accepted_at`, it stamps now.
    """
    record: dict[str, Any] = {"v": RECORD_VERSION, "kind": "send",
                              "conversation_id": conversation_id, "sender": sender,
                              "client_msg_id": client_msg_id, "type": type,
                              "body": orjson.Fragment(body_json)}
    if message_id is not None:
        record["message_id"] = message_id
    if accepted_at is not None:
        record["accepted_at"] = accepted_at
    return orjson.dumps(record)


def encode_members(conversation_id: str, actor: str, op: str, members: list[str], *,
                   event_id: str, accepted_at: int | None = None) -> bytes:
    """The `imflow.inbound` value of one membership change (an `InboundMembers`)."""
    record: dict[str, Any] = {"v": RECORD_VERSION, "kind": "members",
                              "conversation_id": conversation_id, "actor": actor, "op": op,
                              "members": members, "event_id": event_id}
    if accepted_at is not None:
        record["accepted_at"] = accepted_at
    return orjson.dumps(record)


MAX_RECORD_BYTES = 1024 * 1024  # Kafka's default max.message.bytes


def first_error(exc: ValidationError, whole: str) -> tuple[str, str]:
    """(dotted field path, message) of a validation error's first problem; `whole` names
    the field when the problem is with the whole value."""
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]) or whole, first["msg"]


# ---------------------------------------------------------------- batch records

BATCH_KIND = "batch"
_BATCH_HEAD = b'{"v":%d,"kind":"%s","records":[' % (RECORD_VERSION, BATCH_KIND.encode())


def encode_batch(values: Sequence[bytes]) -> bytes:
    """One batch record of already encoded single records (they are embedded as they are)."""
    return _BATCH_HEAD + b",".join(values) + b"]}"


def pack(values: Sequence[bytes], max_bytes: int) -> Iterator[tuple[int, int]]:
    """[start, end) runs of `values` that each fit in one record of at most `max_bytes`
    (a run of one is sent as the single record it is, so one value may be larger)."""
    start, size = 0, len(_BATCH_HEAD) + 2
    for i, value in enumerate(values):
        if i > start and size + len(value) + 1 > max_bytes:
            yield start, i
            start, size = i, len(_BATCH_HEAD) + 2
        size += len(value) + 1
    if start < len(values):
        yield start, len(values)


T = TypeVar("T")


@dataclass(frozen=True)
class Item(Generic[T]):
    """One message of a record: parsed, or the reason it was rejected."""

    index: int | None  # its place in a batch record; None for a single record
    record: T | None
    error: str | None = None
    raw: bytes | None = None  # the item's own value, for a dead letter (None: the record's)


def _load(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise RecordError("empty record value")
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(raw)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError("record is not a JSON object")
    return data


def _items(raw: bytes | None, parse: Any) -> list[Item[Any]]:
    """The items of one record, each parsed by `parse(dict)` or rejected alone; a record
    that is not even a batch's envelope is one rejected item."""
    try:
        data = _load(raw)
        if data.get("kind") != BATCH_KIND:
            return [Item(None, parse(data))]
        if data.get("v") != RECORD_VERSION:
            raise RecordError(f"unknown record version v={data.get('v')!r}")
        if set(data) != {"v", "kind", "records"}:
            raise RecordError("a batch record has exactly the fields v, kind and records")
        items = data["records"]
        if not isinstance(items, list) or not items:
            raise RecordError("a batch record's records is a non-empty list")
    except RecordError as exc:
        return [Item(None, None, exc.reason)]
    out: list[Item[Any]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise RecordError("record is not a JSON object")
            if item.get("kind") == BATCH_KIND:
                raise RecordError("a batch record cannot hold a batch")
            out.append(Item(index, parse(item)))
        except RecordError as exc:
            out.append(Item(index, None, exc.reason, orjson.dumps(item)))
    return out


def parse_inbound_items(raw: bytes | None, *, max_body_bytes: int) -> list[Item[InboundRecord]]:
    """The messages of one `imflow.inbound` value, single or batch; a bad one is an Item
    with its reason, and the others stand."""
    return _items(raw, lambda data: _inbound(data, max_body_bytes))


def parse_inbound(raw: bytes | None, *, max_body_bytes: int) -> InboundRecord:
    """Parse one single `imflow.inbound` value, or raise RecordError with a readable reason."""
    return _inbound(_load(raw), max_body_bytes)


def _inbound(data: dict[str, Any], max_body_bytes: int) -> InboundRecord:
    if data.get("v") != RECORD_VERSION:
        raise RecordError(f"unknown record version v={data.get('v')!r}")
    kind = data.get("kind")
    model: type[InboundSend] | type[InboundMembers]
    if kind == "send":
        model = InboundSend
    elif kind == "members":
        model = InboundMembers
    else:
        raise RecordError(f"unknown record kind {kind!r}")
    try:
        record = model.model_validate(data)
    except ValidationError as exc:
        where, problem = first_error(exc, "record")
        raise RecordError(f"invalid field {where}: {problem}") from None
    try:
        conv_kind, _ = parse_conversation(record.conversation_id)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    if isinstance(record, InboundMembers) and conv_kind != "g":
        raise RecordError("membership changes apply to group conversations only")
    if isinstance(record, InboundSend):
        size = len(orjson.dumps(record.body))
        if size > max_body_bytes:
            raise RecordError(f"body of {size} bytes exceeds {max_body_bytes}")
    return record


# ---------------------------------------------------------------- imflow.messages

MEMBERS_MESSAGE_TYPE = "system.members"


Fanout = Literal["write", "read"]


class SequencedRecord(BaseModel):
    """One entry of a conversation's log, at its `seq`, with who must receive it.

    A membership change is an entry too (kind "members", message type
    `system.members`, body {"op", "actor", "members", "owner"}), so clients see it in order
    and sinks treat both kinds alike.

    `fanout` "write" (one-to-one chats, groups up to the read fan-out threshold): the
    entry is copied into the inbox of every user in `recipients`. "read" (large groups):
    it is stored once in the group's feed, which members' syncs read; `recipients` then
    names only the users whose membership span starts or ends at this entry (all members
    on the entry that switches the group, the changed members on a later membership
    change, nobody on a message), so the record stays small whatever the group's size.
    """

    v: Literal[1] = 1
    kind: Literal["message", "members"] = "message"
    fanout: Fanout = "write"
    message: Message
    recipients: list[str]

    @cached_property
    def message_json(self) -> bytes:
        """The message as JSON, encoded once: inbox, feed, push and history all store or
        send these bytes (for a record read from the topic, its message's own JSON, set
        by `_sequenced`). Not a field: equality and dumps ignore it."""
        return self.message.model_dump_json().encode()


def encode_sequenced(record: SequencedRecord) -> bytes:
    """The `imflow.messages` value of one log entry."""
    return record.model_dump_json().encode()


def parse_sequenced(raw: bytes) -> SequencedRecord:
    """Parse one single `imflow.messages` value (written by the sequencer)."""
    return SequencedRecord.model_validate_json(raw)


_MESSAGE_STR_FIELDS = ("message_id", "conversation_id", "sender", "type", "client_msg_id")
_MESSAGE_FIELDS = frozenset((*_MESSAGE_STR_FIELDS, "seq", "ts", "body"))
_RECORD_FIELDS = frozenset(("v", "kind", "fanout", "message", "recipients"))


def _sequenced(data: dict[str, Any]) -> SequencedRecord:
    """A log entry from its decoded JSON. What the sequencer writes takes the fast path:
    plain type checks, no pydantic validation, and the message's JSON encoded once by
    orjson from what was read; anything else is validated (and coerced or refused) by
    the model, as an outside producer's record must be."""
    message, recipients = data.get("message"), data.get("recipients")
    if (data.get("v") == 1 and data.get("kind", "message") in ("message", "members")
            and data.get("fanout", "write") in ("write", "read") and data.keys() <= _RECORD_FIELDS
            and isinstance(message, dict) and message.keys() == _MESSAGE_FIELDS
            and type(message["seq"]) is int and type(message["ts"]) is int
            and all(type(message[f]) is str for f in _MESSAGE_STR_FIELDS)
            and type(recipients) is list and all(type(u) is str for u in recipients)):
        record = SequencedRecord.model_construct(
            v=1, kind=data.get("kind", "message"), fanout=data.get("fanout", "write"),
            message=Message.model_construct(**message), recipients=recipients)
        record.__dict__["message_json"] = orjson.dumps(message)  # the cached_property's slot
        return record
    try:
        return SequencedRecord.model_validate(data)
    except ValidationError as exc:
        where, problem = first_error(exc, "record")
        raise RecordError(f"invalid sequenced record: {where}: {problem}") from None


def parse_sequenced_items(raw: bytes | None) -> list[Item[SequencedRecord]]:
    """The log entries of one `imflow.messages` value, single or batch; a bad one is an
    Item with its reason, and the others stand."""
    return _items(raw, _sequenced)
