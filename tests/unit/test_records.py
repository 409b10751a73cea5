"""Every producer builds topic records through `app.models`' encoders: what they write is
what the sequencer and the sinks parse, body bytes included."""

from __future__ import annotations

import orjson
import pytest

from app.errors import RecordError
from app.models import (
    InboundMembers,
    InboundSend,
    Message,
    SequencedRecord,
    encode_members,
    encode_send,
    encode_sequenced,
    parse_inbound,
    parse_sequenced,
)


def test_a_send_record_parses_back_with_its_body_bytes_embedded_as_given() -> None:
    body = orjson.dumps({"text": "héllo", "n": [1, 2]})
    raw = encode_send("u:a:b", "a", "c-1", body_json=body, type="note",
                      message_id="m" * 32, accepted_at=123)
    assert body in raw  # not decoded and encoded again
    record = parse_inbound(raw, max_body_bytes=64 * 1024)
    assert isinstance(record, InboundSend)
    assert (record.conversation_id, record.sender, record.client_msg_id, record.type,
            record.body, record.message_id, record.accepted_at) == (
        "u:a:b", "a", "c-1", "note", {"text": "héllo", "n": [1, 2]}, "m" * 32, 123)


def test_a_send_record_leaves_out_what_the_sequencer_fills_in() -> None:
    record = parse_inbound(encode_send("u:a:b", "a", "c-1"), max_body_bytes=10)
    assert isinstance(record, InboundSend)
    assert (record.body, record.message_id, record.accepted_at) == (None, None, None)


def test_a_members_record_parses_back() -> None:
    raw = encode_members("g:team", "a", "add", ["b", "c"], event_id="e1", accepted_at=5)
    record = parse_inbound(raw, max_body_bytes=10)
    assert isinstance(record, InboundMembers)
    assert (record.op, record.members, record.event_id, record.accepted_at) == (
        "add", ["b", "c"], "e1", 5)


def test_an_encoded_record_is_still_checked_when_parsed() -> None:
    with pytest.raises(RecordError, match="exceeds 4"):
        parse_inbound(encode_send("u:a:b", "a", "c", body_json=b'"long"'), max_body_bytes=4)


def test_a_sequenced_record_round_trips() -> None:
    message = Message(message_id="m", conversation_id="u:a:b", seq=7, sender="a",
                      type="text", body={"t": 1}, client_msg_id="c", ts=9)
    record = SequencedRecord(message=message, recipients=["a", "b"])
    assert parse_sequenced(encode_sequenced(record)) == record
