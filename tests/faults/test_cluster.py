"""Faults of the cluster topology (`IMFLOW_TOPOLOGY=cluster`: 3 Kafka brokers at
replication 3 / min ISR 2, a Redis Cluster of 3 masters with a replica each), under load,
with two processes of every agent: a broker, a Redis master or one process of each agent
killed, and partition leaders moving. Each test prints a FAULT-REPORT line like the
single-node faults, and nothing acked may be lost, doubled or out of order."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient

from app.devstack import AGENTS, ROOT, TOPOLOGY, Stack, wait_for
from app.stores import keys
from app.stores.redis_client import create_redis, is_cluster, node_of
from tests.faults.conftest import CATCH_UP_S, report, service, start_load
from tests.support.load import await_clean_audit

pytestmark = [pytest.mark.services,
              pytest.mark.skipif(TOPOLOGY != "cluster", reason="IMFLOW_TOPOLOGY=cluster only")]

RUN_DIR = Path(os.environ.get("IMFLOW_VAR_DIR", ROOT / ".var")) / "run"


def kill_9(name: str) -> int:
    """kill -9 the service process whose pid file is RUN_DIR/<name>.pid; its pid."""
    pid = int((RUN_DIR / f"{name}.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


async def leaders(stack: Stack, topic: str) -> dict[int, int]:
    """partition -> the node id of its leader (-1: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: p["leader"] for p in described["partitions"]}


@pytest_asyncio.fixture(scope="module")
async def doubled(fault_stack: Stack) -> AsyncIterator[Stack]:
    """The fault stack with a second process of every agent (Kafka spreads the partitions
    over both), stopped again after the module."""
    for agent in AGENTS:
        fault_stack.start_agent(agent, name=f"{agent}-2")
    traffic, result, load = await start_load(fault_stack, duration_s=5)
    await load
    final, _ = await await_clean_audit(fault_stack.settings, traffic, result, within=CATCH_UP_S)
    assert final.clean, final  # both processes of each agent joined and messages flow
    yield fault_stack
    for agent in AGENTS:
        fault_stack.processes.pop(f"{agent}-2").stop()


async def test_the_broker_leading_inbound_partition_0_killed_mid_load(doubled: Stack) -> None:
    topic = doubled.settings.topic_inbound
    traffic, result, load = await start_load(doubled, duration_s=40)
    await asyncio.sleep(8)
    victim = (await leaders(doubled, topic))[0]
    kill_9(f"kafka-{victim}")
    killed_at = time.monotonic()

    async def moved() -> int | None:
        leader = (await leaders(doubled, topic))[0]
        return leader if leader not in (victim, -1) else None
    new_leader = await wait_for(moved, within=30, what="a new leader of inbound partition 0")
    moved_s = time.monotonic() - killed_at
    await asyncio.sleep(max(0.0, 15 - (time.monotonic() - killed_at)))  # down for 15 s
    await service("kafka", "start")  # starts the killed node only
    back_at = time.monotonic()
    await load
    final, clean_at = await await_clean_audit(doubled.settings, traffic, result,
                                              within=CATCH_UP_S)
    report(f"kill -9 kafka-{victim} (leader of inbound partition 0)", result, final,
           clean_at - back_at, new_leader=new_leader, leader_moved_after_s=round(moved_s, 1),
           slowest_error_answer_s=round(result.slowest_error_s, 2))
    assert final.acked > 3000
    assert final.clean, final


async def test_a_redis_master_killed_mid_load(doubled: Stack) -> None:
    traffic, result, load = await start_load(doubled, duration_s=40)
    redis = create_redis(doubled.settings)
    assert is_cluster(redis)
    await redis.initialize()
    try:
        user = sorted(traffic.users)[0]
        master = node_of(redis, keys.inbox(user))
        await asyncio.sleep(8)
        kill_9(f"redis-{master.port}")
        killed_at = time.monotonic()

        async def promoted() -> str | None:
            await redis.nodes_manager.initialize()
            now = node_of(redis, keys.inbox(user))
            return now.name if now.name != master.name else None
        new_master = await wait_for(promoted, within=30, interval=0.5,
                                    what=f"a replica of {master.name} promoted")
        failover_s = time.monotonic() - killed_at
    finally:
        await redis.aclose()
    await asyncio.sleep(max(0.0, 15 - (time.monotonic() - killed_at)))
    await service("redis", "start")  # the old master comes back as a replica
    back_at = time.monotonic()
    await load
    final, clean_at = await await_clean_audit(doubled.settings, traffic, result,
                                              within=CATCH_UP_S)
    report(f"kill -9 redis master {master.name}", result, final, clean_at - back_at,
           new_master=new_master, failover_s=round(failover_s, 1))
    assert final.acked > 3000
    assert final.clean, final


async def test_one_process_of_each_agent_killed_mid_load(doubled: Stack) -> None:
    traffic, result, load = await start_load(doubled, duration_s=30)
    await asyncio.sleep(8)
    for agent in AGENTS:
        doubled.processes[agent].stop(signal.SIGKILL)
    killed_at = time.monotonic()
    await asyncio.sleep(10)  # the survivors take every partition over meanwhile
    for agent in AGENTS:
        doubled.start_agent(agent)
    await load
    final, clean_at = await await_clean_audit(doubled.settings, traffic, result,
                                              within=CATCH_UP_S)
    report("kill -9 one of two processes of each agent", result, final,
           clean_at - killed_at)
    assert final.acked > 3000
    assert final.clean, final


async def test_partition_leaders_move_under_load(doubled: Stack) -> None:
    """A rolling restart: each broker in turn stops cleanly (its partitions' leadership
    moves to the others) and comes back, while the load runs."""
    topic = doubled.settings.topic_messages
    traffic, result, load = await start_load(doubled, duration_s=60)
    moves = 0
    before = await leaders(doubled, topic)
    for node in (1, 2, 3):
        await asyncio.sleep(4)
        pid = int((RUN_DIR / f"kafka-{node}.pid").read_text())
        os.kill(pid, signal.SIGTERM)

        async def stopped(pid: int = pid) -> bool:
            return not _alive(pid)
        await wait_for(stopped, within=60, what=f"kafka-{node} to stop")
        after = await leaders(doubled, topic)
        moves += sum(1 for p, leader in after.items() if leader != before.get(p))
        before = after
        await service("kafka", "start")
    started_at = time.monotonic()
    await load
    final, clean_at = await await_clean_audit(doubled.settings, traffic, result,
                                              within=CATCH_UP_S)
    report("rolling restart of the 3 brokers (leaders move)", result, final,
           clean_at - started_at, leader_changes=moves)
    assert moves > 0
    assert final.acked > 5000
    assert final.clean, final


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie that init has not reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] not in ("Z", "X")
    except FileNotFoundError:
        return False
