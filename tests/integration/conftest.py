"""Fixtures of the integration tests: a client of the real Redis (the test database) and
a fresh Kafka topic (on the `settings` of the test's module)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from app.devstack import local_settings
from app.settings import Settings
from app.stores.redis_client import RedisClient, create_redis
from tests.support.topics import new_topic


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[RedisClient]:
    client = create_redis(local_settings(redis_db=9))
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def topic(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A topic of two partitions, deleted after the test."""
    module = request.node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    async with new_topic(settings, f"imflowtest.{module}-{uuid.uuid4().hex[:8]}") as name:
        yield name
