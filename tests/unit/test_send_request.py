"""The ingress's fast check of a send request (`parsed_send`) accepts exactly what the
model's strict validation (`SendRequest`) accepts, with the same fields, and leaves every
other request to the model, whose 400 names the field."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import BadRequest
from app.web.context import validated
from app.web.messages import SendRequest, parsed_send

CASES: list[dict[str, Any]] = [
    {"to": "bob", "client_msg_id": "c1"},
    {"to": "bob", "client_msg_id": "c1", "type": "image", "body": {"url": "x"}},
    {"conversation": "g:team", "client_msg_id": "c1", "body": [1, 2]},
    {"conversation": "u:alice:bob", "client_msg_id": "x" * 64},
    {"to": "bob", "client_msg_id": "c1", "extra": "ignored"},
    {"to": "bob", "client_msg_id": "x" * 65},
    {"to": "bob", "client_msg_id": ""},
    {"to": "bob", "client_msg_id": 5},
    {"to": "bob bob", "client_msg_id": "c1"},
    {"to": "bob\n", "client_msg_id": "c1"},
    {"to": None, "client_msg_id": "c1"},
    {"to": "bob", "conversation": None, "client_msg_id": "c1"},
    {"to": "bob", "conversation": "g:team", "client_msg_id": "c1"},
    {"conversation": "g:", "client_msg_id": "c1"},
    {"conversation": "x:team", "client_msg_id": "c1"},
    {"conversation": "g:team\n", "client_msg_id": "c1"},
    {"client_msg_id": "c1"},
    {"to": "bob", "client_msg_id": "c1", "type": ""},
    {"to": "bob", "client_msg_id": "c1", "type": "t" * 33},
    {"to": "bob", "client_msg_id": "c1", "type": None},
    {"to": "b" * 65, "client_msg_id": "c1"},
    {"to": "bob", "client_msg_id": "é" * 64},
]


def by_model(data: dict[str, Any]) -> tuple[Any, ...] | str:
    try:
        req = validated(SendRequest, data)
    except BadRequest as exc:
        return exc.code
    return (req.to, req.conversation, req.client_msg_id, req.type, req.body)


@pytest.mark.parametrize("data", CASES)
def test_the_fast_check_agrees_with_the_model(data: dict[str, Any]) -> None:
    try:
        fast: tuple[Any, ...] | str = tuple(parsed_send(data))
    except BadRequest as exc:
        fast = exc.code
    assert fast == by_model(data)
