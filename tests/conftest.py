"""Fixtures shared by every test: the real stack for `services` tests: every agent (two
processes of each on the cluster topology), two web processes (web_urls[0], [1]) and a
third with a send rate limit of 3/s ([2])."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from app.devstack import TOPOLOGY, Stack, free_port, launched, prepared_env


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    workdir = tmp_path_factory.mktemp("stack")
    # `make test` runs tests/e2e a second time with a tiny threshold, so every group test
    # also passes on read fan-out (groups of 3 or more members, switching as they grow).
    overrides = {}
    if threshold := os.environ.get("IMFLOW_TEST_READ_FANOUT_THRESHOLD"):
        overrides["IMFLOW_READ_FANOUT_THRESHOLD"] = threshold
    with prepared_env(workdir, redis_db=9, **overrides) as env:
        yield env, str(workdir)


@pytest_asyncio.fixture(scope="session")
async def stack(stack_env: tuple[dict[str, str], str]) -> AsyncIterator[Stack]:
    env, workdir = stack_env
    webs = [("web1", free_port(), None), ("web2", free_port(), None),
            ("web3-limited", free_port(), {"IMFLOW_SEND_RATE_PER_S": "3"})]
    copies = 2 if TOPOLOGY == "cluster" else 1  # Kafka spreads the partitions over them
    async with launched(env, workdir, webs, metrics=True, copies=copies) as stack:
        yield stack


@pytest_asyncio.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
