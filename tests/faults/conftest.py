"""The faults suite's own stack (its own topics, groups, table, Redis db 10): its agents,
web processes and even the services are killed and restarted by the tests."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.support.stack import ROOT, Stack, free_port, launched, prepared_env

pytestmark = pytest.mark.services


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
