"""The rules the OpenAPI document states are the rules the server applies."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from app.models import CONVERSATION_PATTERN, ID_PATTERN, is_valid_id
from app.usecases.sync import CURSOR_PATTERN, SyncCursor
from app.web.groups import ChangeMembers
from app.web.messages import SendRequest
from app.web.reads import ReadMarker


def ecma(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern as a validator reads it: `$` is the end of the text."""
    return re.compile(pattern.removesuffix("$") + r"\Z")


@pytest.mark.parametrize("value", ["alice", "a.b-c_9", "x" * 64, "", "x" * 65, "a b",
                                   "alice\n", "ü"])
def test_ids_follow_the_documented_pattern(value: str) -> None:
    assert is_valid_id(value) == bool(ecma(ID_PATTERN).match(value))


@pytest.mark.parametrize("cursor", [
    "0", "1700000000000-0", "1700000000000-3~g:team=1700000000001-0", "0~g:a=1-0~g:b=2-5",
    "", "1-", "-1", "1700000000000-0\n", "99999999999999999999-0", "1-0~u:a:b=1-0",
    "1-0~g:team", "abc",
])
def test_a_cursor_parses_exactly_when_it_matches_the_documented_pattern(cursor: str) -> None:
    try:
        SyncCursor.parse(cursor)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed == bool(ecma(CURSOR_PATTERN).match(cursor)), cursor


def test_conversation_pattern() -> None:
    cid = ecma(CONVERSATION_PATTERN)
    assert cid.match("u:alice:bob") and cid.match("g:team")
    assert not cid.match("u:alice") and not cid.match("g:") and not cid.match("x:y")


@pytest.mark.parametrize("body", [
    {"to": None, "conversation": "g:x", "client_msg_id": "c"},  # null is not a string
    {"to": "bob", "client_msg_id": 5},
    {"to": 5, "client_msg_id": "c"},
])
def test_send_refuses_what_the_document_refuses(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SendRequest.model_validate(body)


def test_integers_are_json_integers() -> None:
    assert ReadMarker.model_validate({"seq": 3.0}).seq == 3  # JSON Schema: 3.0 is an integer
    for bad in (3.5, "3", True):
        with pytest.raises(ValidationError):
            ReadMarker.model_validate({"seq": bad})


def test_a_membership_change_names_someone_in_the_document() -> None:
    schema = ChangeMembers.model_json_schema()
    assert {"required": ["add"], "properties": {"add": {"minItems": 1}}} in schema["anyOf"]
