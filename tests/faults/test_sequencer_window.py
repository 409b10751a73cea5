"""A day's dedup window (a million messages by default; `make soak` runs five million):
the sequencer's memory stays bounded, and after `kill -9` new messages flow again within
30 s, both when the process restarts on its own files and when a standby takes over.

The window is filled by producing straight to `imflow.inbound` with only the sequencer
running; the sinks then start at the end of `imflow.messages` (what is measured is the
sequencer, not a million inbox writes). Prints a WINDOW-REPORT line with the figures.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from app.apiclient import Client
from app.devstack import (
    Process,
    Stack,
    free_port,
    launched,
    prepared_env,
    wait_for,
)
from app.models import direct_conversation
from app.stores.kafka import key_partitioner
from app.usecases.sinks import SINKS
from tests.support.window import (
    committed,
    dir_bytes,
    end_offsets,
    fill_inbound,
    rss_mb,
    skip_to_end,
)

WINDOW = int(os.environ.get("IMFLOW_TEST_WINDOW_MESSAGES", "1000000"))
# Filling the window runs at a few thousand messages a second on two cores.
pytestmark = [pytest.mark.services, pytest.mark.timeout(300 + WINDOW // 1000)]
RSS_LIMIT_MB = 250
FLOWING_WITHIN_S = 30
READY = re.compile(r"generation (\d+): sequencing partitions \[([0-9, ]*)\]")


@pytest.fixture(scope="module")
def window_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    workdir = tmp_path_factory.mktemp("window")
    with prepared_env(workdir, redis_db=11) as env:
        yield env, str(workdir)


@pytest_asyncio.fixture(scope="module")
async def window_stack(window_env: tuple[dict[str, str], str]) -> AsyncIterator[Stack]:
    env, workdir = window_env
    async with launched(env, workdir, [("web1", free_port(), None)], agents=()) as stack:
        yield stack


def log_size(proc: Process) -> int:
    return proc.log.stat().st_size if proc.log.exists() else 0


async def await_sequencing(proc: Process, since: int, within: float) -> set[int]:
    """The partitions `proc` sequences once it logs that they are fenced and caught up."""
    async def ready() -> set[int] | None:
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.tail()}"
        with proc.log.open("rb") as f:
            f.seek(since)
            found = READY.findall(f.read().decode(errors="replace"))
        if not found:
            return None
        return {int(p) for p in found[-1][1].split(",") if p.strip()} or None
    return await wait_for(ready, within=within, what=f"{proc.name} sequencing", interval=0.2)


async def await_sequenced(stack: Stack, ends: dict[int, int], within: float) -> None:
    group = f"{stack.settings.app_prefix}-sequencer"

    async def done() -> bool:
        offsets = await committed(stack.settings, group, stack.settings.topic_inbound)
        return all(offsets.get(p, -1) >= end for p, end in ends.items())
    await wait_for(done, within=within, what="the window to be sequenced", interval=1.0)


def pair_on(partitions: set[int], all_partitions: list[int], tag: str) -> tuple[str, str]:
    """Two new users whose conversation lands on one of `partitions`."""
    for i in range(10_000):
        a, b = f"pa{i}-{tag}", f"pb{i}-{tag}"
        key = direct_conversation(a, b).encode()
        if key_partitioner(key, all_partitions, all_partitions) in partitions:
            return a, b
    raise AssertionError(f"no conversation on partitions {partitions}")


async def first_delivery_after(stack: Stack, session: aiohttp.ClientSession, since: float,
                               a: str, b: str) -> float:
    """Send a message from a to b now (retrying while the ingress refuses) and return the
    seconds from `since` until it is in b's inbox."""
    sender = Client(session, stack.web_urls[0], stack.token(a))
    reader = Client(session, stack.web_urls[0], stack.token(b))

    async def sent() -> bool:
        await sender.send(to=b, client_msg_id="probe", body="probe")
        return True
    await wait_for(sent, within=FLOWING_WITHIN_S, what="the probe to be accepted")

    async def delivered() -> bool:
        return bool((await reader.sync(since=0))["messages"])
    await wait_for(delivered, within=3 * FLOWING_WITHIN_S, what="the probe to be delivered")
    return round(time.monotonic() - since, 2)


async def test_a_full_window_restarts_in_seconds_in_bounded_memory(
        window_stack: Stack) -> None:
    stack = window_stack
    settings = stack.settings
    tag = uuid.uuid4().hex[:6]
    all_partitions = sorted(await end_offsets(settings, settings.topic_inbound))
    figures: dict[str, Any] = {"window_messages": WINDOW}
    first = stack.start_agent("sequencer")
    await await_sequencing(first, 0, within=120)
    figures["rss_mb_empty"] = round(rss_mb(first.popen.pid), 1)

    began = time.monotonic()
    ends = await fill_inbound(settings, WINDOW, tag=tag)
    figures["fill_s"] = round(time.monotonic() - began, 1)
    await await_sequenced(stack, ends, within=120 + WINDOW / 1000)
    figures["sequenced_per_s"] = round(WINDOW / (time.monotonic() - began))
    figures["rss_mb_full"] = round(rss_mb(first.popen.pid), 1)
    state_dir = stack.workdir / "faust" / f"{settings.app_prefix}-sequencer-state"
    figures["disk_bytes_per_message"] = round(dir_bytes(state_dir) / WINDOW, 1)

    for sink in SINKS:
        await skip_to_end(settings, f"{settings.app_prefix}-{sink}", settings.topic_messages)
        stack.start_agent(sink)
    async with aiohttp.ClientSession() as session:
        warm_a, warm_b = pair_on(set(all_partitions), all_partitions, f"w{tag}")
        await first_delivery_after(stack, session, time.monotonic(), warm_a, warm_b)

        # 1. kill -9 and restart on the same files.
        first.stop(signal.SIGKILL)
        killed = time.monotonic()
        since = log_size(first)
        first = stack.start_agent("sequencer")
        a, b = pair_on(set(all_partitions), all_partitions, f"r{tag}")
        figures["restart_kill_to_delivered_s"] = await first_delivery_after(
            stack, session, killed, a, b)
        await await_sequencing(first, since, within=FLOWING_WITHIN_S)
        figures["rss_mb_after_restart"] = round(rss_mb(first.popen.pid), 1)

        # 2. A second process takes half the partitions (from the changelog: it has no
        # files), the first keeps a standby copy of them; kill -9 the second.
        since_first = log_size(first)
        began = time.monotonic()
        second = stack.start_agent("sequencer", name="sequencer-2")
        taken = await await_sequencing(second, 0, within=120)
        figures["second_process_ready_s"] = round(time.monotonic() - began, 1)
        await await_sequencing(first, since_first, within=120)
        figures["rss_mb_second"] = round(rss_mb(second.popen.pid), 1)
        second.stop(signal.SIGKILL)
        killed = time.monotonic()
        a, b = pair_on(taken, all_partitions, f"s{tag}")
        figures["standby_kill_to_delivered_s"] = await first_delivery_after(
            stack, session, killed, a, b)
        figures["rss_mb_after_takeover"] = round(rss_mb(first.popen.pid), 1)

    print("WINDOW-REPORT " + orjson.dumps(figures).decode())
    for key, value in figures.items():
        if key.startswith("rss_mb"):
            assert value <= RSS_LIMIT_MB, figures
    assert figures["restart_kill_to_delivered_s"] <= FLOWING_WITHIN_S, figures
    assert figures["standby_kill_to_delivered_s"] <= FLOWING_WITHIN_S, figures
