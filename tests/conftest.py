"""Fixtures shared by every test: the real stack for `services` tests: every agent, two
web processes (web_urls[0], [1]) and a third with a send rate limit of 3/s ([2])."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import happybase
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from app.settings import Settings
from tests.support.client import Client
from tests.support.stack import AGENTS, ROOT, Stack, free_port, new_run_id, session_env, wait_for

STARTUP_TIMEOUT_S = 120


def _probe_services() -> None:
    for kind in ("redis", "kafka", "hbase"):
        result = subprocess.run([str(ROOT / ".venv/bin/python"), "scripts/probe.py", kind],
                                cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{kind} is not running ({result.stderr.strip()}); "
                        "start the services with `make services`", pytrace=False)


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    _probe_services()
    workdir = tmp_path_factory.mktemp("stack")
    env = session_env(new_run_id(), workdir)
    subprocess.run([str(ROOT / ".venv/bin/imflow"), "init"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    yield env, workdir
    settings = Settings(_env_file=None, **{k[7:].lower(): v for k, v in env.items()
                                           if k.startswith("IMFLOW_")})
    _drop_session_data(settings)


def _drop_session_data(settings: Settings) -> None:
    conn = happybase.Connection(settings.hbase_host, port=settings.hbase_port)
    try:
        conn.delete_table(settings.hbase_table_name, disable=True)
    finally:
        conn.close()

    async def drop_topics() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics()
                     if t.startswith(("imflowtest.", settings.app_prefix))]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    asyncio.run(drop_topics())


@pytest_asyncio.fixture(scope="session")
async def stack(stack_env: tuple[dict[str, str], Path]) -> AsyncIterator[Stack]:
    env, workdir = stack_env
    settings = Settings(_env_file=None, **{k[7:].lower(): v for k, v in env.items()
                                           if k.startswith("IMFLOW_")})
    redis = aioredis.from_url(settings.redis_url)
    await redis.flushdb()
    await redis.aclose()
    stack = Stack(env=env, workdir=workdir, settings=settings)
    try:
        for agent in AGENTS:
            stack.start_agent(agent)
        stack.start_web("web1", free_port())
        stack.start_web("web2", free_port())
        stack.start_web("web3-limited", free_port(), env={"IMFLOW_SEND_RATE_PER_S": "3"})
        await _wait_until_flowing(stack)
        yield stack
    except BaseException:
        print(stack.describe_failure())
        raise
    finally:
        stack.stop_all()


async def _wait_until_flowing(stack: Stack) -> None:
    """Ready means: every web answers /readyz, and a message reaches inbox and history."""
    async with aiohttp.ClientSession() as session:
        for url in stack.web_urls:
            async def ready(url: str = url) -> bool:
                async with session.get(url + "/readyz") as resp:
                    return resp.status == 200
            await wait_for(ready, within=STARTUP_TIMEOUT_S, what=f"{url}/readyz")
        client = Client(session, stack.web_urls[0], stack.token("warmup-a"))
        reader = Client(session, stack.web_urls[0], stack.token("warmup-b"))
        await client.send(to="warmup-b", client_msg_id="warmup", body="warm-up")

        async def delivered() -> bool:
            inbox = await reader.sync(since=0)
            history = await reader.history("u:warmup-a:warmup-b")
            return bool(inbox["messages"]) and bool(history["messages"])

        await wait_for(delivered, within=STARTUP_TIMEOUT_S, what="the warm-up message")


@pytest_asyncio.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
