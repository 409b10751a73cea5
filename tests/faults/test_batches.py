"""Batch records under faults: a sink killed while it applies batch records (some of
their messages stored, their offsets not committed) redoes them exactly once; an
overloaded pipeline answers new messages at once (503 overloaded) instead of queueing
them, and delivers what it acked."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import cast

import orjson

from app.devstack import Stack, produce, wait_for
from app.models import direct_conversation, encode_batch, encode_send
from app.stores import keys
from app.stores.kafka import partition_of, topic_partitions
from app.stores.redis_client import RedisClient, create_redis
from tests.faults.conftest import CATCH_UP_S, pause, report, start_load
from tests.support.load import await_clean_audit

CONVERSATIONS = 400
PER_CONVERSATION = 20  # 8,000 messages, 16,000 inbox deliveries: several Lua calls
ATTEMPTS = 3  # a kill that lands before or after the batches proves nothing: try again


async def conversations_on_one_partition(stack: Stack, tag: str) -> list[tuple[str, str]]:
    """(sender, recipient) pairs whose chats all hash to inbound partition 0, so their
    messages can share batch records (a batch holds one partition's messages)."""
    count = len(await topic_partitions(stack.settings, stack.settings.topic_inbound))
    pairs = ((f"bs{i}-{tag}", f"br{i}-{tag}") for i in range(100 * CONVERSATIONS))
    return [(s, r) for s, r in pairs
            if partition_of(direct_conversation(s, r).encode(), count) == 0][:CONVERSATIONS]


async def inbox_counts(redis: RedisClient, users: list[str]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.xlen(keys.inbox(user))
        return sum(await pipe.execute())


async def kill_inbox_inside_a_batch(stack: Stack, redis: RedisClient) -> dict[str, int]:
    """Produce 8,000 messages as 16 inbound batch records of one partition, kill -9 the
    inbox agent as soon as the first reaches an inbox, restart it, wait for every inbox to
    be complete; what the inboxes held at the kill, and how many came out wrong."""
    tag = uuid.uuid4().hex[:6]
    pairs = await conversations_on_one_partition(stack, tag)
    recipients = [r for _, r in pairs]
    sends = [encode_send(direct_conversation(s, r), s, f"{tag}-{n}", body_json=b"%d" % n)
             for n in range(PER_CONVERSATION) for s, r in pairs]
    records = [encode_batch(sends[i:i + 500]) for i in range(0, len(sends), 500)]
    key = direct_conversation(*pairs[0])  # every pair hashes to this partition
    await produce(stack, stack.settings.topic_inbound, [(key, record) for record in records])

    async def started() -> int | None:
        return await inbox_counts(redis, recipients) or None
    await wait_for(started, within=60, what="the inbox agent to start the batch",
                   interval=0.005)
    stack.processes["inbox"].stop(signal.SIGKILL)
    at_kill = await inbox_counts(redis, recipients)  # a Lua call is all or nothing
    stack.start_agent("inbox")
    began = time.monotonic()

    async def complete() -> bool:
        return await inbox_counts(redis, recipients) >= len(sends)
    await wait_for(complete, within=CATCH_UP_S, what="every message in its inbox")
    caught_up_s = time.monotonic() - began
    wrong = 0
    for recipient in recipients:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                       await redis.xrange(keys.inbox(recipient)))
        seqs = [orjson.loads(fields[b"m"])["seq"] for _, fields in entries]
        wrong += seqs != list(range(1, PER_CONVERSATION + 1))
    outcome = {"messages": len(sends), "records": len(records),
               "in_inboxes_at_kill": at_kill, "wrong_inboxes": wrong,
               "catch_up_ms": round(1000 * caught_up_s)}
    print("BATCH-CRASH-REPORT " + orjson.dumps(outcome).decode())
    return outcome


async def test_an_inbox_agent_killed_while_applying_batch_records_redoes_them_exactly_once(
        fault_stack: Stack) -> None:
    redis = create_redis(fault_stack.settings)
    try:
        for _ in range(ATTEMPTS):
            outcome = await kill_inbox_inside_a_batch(fault_stack, redis)
            assert outcome["wrong_inboxes"] == 0, outcome  # each message once, in order
            if 0 < outcome["in_inboxes_at_kill"] < outcome["messages"]:
                return  # the kill split the batches' work, and they were redone exactly
        raise AssertionError(f"in {ATTEMPTS} attempts the kill never landed inside the batches")
    finally:
        await redis.aclose()


async def test_overload_is_answered_at_once_and_what_was_acked_is_delivered(
        fault_stack: Stack) -> None:
    """The inbox agent stalls (SIGSTOP): once its backlog passes the admission limit,
    new messages get 503 overloaded with Retry-After within 2 s; after it resumes they are
    accepted again, and every acked message is delivered exactly once."""
    traffic, result, load = await start_load(fault_stack, duration_s=40)
    await asyncio.sleep(3)
    limit_s = fault_stack.settings.admission_max_backlog_s
    refused_before = result.codes["overloaded"]
    stalled = asyncio.create_task(pause(fault_stack.processes["inbox"], 12))
    stalled_at = time.monotonic()

    async def shedding() -> tuple[float] | None:
        if result.codes["overloaded"] > refused_before:
            return (time.monotonic() - stalled_at,)
        return None
    (refused_after_s,) = await wait_for(shedding, within=limit_s + 8,
                                        what="503 overloaded while the inbox agent is stalled")
    await stalled
    resumed_at = time.monotonic()
    acked_at_resume = len(result.acked)

    async def accepting() -> bool:
        return len(result.acked) > acked_at_resume + 50
    await wait_for(accepting, within=30, what="new messages accepted after the stall")
    accepting_after_s = time.monotonic() - resumed_at
    await load
    load_end = time.monotonic()
    final, clean_at = await await_clean_audit(fault_stack.settings, traffic, result,
                                              within=CATCH_UP_S)
    report("inbox agent SIGSTOP 12 s (overload)", result, final, clean_at - load_end,
           overloaded_503=result.codes["overloaded"] - refused_before,
           first_refusal_after_stall_s=round(refused_after_s, 1),
           accepting_again_after_resume_s=round(accepting_after_s, 1),
           slowest_error_answer_s=round(result.slowest_error_s, 2))
    assert result.slowest_error_s < 2.0  # refused at once, not queued
    assert result.errors["503 without Retry-After"] == 0
    assert final.clean, final
