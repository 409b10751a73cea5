"""Fixtures of the integration tests: a client of the real Redis (the test database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from app.devstack import local_settings
from app.stores.redis_client import RedisClient, create_redis


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[RedisClient]:
    client = create_redis(local_settings(redis_db=9))
    yield client
    await client.aclose()
