"""Redis key names: each carries its owner's hash tag (one Redis Cluster slot per user or
conversation), and a push channel's user is read back from its name."""

from __future__ import annotations

import inspect
import re

import pytest

from app.stores import keys

NAMED = sorted(name for name, fn in inspect.getmembers(keys, inspect.isfunction)
               if not name.startswith("_") and name != "user_of_push_channel")


@pytest.mark.parametrize("name", NAMED)
def test_every_key_has_its_first_argument_as_hash_tag(name: str) -> None:
    fn = getattr(keys, name)
    params = list(inspect.signature(fn).parameters)
    args = {"user": "al.ice", "cid": "g:team", "event_id": "e1", "window": 17,
            "node_id": "n1"}
    key = fn(*(args[p] for p in params))
    tags = re.findall(r"\{([^}]*)\}", key)
    assert tags == [args[params[0]]], key


def test_a_push_channel_names_its_user() -> None:
    assert keys.user_of_push_channel(keys.push_channel("b-o_b.1")) == "b-o_b.1"
    with pytest.raises(ValueError):
        keys.user_of_push_channel(keys.node_channel("n1"))
