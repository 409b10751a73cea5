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
    encode_batch,
    encode_members,
    encode_send,
    encode_sequenced,
    pack,
    parse_inbound,
    parse_inbound_items,
    parse_sequenced,
    parse_sequenced_items,
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


def test_a_batch_record_parses_into_its_items_in_order_each_checked_alone() -> None:
    raw = encode_batch([encode_send("u:a:b", "a", "c-1"), b'{"v":2}',
                        encode_members("g:t", "a", "add", ["b"], event_id="e")])
    items = parse_inbound_items(raw, max_body_bytes=10)
    assert [i.index for i in items] == [0, 1, 2]
    assert isinstance(items[0].record, InboundSend)
    assert items[1].record is None and items[1].error == "unknown record version v=2"
    assert items[1].raw == b'{"v":2}'
    assert isinstance(items[2].record, InboundMembers)


def test_a_single_record_is_one_item_without_an_index() -> None:
    (item,) = parse_inbound_items(encode_send("u:a:b", "a", "c-1"), max_body_bytes=10)
    assert item.index is None and isinstance(item.record, InboundSend)
    (bad,) = parse_inbound_items(b"{", max_body_bytes=10)
    assert bad.index is None and bad.record is None and bad.error is not None
    assert bad.error.startswith("not JSON")


@pytest.mark.parametrize("raw, reason", [
    (b'{"v":1,"kind":"batch","records":[]}', "non-empty list"),
    (b'{"v":1,"kind":"batch","records":{}}', "non-empty list"),
    (b'{"v":1,"kind":"batch","records":[1],"x":1}', "exactly the fields"),
    (b'{"v":3,"kind":"batch","records":[1]}', "unknown record version"),
])
def test_a_bad_batch_envelope_rejects_the_whole_record(raw: bytes, reason: str) -> None:
    (item,) = parse_inbound_items(raw, max_body_bytes=10)
    assert item.index is None and item.record is None and reason in (item.error or "")


def test_a_batch_cannot_nest_a_batch() -> None:
    inner = encode_batch([encode_send("u:a:b", "a", "c-1")])
    (item,) = parse_inbound_items(encode_batch([inner]), max_body_bytes=10)
    assert item.index == 0 and item.error == "a batch record cannot hold a batch"


def test_a_sequenced_batch_parses_into_its_records() -> None:
    records = [SequencedRecord(message=Message(
        message_id=f"m{i}", conversation_id="u:a:b", seq=i, sender="a", type="text",
        body=None, client_msg_id=f"c{i}", ts=9), recipients=["a", "b"]) for i in (1, 2)]
    raw = encode_batch([encode_sequenced(r) for r in records] + [b'{"v":1}'])
    items = parse_sequenced_items(raw)
    assert [i.record for i in items[:2]] == records
    assert items[2].record is None and items[2].index == 2
    assert "invalid sequenced record" in (items[2].error or "")


def test_pack_keeps_each_run_under_the_limit_and_a_large_value_alone() -> None:
    values = [b"x" * 40, b"y" * 40, b"z" * 200, b"w" * 10, b"v" * 10]
    runs = list(pack(values, 130))
    assert runs == [(0, 2), (2, 3), (3, 5)]
    for start, end in runs:
        if end - start > 1:
            assert len(encode_batch(values[start:end])) <= 130


def test_a_sequenced_record_from_the_log_keeps_its_message_bytes_and_equals_a_validated_one(
) -> None:
    message = Message(message_id="m", conversation_id="g:big", seq=3, sender="a",
                      type="system.members", body={"op": "add", "members": ["b"]},
                      client_msg_id="c", ts=9)
    record = SequencedRecord(kind="members", fanout="read", message=message, recipients=["b"])
    [item] = parse_sequenced_items(encode_sequenced(record))
    assert item.record == record == SequencedRecord.model_validate_json(encode_sequenced(record))
    assert item.record.message_json == message.model_dump_json().encode()


@pytest.mark.parametrize("change", [
    {"seq": "3"},  # a string seq: the model coerces it, as before
    {"extra": 1},  # a field the sequencer never writes: the model ignores it
])
def test_an_outside_sequenced_record_is_still_validated_by_the_model(
        change: dict[str, object]) -> None:
    message = {"message_id": "m", "conversation_id": "u:a:b", "seq": 3, "sender": "a",
               "type": "text", "body": None, "client_msg_id": "c", "ts": 9, **change}
    raw = orjson.dumps({"v": 1, "kind": "message", "message": message, "recipients": ["a"]})
    [item] = parse_sequenced_items(raw)
    assert item.record == SequencedRecord.model_validate_json(raw)
    assert item.record is not None and item.record.message.seq == 3


def test_a_sequenced_record_with_a_wrong_type_is_refused_not_taken_fast() -> None:
    raw = orjson.dumps({"v": 1, "message": {"message_id": "m", "conversation_id": "u:a:b",
                                            "seq": 3, "sender": ["a"], "type": "text",
                                            "body": None, "client_msg_id": "c", "ts": 9},
                        "recipients": ["a"]})
    [item] = parse_sequenced_items(raw)
    assert item.record is None and "message.sender" in (item.error or "")
