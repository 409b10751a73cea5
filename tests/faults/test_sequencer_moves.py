"""The sequencer's partitions move while its processes live (the lost-acked-messages
issue): a paused only process, a second process joining and being killed, a paused
owner. Each test audits the sinks and `imflow.messages` itself (a seq given twice is
invisible to the sinks: each keeps the first), and prints a FAULT-REPORT line with both.

The fault schedule is fixed in load time; where a fault needs a process to own
partitions first, the test awaits that from the process's log.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from app.devstack import Process, Stack, wait_for
from tests.faults.conftest import CATCH_UP_S, RATE, pause, report, start_load
from tests.support.load import LoadResult, Traffic, audit_sequenced, await_clean_audit

SECOND = "sequencer-2"


def log_size(log: Path) -> int:
    """Where a process's next log lines start (a name's log is appended to across restarts
    and across the tests of the module)."""
    return log.stat().st_size if log.exists() else 0


def log_since(proc: Process, offset: int) -> str:
    with proc.log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def inbound_partitions(log: str, topic: str) -> set[int] | None:
    """The inbound partitions of the last assignment in `log` (aiokafka logs it as Faust's
    table, `| <topic> | {0-1, 3} |`), once the worker finished it (Faust logs "Worker
    ready" when recovery is done and the streams resume)."""
    last = log.rfind("Setting newly assigned partitions")
    if last < 0 or "Worker ready" not in log[last:]:
        return None
    table = log[last:log.find(" for group ", last)]
    found = re.search(rf"\| {re.escape(topic)} +\| \{{([-0-9, ]*)\}}", table)
    partitions: set[int] = set()
    for part in found.group(1).split(",") if found else ():
        first, _, end = part.strip().partition("-")
        partitions.update(range(int(first), int(end or first) + 1))
    return partitions


async def await_partitions(stack: Stack, proc: Process, since: int) -> set[int]:
    """Wait until `proc` (logging from offset `since`) owns and processes inbound partitions."""
    topic = stack.settings.topic_inbound

    async def owned() -> set[int] | None:
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.tail()}"
        return inbound_partitions(log_since(proc, since), topic) or None
    return await wait_for(owned, within=90, what=f"{proc.name} to own inbound partitions",
                          interval=0.2)


async def start_sequencer(stack: Stack, name: str) -> set[int]:
    """Start sequencer process `name`; return the inbound partitions it takes."""
    since = log_size(stack.workdir / f"{name}.log")
    proc = stack.start_agent("sequencer", name=name)
    return await await_partitions(stack, proc, since)


async def restart(stack: Stack, name: str) -> set[int]:
    """kill -9 the sequencer process `name`, start it again, await its partitions."""
    stack.processes[name].stop(signal.SIGKILL)
    return await start_sequencer(stack, name)


@asynccontextmanager
async def second_sequencer(stack: Stack) -> AsyncIterator[None]:
    """Leaves the stack as the next test expects it: "sequencer" alone, owning every
    partition (the second one leaves the group cleanly, so no session has to expire)."""
    since = log_size(stack.processes["sequencer"].log)
    try:
        yield
    finally:
        if SECOND in stack.processes:
            stack.processes.pop(SECOND).stop()
            first = stack.processes["sequencer"]
            if first.popen.poll() is None:
                topic, every = stack.settings.topic_inbound, set(range(stack.settings.partitions))

                async def alone() -> bool:
                    return inbound_partitions(log_since(first, since), topic) == every
                await wait_for(alone, within=90, what="sequencer to own every partition",
                               interval=0.2)


def session_events(stack: Stack, name: str, since: int) -> dict[str, int]:
    """Evidence that the partitions moved: session expiries and assignments logged."""
    log = log_since(stack.processes[name], since)
    return {"session_expired": log.count("Heartbeat session expired"),
            "assignments": log.count("Setting newly assigned partitions")}


