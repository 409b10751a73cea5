"""The sequencer's decisions, as pure logic over a key-value state (no Faust, no I/O).

For each `imflow.inbound` record it decides: the conversation's next `seq`, whether the
record is a client retry, who must receive it, and which state keys change.

Crash safety (G1, G2) rests on three rules the agent keeps:
1. The output record is acked by Kafka before any state write of that record is sent.
2. State writes go to ONE changelog partition (the record's inbound partition) in the
   order members -> dedup -> conversation, so a flushed conversation entry implies the
   entries written before it were flushed too.
3. The conversation entry stores the inbound offset it has applied (`offset`).
Hence after a crash, re-reading from the committed offset either skips a record (its
effects were stored), repairs the conversation entry from the dedup entry, or computes
the very same output again (same seq, same ts), which the idempotent sinks absorb.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from app.errors import RecordError
from app.models import (
    MEMBERS_MESSAGE_TYPE,
    Fanout,
    InboundMembers,
    InboundRecord,
    InboundSend,
    Message,
    SequencedRecord,
    message_id_for,
    parse_conversation,
)

Getter = Callable[[str], Any]

CONV = "conv:"  # conv:<cid>      -> {"seq", "ts", "offset"}
DEDUP = "dedup:"  # dedup:<id>    -> {"seq", "ts", "offset", "partition"}
MEMBERS = "members:"  # members:<cid> -> {"owner", "members", "offset", "effective", "read_at"}

Status = Literal["applied", "duplicate", "already_applied", "repaired", "rejected"]


@dataclass
class Decision:
    status: Status
    output: SequencedRecord | None = None
    writes: list[tuple[str, Any]] = field(default_factory=list)
    reason: str = ""


def decide(
    record: InboundRecord, *, partition: int, offset: int, record_ts: int, get: Getter,
    read_threshold: int,
) -> Decision:
    """Decide what one inbound record does; a "rejected" decision goes to dead-letter.

    A group whose membership grows past `read_threshold` switches to read fan-out (and
    stays switched: the mode is part of the group's state, decided in log order).
    """
    cid = record.conversation_id
    conv = get(CONV + cid) or {"seq": 0, "ts": 0, "offset": -1}
    if conv["offset"] >= offset:
        return Decision("already_applied")

    event_id = (
        record.event_id
        if isinstance(record, InboundMembers)
        else record.message_id or message_id_for(record.sender, record.client_msg_id)
    )
    seen = get(DEDUP + event_id)
    if seen is not None:
        if seen["offset"] == offset:
            # Crashed between the dedup and the conversation write: finish the latter.
            repaired = {"seq": seen["seq"], "ts": seen["ts"], "offset": offset}
            return Decision("repaired", writes=[(CONV + cid, repaired)])
        return Decision("duplicate")

    seq = conv["seq"] + 1
    ts = max(record.accepted_at or record_ts, conv["ts"])
    writes: list[tuple[str, Any]] = []
    output: SequencedRecord
    try:
        if isinstance(record, InboundSend):
            recipients, fanout = _recipients_for_send(record, get)
        else:
            output, members_write = _membership_change(
                record, seq=seq, ts=ts, offset=offset, get=get, read_threshold=read_threshold
            )
    except RecordError as exc:
        # A rejection depends on the membership; recording its offset keeps a re-read
        # after a crash from judging it against a later membership.
        return Decision("rejected", reason=exc.reason,
                        writes=[(CONV + cid, {**conv, "offset": offset})])
    if isinstance(record, InboundSend):
        message = Message(
            message_id=event_id,
            conversation_id=cid,
            seq=seq,
            sender=record.sender,
            type=record.type,
            body=record.body,
            client_msg_id=record.client_msg_id,
            ts=ts,
        )
        output = SequencedRecord(message=message, recipients=recipients, fanout=fanout)
    elif members_write is not None:
        writes.append(members_write)
    dedup = {"seq": seq, "ts": ts, "offset": offset, "partition": partition}
    writes.append((DEDUP + event_id, dedup))
    writes.append((CONV + cid, {"seq": seq, "ts": ts, "offset": offset}))
    return Decision("applied", output=output, writes=writes)


def _recipients_for_send(record: InboundSend, get: Getter) -> tuple[list[str], Fanout]:
    kind, parts = parse_conversation(record.conversation_id)
    if kind == "u":
        if record.sender not in parts:
            raise RecordError(f"sender {record.sender!r} is not in {record.conversation_id!r}")
        return sorted(set(parts)), "write"
    group = get(MEMBERS + record.conversation_id)
    if group is None:
        raise RecordError(f"no such group {record.conversation_id!r}")
    if record.sender not in group["members"]:
        raise RecordError(f"sender {record.sender!r} is not a member of {record.conversation_id!r}")
    if group.get("read_at") is not None:
        return [], "read"  # stored once in the group feed; members read it from there
    return list(group["members"]), "write"


def _membership_change(
    record: InboundMembers, *, seq: int, ts: int, offset: int, get: Getter,
    read_threshold: int,
) -> tuple[SequencedRecord, tuple[str, Any] | None]:
    key = MEMBERS + record.conversation_id
    group = get(key)
    changed = set(record.members)
    if group is not None and group.get("offset") == offset:
        # This very record was applied to the membership before a crash: undo its
        # effective change to recover the membership it was applied to.
        after = set(group["members"])
        effective = set(group["effective"])
        before = after | effective if record.op == "remove" else after - effective
        owner = group["owner"]
        read_at = group.get("read_at")
        write = None
    else:
        if record.op == "create":
            if group is not None:
                raise RecordError(f"group {record.conversation_id!r} already exists")
            before, owner = set(), record.actor
            changed.add(record.actor)
        else:
            if group is None:
                raise RecordError(f"no such group {record.conversation_id!r}")
            owner = group["owner"]
            if record.actor != owner:
                raise RecordError(
                    f"{record.actor!r} is not the owner of {record.conversation_id!r}"
                )
            if record.op == "remove" and owner in changed:
                raise RecordError("the owner cannot be removed from the group")
            before = set(group["members"])
        if record.op == "remove":
            effective = changed & before
            after = before - effective
        else:
            effective = changed - before
            after = before | effective
        read_at = group.get("read_at") if group is not None else None
        if read_at is None and len(after) > read_threshold:
            read_at = seq
        write = (key, {"owner": owner, "members": sorted(after), "offset": offset,
                       "effective": sorted(effective), "read_at": read_at})
    message = Message(
        message_id=record.event_id,
        conversation_id=record.conversation_id,
        seq=seq,
        sender=record.actor,
        type=MEMBERS_MESSAGE_TYPE,
        body={"op": record.op, "actor": record.actor, "members": sorted(effective),
              "owner": owner},
        client_msg_id=record.event_id,
        ts=ts,
    )
    if read_at is None:
        event = SequencedRecord(kind="members", message=message,
                                recipients=sorted(before | after))
    else:
        # Read fan-out: only the users whose membership span starts or ends here.
        spans_change = before | after if read_at == seq else effective
        event = SequencedRecord(kind="members", fanout="read", message=message,
                                recipients=sorted(spans_change))
    return event, write
