"""Grouping a batch's work by Redis Cluster slot (app/stores/redis_client.by_slot)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.crc import key_slot

from app.stores import keys
from app.stores.redis_client import by_slot


def test_on_a_cluster_each_group_is_one_slot_in_the_given_order() -> None:
    client = aioredis.RedisCluster(host="127.0.0.1", port=1)  # never connects here
    users = [f"user{i}" for i in range(200)]
    groups = by_slot(client, users, keys.inbox)
    assert sorted(u for g in groups for u in g) == sorted(users)
    for group in groups:
        assert len({key_slot(keys.inbox(u).encode()) for u in group}) == 1
        assert group == sorted(group, key=users.index)  # order kept inside a slot
    assert len(groups) == len({key_slot(keys.inbox(u).encode()) for u in users})


def test_a_user_and_their_keys_share_one_slot() -> None:
    client = aioredis.RedisCluster(host="127.0.0.1", port=1)
    pairs = [(k, "alice") for k in (keys.inbox, keys.applied, keys.spans, keys.presence)]
    assert len(by_slot(client, pairs, lambda pair: pair[0](pair[1]))) == 1


def test_on_one_server_everything_is_one_group() -> None:
    client = aioredis.Redis()
    assert by_slot(client, ["a", "b", "c"], keys.inbox) == [["a", "b", "c"]]
    assert by_slot(client, [], keys.inbox) == []
