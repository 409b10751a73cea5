"""Capacity of each agent alone, vs. an empty Faust agent (the raw limit), on a backlog.

    .venv/bin/python -m bench.stages --records 30000      (after `make services`)

A backlog of one-to-one sends is written straight to `imflow.inbound`; then, one at a
time with nothing else of imflow running, the sequencer turns it into `imflow.messages`,
and the inbox, history and push agents and an empty Faust agent (bench/empty_agent.py)
each consume all of `imflow.messages`. An agent's rate is the records (offsets: batch
records and transaction markers) its consumer group committed between its first and its
last commit, over that time (start-up not counted), and the messages they hold. Prints
one JSON line; CPU milliseconds per message come from the process's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from app.devstack import FAUST_WORKER, Stack, prepared_env, settings_from_env
from app.models import direct_conversation, encode_send, message_id_for, now_ms
from app.stores.kafka import end_offsets
from app.usecases.sinks import SINKS

POLL_S = 0.2
BODY = orjson.dumps({"text": "x" * 64})
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def fill_inbound(stack: Stack, records: int, pairs: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap, acks="all",
                                linger_ms=5)
    await producer.start()
    try:
        for n in range(records):
            sender, to = f"s{n % pairs}", f"r{n % pairs}"
            cid = direct_conversation(sender, to)
            value = encode_send(cid, sender, f"c{n}", body_json=BODY,
                                message_id=message_id_for(sender, f"c{n}"), accepted_at=now_ms())
            await producer.send(stack.settings.topic_inbound, value, key=cid.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and
               meta.offset > 0)


async def drain(stack: Stack, name: str, module: str, topic: str, total: int,
                messages: int) -> dict[str, Any]:
    """Run one agent until its group committed `total` offsets of `topic` (which hold
    `messages` messages: batch records hold several, and transaction markers none)."""
    group = f"{stack.settings.app_prefix}-{name}"
    # not "-l warn": Faust's worker then sets the root logger to DEBUG for its spinner,
    # and every debug call in aiokafka builds a log record
    proc = stack.start(name, *FAUST_WORKER, module, "worker", "--without-web",
                       "-l", "info")
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    await admin.start()
    pid = proc.popen.pid
    try:
        first: tuple[float, int, float] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.popen.poll() is None:
            done = await committed(admin, group, topic)
            now = time.monotonic()
            if first is None and done > 0:
                first = (now, done, cpu_seconds(pid))
            if done >= total:
                assert first is not None
                cpu = cpu_seconds(pid) - first[2]
                records = done - first[1]
                took = now - first[0]
                measured = messages * records / total
                return {"records_per_s": round(records / took, 1) if took > 0 else None,
                        "messages_per_s": round(measured / took, 1) if took > 0 else None,
                        "cpu_ms_per_message": round(1000 * cpu / measured, 3)
                        if measured else None,
                        "measured_records": records}
            await asyncio.sleep(POLL_S)
        raise TimeoutError(f"{name} did not consume {total} records:\n{proc.tail()}")
    finally:
        await admin.close()
        proc.stop()


async def run(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    stack = Stack(env=env, workdir=workdir, settings=settings_from_env(env))
    s = stack.settings
    await fill_inbound(stack, args.records, args.pairs)
    results: dict[str, Any] = {"records": args.records}
    try:
        results["sequencer"] = await drain(stack, "sequencer", "agents.sequencer",
                                           s.topic_inbound, args.records, args.records)
        # a partition's last offset can be a transaction marker no consumer commits past
        sequenced = sum((await end_offsets(s, s.topic_messages)).values()) - s.partitions
        for name in ("empty-agent", *SINKS):
            module = "bench.empty_agent" if name == "empty-agent" else f"agents.{name}"
            results[name] = await drain(stack, name, module, s.topic_messages, sequenced,
                                        args.records)
    except BaseException:
        print(stack.describe_failure())
        raise
    finally:
        stack.stop_all()
    empty = results["empty-agent"]["records_per_s"]
    for name in SINKS:  # the same records as the empty agent's
        results[name]["ratio_vs_empty_agent"] = round(results[name]["records_per_s"] / empty, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="imflow-stages-"))
    try:
        with prepared_env(workdir, redis_db=12) as env:
            print(orjson.dumps(asyncio.run(run(args, env, workdir))).decode())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