async def finish(stack: Stack, fault: str, traffic: Traffic, result: LoadResult,
                 load: asyncio.Task[LoadResult], duration_s: float, **extra: object) -> None:
    """After the load: the sinks' audit, then the topic's, one report, both must be clean."""
    await load
    load_end = time.monotonic()
    final, clean_at = await await_clean_audit(stack.settings, traffic, result,
                                              within=CATCH_UP_S)
    topic = await audit_sequenced(stack.settings, traffic, result)
    report(fault, result, final, clean_at - load_end, topic=topic.as_dict(), **extra)
    assert final.acked > 0.7 * RATE * duration_s
    assert final.clean and topic.clean, (final, topic)


async def test_paused_single_sequencer(fault_stack: Stack) -> None:
    """A stall past the session timeout (GC, VM, SIGSTOP) makes the group drop the only
    sequencer; when it wakes, it rejoins and takes its own partitions again (a full
    rebalance and changelog replay inside a live process): nothing may be lost."""
    timeout_s = fault_stack.settings.agent_session_timeout_s
    duration_s = 50.0
    proc = fault_stack.processes["sequencer"]
    since = log_size(proc.log)
    traffic, result, load = await start_load(fault_stack, duration_s=duration_s)
    await asyncio.sleep(0.3 * duration_s)
    await pause(proc, timeout_s + 5)
    assert not load.done(), "the pause must end mid-load"
    await await_partitions(fault_stack, proc, since)
    await finish(fault_stack, f"only sequencer SIGSTOP {timeout_s + 5:.0f} s, SIGCONT",
                 traffic, result, load, duration_s,
                 **session_events(fault_stack, "sequencer", since))


async def test_rebalances_under_load(fault_stack: Stack) -> None:
    """Scaling out and crashes move partitions between live processes: each survivor is
    rebalanced while records are in flight, and a restarted process rebuilds its state
    from the changelog."""
    duration_s = 90.0
    first = fault_stack.processes["sequencer"]
    since = log_size(first.log)
    traffic, result, load = await start_load(fault_stack, duration_s=duration_s)
    async with second_sequencer(fault_stack):
        await asyncio.sleep(10)
        took = await start_sequencer(fault_stack, SECOND)
        retook = await restart(fault_stack, SECOND)
        assert not load.done(), "the load ended before the last fault"
        first_back = await restart(fault_stack, "sequencer")
        assert not load.done(), "the load ended before the first sequencer was back"
        await finish(fault_stack, "second sequencer started, kill -9 + restart; "
                     "then the first kill -9 + restart", traffic, result, load, duration_s,
                     second_took=sorted(took), second_retook=sorted(retook),
                     first_back_with=sorted(first_back),
                     **session_events(fault_stack, "sequencer", since))


async def test_paused_owner(fault_stack: Stack) -> None:
    """An owner stalled past the session timeout loses its partitions to the other process
    and wakes up still holding the work and state it had; whatever it does then must not
    corrupt the changelog the other's restart recovers from."""
    timeout_s = fault_stack.settings.agent_session_timeout_s
    duration_s = 90.0
    first = fault_stack.processes["sequencer"]
    since = log_size(first.log)
    traffic, result, load = await start_load(fault_stack, duration_s=duration_s)
    async with second_sequencer(fault_stack):
        await asyncio.sleep(5)
        took = await start_sequencer(fault_stack, SECOND)
        paused_at = log_size(first.log)
        await pause(first, timeout_s + 5)
        first_back = await await_partitions(fault_stack, first, paused_at)
        await asyncio.sleep(5)  # the load goes on with the resumed owner
        assert not load.done(), "the load ended before the kill"
        second_back = await restart(fault_stack, SECOND)
        assert not load.done(), "the load ended before the second sequencer was back"
        await finish(fault_stack, f"one of two sequencers SIGSTOP {timeout_s + 5:.0f} s, "
                     "SIGCONT; then the other kill -9 + restart", traffic, result, load,
                     duration_s, second_took=sorted(took), first_back_with=sorted(first_back),
                     second_back_with=sorted(second_back),
                     **session_events(fault_stack, "sequencer", since))
