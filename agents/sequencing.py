"""The sequencer's decisions, as pure logic over a state view (no Faust, no I/O).

For each `imflow.inbound` record it decides: the conversation's next `seq`, whether the
record is a client retry, who must receive it, and how the state changes.

Crash safety (G1, G2) does not rest on these decisions: the agent commits a batch's
outputs and its state changes (the position among them) in one Kafka transaction, and a
record at or below the stored position is never decided twice (agents/sequencer.py).
So a decision only has to be right for the state it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
from tables.sequencer_state import Changes, ConvState, GroupState, StateView, dedup_key

Status = Literal["applied", "duplicate", "rejected"]


@dataclass
class Decision:
    status: Status
    output: SequencedRecord | None = None
    conv: ConvState | None = None  # the conversation's state after this record
    group: GroupState | None = None  # the group's membership after this record
    event_id: str = ""  # the id that enters the dedup window
    reason: str = ""

    def record_in(self, changes: Changes) -> None:
        """Add this decision's state changes to its batch's changes."""
        if self.output is None or self.conv is None:
            return
        cid = self.output.message.conversation_id
        changes.convs[cid] = self.conv
        if self.group is not None:
            changes.groups[cid] = self.group
        changes.seen[dedup_key(self.event_id)] = self.conv.ts


def event_id_of(record: InboundRecord) -> str:
    """The id a retry of the record repeats: the message id (by default a hash of sender
    and client_msg_id) or the membership change's event id."""
    if isinstance(record, InboundMembers):
        return record.event_id
    return record.message_id or message_id_for(record.sender, record.client_msg_id)


def decide(record: InboundRecord, *, record_ts: int, state: StateView,
           read_threshold: int) -> Decision:
    """Decide what one inbound record does; a "rejected" decision goes to dead-letter.

    A group whose membership grows past `read_threshold` switches to read fan-out (and
    stays switched: the mode is part of the group's state, decided in log order).
    """
    cid = record.conversation_id
    event_id = event_id_of(record)
    if state.seen(event_id):
        return Decision("duplicate", event_id=event_id)
    conv = state.conversation(cid) or ConvState(0, 0)
    seq = conv.seq + 1
    ts = max(record.accepted_at or record_ts, conv.ts)
    group: GroupState | None = None
    try:
        if isinstance(record, InboundSend):
            recipients, fanout = _recipients_for_send(record, state)
            message = Message(
                message_id=event_id, conversation_id=cid, seq=seq, sender=record.sender,
                type=record.type, body=record.body, client_msg_id=record.client_msg_id, ts=ts,
            )
            output = SequencedRecord(message=message, recipients=recipients, fanout=fanout)
        else:
            output, group = _membership_change(record, seq=seq, ts=ts, state=state,
                                               read_threshold=read_threshold)
    except RecordError as exc:
        return Decision("rejected", event_id=event_id, reason=exc.reason)
    return Decision("applied", output=output, conv=ConvState(seq, ts), group=group,
                    event_id=event_id)


def _recipients_for_send(record: InboundSend, state: StateView) -> tuple[list[str], Fanout]:
    kind, parts = parse_conversation(record.conversation_id)
    if kind == "u":
        if record.sender not in parts:
            raise RecordError(f"sender {record.sender!r} is not in {record.conversation_id!r}")
        return sorted(set(parts)), "write"
    group = state.group(record.conversation_id)
    if group is None:
        raise RecordError(f"no such group {record.conversation_id!r}")
    if record.sender not in group.members:
        raise RecordError(f"sender {record.sender!r} is not a member of {record.conversation_id!r}")
    if group.read_at is not None:
        return [], "read"  # stored once in the group feed; members read it from there
    return list(group.members), "write"


def _membership_change(record: InboundMembers, *, seq: int, ts: int, state: StateView,
                       read_threshold: int) -> tuple[SequencedRecord, GroupState]:
    group = state.group(record.conversation_id)
    changed = set(record.members)
    if record.op == "create":
        if group is not None:
            raise RecordError(f"group {record.conversation_id!r} already exists")
        before: set[str] = set()
        owner = record.actor
        changed.add(record.actor)
    else:
        if group is None:
            raise RecordError(f"no such group {record.conversation_id!r}")
        owner = group.owner
        if record.actor != owner:
            raise RecordError(f"{record.actor!r} is not the owner of {record.conversation_id!r}")
        if record.op == "remove" and owner in changed:
            raise RecordError("the owner cannot be removed from the group")
        before = set(group.members)
    if record.op == "remove":
        effective = changed & before
        after = before - effective
    else:
        effective = changed - before
        after = before | effective
    read_at = group.read_at if group is not None else None
    if read_at is None and len(after) > read_threshold:
        read_at = seq
    message = Message(
        message_id=record.event_id, conversation_id=record.conversation_id, seq=seq,
        sender=record.actor, type=MEMBERS_MESSAGE_TYPE,
        body={"op": record.op, "actor": record.actor, "members": sorted(effective),
              "owner": owner},
        client_msg_id=record.event_id, ts=ts,
    )
    if read_at is None:
        event = SequencedRecord(kind="members", message=message,
                                recipients=sorted(before | after))
    else:
        # Read fan-out: only the users whose membership span starts or ends here.
        spans_change = before | after if read_at == seq else effective
        event = SequencedRecord(kind="members", fanout="read", message=message,
                                recipients=sorted(spans_change))
    return event, GroupState(owner, tuple(sorted(after)), read_at)
