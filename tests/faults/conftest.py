"""The faults suite's own stack (its own topics, groups, table, Redis db 10): its agents,
web processes and even the services are killed and restarted by the tests."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from app.devstack import ROOT, Process, Stack, free_port, launched, prepared_env
from tests.support.load import Audit, LoadResult, Traffic, create_groups, run_load

pytestmark = pytest.mark.services

RATE = 150.0  # msg/s offered in total, steady, from 46 senders
CATCH_UP_S = 180.0


def report(fault: str, result: LoadResult, final: Audit, catch_up_s: float, **extra: Any) -> None:
    """One FAULT-REPORT line per test (shared by the faults modules), greppable in -rP."""
    line = {"fault": fault, **final.as_dict(), "attempts": result.attempts,
            "retries": result.retries, "errors": dict(result.errors),
            "catch_up_s": round(catch_up_s, 1), **extra}
    print("FAULT-REPORT " + orjson.dumps(line).decode())


async def start_load(stack: Stack, duration_s: float) -> tuple[Traffic, LoadResult,
                                                              asyncio.Task[LoadResult]]:
    """20 direct pairs and 3 groups at RATE msg/s for `duration_s`, running in a task."""
    traffic = Traffic.build(uuid.uuid4().hex[:6], pairs=20, groups=3, group_size=5)
    async with aiohttp.ClientSession() as session:
        await create_groups(stack, session, traffic)
    result = LoadResult()
    task = asyncio.create_task(run_load(stack, traffic, rate=RATE, duration_s=duration_s,
                                        result=result))
    return traffic, result, task


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    workdir = tmp_path_factory.mktemp("faults")
    with prepared_env(workdir, redis_db=10) as env:
        yield env, str(workdir)


@pytest_asyncio.fixture(scope="module")
async def fault_stack(fault_env: tuple[dict[str, str], str]) -> AsyncIterator[Stack]:
    env, workdir = fault_env
    async with launched(env, workdir, [("web1", free_port(), None),
                                       ("web2", free_port(), None)]) as stack:
        yield stack


async def service(name: str, action: str) -> None:
    """Stop or start one of the project's services with its own script (off the loop)."""
    def run() -> None:
        result = subprocess.run(["bash", f"scripts/{name}.sh", action], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{name} {action}: {result.stderr[-2000:]}"
    await asyncio.to_thread(run)


async def pause(proc: Process, seconds: float) -> None:
    """SIGSTOP `proc` for `seconds`; SIGCONT it even if the test fails or is cancelled
    meanwhile, so no stopped process outlives the test."""
    proc.popen.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        proc.popen.send_signal(signal.SIGCONT)
