"""`imflow replay` rebuilds wiped inboxes and history exactly, and is idempotent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import happybase
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.apiclient import Client
from app.devstack import Stack, produce, run_cli
from app.models import encode_batch, encode_send, parse_sequenced_items
from app.stores.history import conversation_prefix
from app.stores.kafka import partition_of, topic_partitions
from app.stores.redis_client import create_redis
from tests.e2e.conftest import await_history, await_inbox, direct, inbox_all

pytestmark = pytest.mark.services


async def run_replay(stack: Stack, *args: str) -> dict[str, Any]:
    return await run_cli(stack, "replay", "--quiet", *args)


def by_conversation(inbox: list[dict[str, Any]]) -> dict[str, list[tuple[int, str]]]:
    grouped: dict[str, list[tuple[int, str]]] = {}
    for m in inbox:
        grouped.setdefault(m["conversation_id"], []).append((m["seq"], m["message_id"]))
    return grouped


async def wipe_user(stack: Stack, user: str) -> None:
    redis = create_redis(stack.settings)
    try:
        keys = [k async for k in redis.scan_iter(match=f"*{{{user}}}*")]
        assert keys, f"no keys for {user}"
        await redis.delete(*keys)
    finally:
        await redis.aclose()


async def wipe_history(stack: Stack, cid: str, expect: int | None = None) -> None:
    conn = happybase.Connection(stack.settings.hbase_host, port=stack.settings.hbase_port)
    try:
        table = conn.table(stack.settings.hbase_table_name)
        rows = [key for key, _ in table.scan(row_prefix=conversation_prefix(cid).encode())]
        assert rows and (expect is None or len(rows) == expect), rows
        with table.batch() as batch:
            for key in rows:
                batch.delete(key)
    finally:
        conn.close()


async def test_replay_rebuilds_wiped_inboxes_exactly(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob, gid = names("alice", "bob", "team")
    sender = client_for(alice)
    await sender.ok("POST", "/v1/groups", expect=201, json={"group_id": gid, "members": [bob]})
    for i in range(30):
        await sender.send(to=bob, client_msg_id=f"d{i}", body=i)
        await sender.send(conversation=f"g:{gid}", client_msg_id=f"g{i}", body=i)
    before = {u: await await_inbox(client_for(u, "w1"), 61, f"{u}'s inbox") for u in (alice, bob)}

    for user in (alice, bob):
        await wipe_user(stack, user)
        assert await inbox_all(client_for(user, "w2")) == []

    first = await run_replay(stack, "--sinks", "inbox")
    assert first["inbox_written"] >= 122 and first["malformed"] == 0, str(first)
    for user in (alice, bob):
        rebuilt = await inbox_all(client_for(user, "w3"))
        # The same entries, each conversation in its order (G1 is per conversation; the
        # interleaving of conversations follows the order the replay read the partitions).
        assert by_conversation(rebuilt) == by_conversation(before[user])
        assert len(rebuilt) == len(before[user])
    members = await client_for(bob).ok("GET", f"/v1/groups/{gid}/members")
    assert members["members"] == sorted([alice, bob])  # the projection came back too

    second = await run_replay(stack, "--sinks", "inbox")
    assert second["read"] == first["read"]
    assert second["inbox_written"] == 0
    assert second["inbox_skipped_duplicates"] == second["inbox_deliveries"]


async def test_replay_rebuilds_history_and_respects_ranges(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    cid = direct(alice, bob)
    for i in range(12):
        await client_for(alice).send(to=bob, client_msg_id=f"h{i}", body=i)
    before = await await_history(client_for(bob), cid, 12)

    await wipe_history(stack, cid, expect=12)
    assert (await client_for(bob).history(cid))["messages"] == []

    empty = await run_replay(stack, "--sinks", "history", "--from-time", "2000-01-01T00:00:00",
                       "--to-time", "2000-01-02T00:00:00")
    assert empty["read"] == 0
    since = str(before[-1]["ts"] - 1)
    summary = await run_replay(stack, "--sinks", "history", "--from-time", since)
    assert summary["history_rows_written"] >= 12
    assert await await_history(client_for(bob), cid, 12) == before


async def messages_record_of(stack: Stack, cid: str, message_ids: set[str],
                             since_ms: int) -> tuple[int, int, list[str]]:
    """(partition, offset, message ids in index order) of the imflow.messages record that
    carries all of `message_ids`."""
    topic = stack.settings.topic_messages
    partition = partition_of(cid.encode(), len(await topic_partitions(stack.settings, topic)))
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.offsets_for_times({tp: since_ms}))[tp]
        assert start is not None, "nothing sequenced since the test began"
        consumer.seek(tp, start.offset)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                ids = [item.record.message.message_id
                       for item in parse_sequenced_items(record.value)
                       if item.record is not None]
                if message_ids <= set(ids):
                    return partition, record.offset, ids
    finally:
        await consumer.stop()
    raise AssertionError(f"no single record of {topic}[{partition}] holds {message_ids}")


async def test_replay_can_start_in_the_middle_of_a_batch_record(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    cid = direct(alice, bob)
    began_ms = int(time.time() * 1000)
    # One inbound batch record: the sequencer sequences it in one transaction, so its six
    # messages leave as one imflow.messages batch record.
    await produce(stack, stack.settings.topic_inbound, [(cid, encode_batch([
        encode_send(cid, alice, f"mid{i}", body_json=b"%d" % i) for i in range(6)]))])
    before = await await_history(client_for(bob), cid, 6)
    ids = {m["message_id"] for m in before}
    partition, offset, order = await messages_record_of(stack, cid, ids, began_ms)
    by_seq = {m["seq"]: m["message_id"] for m in before}
    start_index = order.index(by_seq[4])

    await wipe_history(stack, cid)
    summary = await run_replay(stack, "--sinks", "history", "--partitions", str(partition),
                               "--from-offset", str(offset), "--from-index", str(start_index),
                               "--to-offset", str(offset + 1))
    assert summary["records"] == 1 and summary["read"] == len(order) - start_index
    rebuilt = (await client_for(bob).history(cid))["messages"]
    assert [m["seq"] for m in rebuilt] == [6, 5, 4]  # from the (offset, index) on, no earlier
    assert rebuilt == [m for m in before if m["seq"] >= 4]
